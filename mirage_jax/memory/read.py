"""Reading the memory: z-buffer splat of all stored points into target cameras at latent resolution.

``u = round(x·fx/z + cx)``, ``v = round(y·fy/z + cy)`` with ``jnp.round`` (round half to even, as the
official ``torch.round``); integer cell centres; a point counts if it is valid, ``z > near`` and its cell is
inside the grid. The nearest point wins; exact depth ties go to the lowest ``write_id`` (the oldest point).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp

from mirage_jax import geometry
from mirage_jax.memory.state import LatentMemory
from mirage_jax.memory.validate import check_cameras, check_hw, check_near, check_not_consumed, check_views_fit
from mirage_jax.memory.zbuffer import zbuffer

# Near plane (metres): points with camera depth z <= NEAR are not drawn (the official uses z > 0, which lets
# points at z ≈ 1e-6 through with huge, ill-conditioned projections).
NEAR = 1e-3


def project_cells(points, valid, intrinsics, cam2world, hw: Sequence[int], near: float = NEAR):
    """Cells of ``points [N, 3]`` in ``T`` cameras: ``(cell [T, N] int32 = v·w + u, or h·w if not drawn, z [T, N])``."""
    h, w = hw
    uv, z = geometry.project(points[None], intrinsics, cam2world)
    u = jnp.round(uv[..., 0])
    v = jnp.round(uv[..., 1])
    drawn = valid & (z > near) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    ui = jnp.clip(u, 0, w - 1).astype(jnp.int32)
    vi = jnp.clip(v, 0, h - 1).astype(jnp.int32)
    return jnp.where(drawn, vi * w + ui, h * w), z


def splat_views(cell, z, key, num_views: int, hw: Sequence[int]):
    """Z-buffers ``T`` views at once: ``cell, z [T, N]``, ``key [N]`` -> ``(zmin, kmin, winner)`` each ``[T, h·w]``."""
    n_cells = hw[0] * hw[1]
    offsets = jnp.arange(num_views, dtype=jnp.int32)[:, None] * n_cells
    flat = jnp.where(cell < n_cells, cell + offsets, num_views * n_cells).reshape(-1)
    keys = jnp.broadcast_to(key, cell.shape).reshape(-1)
    zmin, kmin, winner = zbuffer(flat, z.reshape(-1), keys, num_views * n_cells)
    n_points = cell.shape[1]
    winner = jnp.where(winner >= 0, winner % n_points, -1)  # index into the points of one view
    shape = (num_views, n_cells)
    return zmin.reshape(shape), kmin.reshape(shape), winner.reshape(shape)


# Two compiled stages: compiled together, XLA:CPU fuses the projection into every scatter and gather of the
# z-buffer and recomputes it there (measured ~2x slower end to end); inside a caller's jit they are inlined.
_project = jax.jit(project_cells, static_argnames=("hw", "near"))


@partial(jax.jit, static_argnames=("hw",))
def _splat(mem: LatentMemory, cell, z, hw):
    t = cell.shape[0]
    _, _, winner = splat_views(cell, z, mem.write_id, t, hw)
    hit = winner >= 0
    feats = jnp.where(hit[..., None], mem.features[jnp.maximum(winner, 0)], 0)
    return feats.reshape(t, hw[0], hw[1], -1), hit.reshape(t, hw[0], hw[1])


def _read(mem: LatentMemory, intrinsics, cam2world, hw, near):
    cell, z = _project(mem.points, mem.valid, intrinsics, cam2world, hw=hw, near=near)
    return _splat(mem, cell, z, hw)


def read(mem: LatentMemory, intrinsics, cam2world, hw: Sequence[int], *, near: float = NEAR):
    """Splats the memory into ``T`` cameras.

    Args:
      intrinsics: ``[T, 3, 3]`` at the output resolution ``hw``.
      cam2world: ``[T, 4, 4]`` OpenCV camera-to-world poses.
      hw: ``(h, w)`` output grid.
      near: near plane (metres, finite, > 0): points at camera depth ``z <= near`` are not drawn.
    Returns:
      ``(feats [T, h, w, C] in the memory's dtype, 0 where empty, hit [T, h, w] bool)``.
    """
    check_not_consumed(mem)
    hw, near = check_hw(hw), check_near(near)
    intrinsics, cam2world = check_cameras(intrinsics, cam2world)
    check_views_fit(intrinsics.shape[0], mem.capacity)
    return _read(mem, intrinsics, cam2world, hw, near)
