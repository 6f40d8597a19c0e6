"""Writing to the memory: lift latent cells to world points and insert them under the capacity policy.

Capacity policy (bounded, deterministic):

1. One frame per voxel, the latest: space is cut into de-duplication voxels (edge ``mem.voxel_size``). Each
   voxel holds the points of exactly one frame, the most recent frame that saw it: a write's valid cells
   whose voxel is seen again by a later frame of the same write are dropped, and every stored point in a
   voxel that this write touches is replaced. A frame's own cells are never merged, so a view keeps its
   full resolution, and a revisit refreshes a surface instead of duplicating it. Voxels are matched through
   two hash tables with exact verification (``capacity.voxel_tables``): never a wrong match; a rare miss
   (both slots of a voxel taken by other voxels of the write; 8 slots per cell) only leaves an extra point.
2. When the new points do not fit, the oldest points (lowest ``write_id``) are evicted first; if one write
   alone has more such cells than the capacity, only its newest ``capacity`` cells are kept (frame order,
   then row-major cell order).

So ``num_points <= capacity`` always, and a static scene revisited forever needs about (its surface area /
cell footprint) points, not (number of writes × cells). New points fill empty slots in slot order; slot
order never affects ``read``. Trade-off: a distant or grazing view that touches a voxel replaces denser
points seen earlier from closer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax import geometry
from mirage_jax.memory import capacity
from mirage_jax.memory.downsample import MODES, downsample_depth
from mirage_jax.memory.state import LatentMemory
from mirage_jax.memory.validate import (
    NON_FINITE_LATENTS,
    all_finite,
    check_cameras,
    check_not_consumed,
    check_write_inputs,
    is_concrete,
)

_MAX_WRITE_ID = 2**31 - 1


def lift_cells(depths, intrinsics, cam2world, keep, hw, mode: str):
    """The cells of a ``hw = (h, w)`` latent grid as world points: ``(points [T·h·w, 3], ok [T·h·w])``.

    Cells in (frame, row, column) order. ``depths [T, Hd, Wd]`` (and ``keep``) are brought to the grid
    (``downsample_depth``); ``intrinsics`` are at the depth resolution and are scaled to the grid (fx, cx by
    w/W; fy, cy by h/H); cell ``(u, v)`` is back-projected from its integer centre.
    """
    depth, ok = downsample_depth(depths, keep, tuple(hw), mode)
    k_latent = geometry.scale_intrinsics(intrinsics, depths.shape[1:], tuple(hw))
    points = geometry.backproject_to_world(depth, k_latent, cam2world).reshape(-1, 3)
    return points, ok.reshape(-1) & jnp.isfinite(points).all(axis=-1)


def lift(latents, depths, intrinsics, cam2world, keep, mode: str):
    """Latent cells as world points: ``(points [M, 3], features [M, C], ok [M], frame [M] (0..T-1))``,
    ``M = T·h·w`` (see ``lift_cells``)."""
    t, h, w, c = latents.shape
    points, ok = lift_cells(depths, intrinsics, cam2world, keep, (h, w), mode)
    frame = jnp.repeat(jnp.arange(t, dtype=jnp.int32), h * w)
    return points, latents.reshape(-1, c), ok, frame


def plan_insert(mem: LatentMemory, new_keys, ok, frame, total_alive=jnp.sum, count=capacity.count_below,
                id_span=capacity.alive_id_span, total_capacity: int | None = None):
    """Decides which old points survive and which new cells (voxel keys ``new_keys [M, 3]``) are taken.

    Returns ``(alive [N], take [M], take_rank [M] (rank among taken cells), write_id [M], n_new [])``.

    ``alive`` marks the old points that survive de-duplication and eviction. ``total_alive``, ``count`` and
    ``id_span`` reduce over the point axis; a sharded caller passes versions that also reduce over shards,
    and the ``total_capacity`` of all shards.
    """
    n = mem.capacity if total_capacity is None else total_capacity
    tables, ok = capacity.voxel_tables(new_keys, ok, frame)
    rank = capacity.prefix_count(ok) - 1
    n_new = jnp.sum(ok, dtype=jnp.int32)
    alive = mem.valid & ~capacity.voxel_member(capacity.voxel_keys(mem.points, mem.voxel_size), new_keys, tables)
    n_take = jnp.minimum(n_new, n)
    take = ok & (rank >= n_new - n_take)
    alive_total = total_alive(alive.astype(jnp.int32))
    excess = alive_total + n_take - n
    threshold = jax.lax.cond(
        excess > 0,
        lambda: capacity.oldest_threshold(alive, mem.write_id, excess, *id_span(alive, mem.write_id), alive_total,
                                          count),
        lambda: jnp.zeros((), jnp.int32),
    )
    alive = alive & (mem.write_id >= threshold)
    return alive, take, rank - (n_new - n_take), mem.next_write_id + rank, n_new


def _apply(mem: LatentMemory, alive, slot, points, features, write_id, frame, n_new, n_frames) -> LatentMemory:
    """Stores the new points at ``slot [M]`` (out-of-range = dropped) and clears dead slots' bookkeeping."""
    valid = alive.at[slot].set(True, mode="drop")
    return LatentMemory(
        points=mem.points.at[slot].set(points, mode="drop"),
        features=mem.features.at[slot].set(features.astype(mem.features.dtype), mode="drop"),
        valid=valid,
        write_id=jnp.where(alive, mem.write_id, -1).at[slot].set(write_id, mode="drop"),
        frame_id=jnp.where(alive, mem.frame_id, -1).at[slot].set(mem.next_frame_id + frame, mode="drop"),
        next_write_id=mem.next_write_id + n_new,
        next_frame_id=mem.next_frame_id + n_frames,
        voxel_size=mem.voxel_size,
    )


def _insert(mem: LatentMemory, points, keys, latents, ok, frame) -> LatentMemory:
    """Inserts the lifted cells ``points [M, 3]`` (voxel ``keys [M, 3]``), ``ok [M]``, ``frame [M]`` with
    features ``latents [T,h,w,C]``."""
    alive, take, take_rank, write_id, n_new = plan_insert(mem, keys, ok, frame)
    table = capacity.free_slot_table(~alive, points.shape[0])
    slot = jnp.where(take, table[jnp.clip(take_rank, 0, points.shape[0] - 1)], mem.capacity)
    features = latents.reshape(points.shape[0], latents.shape[-1])
    return _apply(mem, alive, slot, points, features, write_id, frame, n_new, latents.shape[0])


def _lift_checked(latents, depths, intrinsics, cam2world, keep, next_write_id, mode: str, voxel_size: float):
    """``lift`` without the features (the insert reads the latents directly: returning them would copy them)
    but with the cells' voxel keys (the insert's gathers then read them instead of recomputing them per
    gathered element: measured 1.6x faster de-duplication tables), and the write's faults ``[4]`` bool:
    non-finite latents, suspect intrinsics, suspect poses (``geometry.camera_faults``), write ids that would overflow.
    Every value check rides on the lift's compiled pass and comes back in one small transfer (host checks of
    device arrays cost as much as a small write)."""
    points, _, ok, frame = lift(latents, depths, intrinsics, cam2world, keep, mode)
    ids_exhausted = _write_ids_exhausted(next_write_id, ok.shape[0])
    faults = jnp.concatenate([(~all_finite(latents))[None], geometry.camera_faults(intrinsics, cam2world),
                              ids_exhausted[None]])
    return (points, capacity.voxel_keys(points, voxel_size), ok, frame), faults


# Two compiled stages (lift, insert): compiled as one, XLA:CPU fuses the lifting into the insert's scatters
# and recomputes it there (measured ~3x slower); inside a caller's jit they are inlined. The in-place insert
# reuses the donated state's buffers: the scatters then touch only the M new slots instead of copying all N
# (measured 3x faster at N = 1e6).
_lift = jax.jit(_lift_checked, static_argnames=("mode", "voxel_size"))
_insert_copy = jax.jit(_insert)
_insert_in_place = jax.jit(_insert, donate_argnums=0)


def _write(mem: LatentMemory, latents, depths, intrinsics, cam2world, keep, mode: str, donate: bool) -> LatentMemory:
    (points, keys, ok, frame), faults = _lift(latents, depths, intrinsics, cam2world, keep, mem.next_write_id,
                                              mode=mode, voxel_size=mem.voxel_size)
    if is_concrete(faults):  # checked before the insert: a refused write stores nothing
        faults = np.asarray(faults)
        if faults[1:3].any():  # the host checks decide (they may accept a borderline camera) and name the fault
            check_cameras(intrinsics, cam2world)
        if faults[0]:
            raise ValueError(NON_FINITE_LATENTS)
        if faults[3]:
            check_write_id_room(mem, ok.shape[0])
    insert = _insert_in_place if donate else _insert_copy
    return insert(mem, points, keys, latents, ok, frame)


def _write_ids_exhausted(next_write_id, num_cells: int):
    """Whether ``num_cells`` more cells could overflow the int32 write ids (a host int or a device scalar)."""
    return next_write_id > _MAX_WRITE_ID - num_cells


def check_write_id_room(mem: LatentMemory, num_cells: int) -> None:
    """Write ids are int32: refuse a write that could overflow them (after ~2^31 stored cells)."""
    if is_concrete(mem.next_write_id) and _write_ids_exhausted(int(mem.next_write_id), num_cells):
        raise ValueError(f"mem: write ids exhausted ({int(mem.next_write_id)} cells written); start a new memory")


def write(mem: LatentMemory, latents, depths, intrinsics, cam2world, keep=None, *, depth_downsample: str = "bilinear",
          donate: bool = False):
    """Stores the valid cells of ``T`` latent frames (policy in the module docstring); returns the new memory.

    Args:
      latents: ``[T, h, w, C]`` latent frames (C = the memory's channels); must be finite.
      depths: ``[T, H, W]`` metric z-depth, ``H = h·sy``, ``W = w·sx`` (integer factors); 0, negative or
        non-finite depth is invalid and never stored.
      intrinsics: ``[T, 3, 3]`` at the depth resolution.
      cam2world: ``[T, 4, 4]`` OpenCV camera-to-world poses.
      keep: optional ``[T, H, W]`` bool, True = static (may be stored).
      depth_downsample: ``"bilinear"`` (official-compatible) or ``"robust"`` (see ``downsample``).
      donate: the caller gives ``mem`` up (``mem = write(mem, ..., donate=True)``): the result reuses its
        buffers and only the new slots are written, instead of a copy of the whole state; ``mem`` must not
        be used afterwards. Inputs are checked first, so a refused write leaves ``mem`` intact.
    """
    check_not_consumed(mem)
    latents, depths, intrinsics, cam2world, keep = check_write_inputs(
        mem.channels, latents, depths, intrinsics, cam2world, keep, depth_downsample, MODES, check_values=False
    )
    return _write(mem, latents, depths, intrinsics, cam2world, keep, depth_downsample, donate)
