"""What each history latent saw when it was written: the official rule for choosing reference frames.

The official pipeline scores a history latent by the memory points inside its camera's frustum *right after
its chunk was written*, frozen: points written later, or replaced since, do not change its score. The target
side is what the target cameras see of the whole point cloud now. ``ViewHistory`` keeps exactly that with
static shapes: every latent cell ever lifted, append-only and never de-duplicated or evicted, like the
official point cloud (``points [W, 3]``, ``valid [W]``), and for each history latent which of those cells its
camera saw when it was recorded (``seen [F, W]``). It holds geometry only (no features): 13 B per lifted cell
plus F bits per cell.

``init_history`` → ``append_cells`` (after every cache write, the same depth and cameras) → ``record_views``
(the new latents' cameras) → ``select_frozen`` (top-k history latents by voxel IoU, as ``select_references``). The
alternative rule, visibility recomputed from the current memory, is ``select_references`` on a
``LatentMemory``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp

from mirage_jax.memory.references import References, rank_references, visible, voxel_iou
from mirage_jax.memory.validate import check_cameras, check_hw
from mirage_jax.memory.write import lift_cells


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ViewHistory:
    """Lifted cells and the frozen view of each history latent (a pytree; see the module docstring).

    Attributes:
      points: ``[W, 3]`` float32 world points of every lifted cell, in write order.
      valid: ``[W]`` bool, True where a cell had valid depth (and keep).
      seen: ``[F, W]`` bool, the cells history latent ``f``'s camera saw when it was recorded.
      recorded: ``[F]`` bool, True for the history latents recorded so far.
      cursor: ``[]`` int32, the next free row of ``points``.
    """

    points: jax.Array
    valid: jax.Array
    seen: jax.Array
    recorded: jax.Array
    cursor: jax.Array

    @property
    def capacity(self) -> int:
        return int(self.points.shape[0])


def init_history(max_latents: int, max_cells: int) -> ViewHistory:
    """An empty history for up to ``max_latents`` history latents and ``max_cells`` lifted cells in all."""
    for name, value in (("max_latents", max_latents), ("max_cells", max_cells)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return ViewHistory(points=jnp.zeros((max_cells, 3), jnp.float32), valid=jnp.zeros((max_cells,), bool),
                       seen=jnp.zeros((max_latents, max_cells), bool), recorded=jnp.zeros((max_latents,), bool),
                       cursor=jnp.zeros((), jnp.int32))


@partial(jax.jit, static_argnames=("hw", "mode"), donate_argnums=0)
def _append(history: ViewHistory, depths, intrinsics, cam2world, keep, hw, mode):
    points, ok = lift_cells(depths, intrinsics, cam2world, keep, hw, mode)
    return dataclasses.replace(
        history, points=jax.lax.dynamic_update_slice(history.points, points, (history.cursor, 0)),
        valid=jax.lax.dynamic_update_slice(history.valid, ok, (history.cursor,)),
        cursor=history.cursor + points.shape[0])


def append_cells(history: ViewHistory, depths, intrinsics, cam2world, keep, hw: Sequence[int], *,
           depth_downsample: str = "bilinear") -> ViewHistory:
    """Appends the ``T·h·w`` cells of ``T`` frames lifted to the ``hw`` latent grid (as ``memory.write`` lifts
    them: ``depths [T, Hd, Wd]``, ``intrinsics [T, 3, 3]`` at depth resolution, ``cam2world [T, 4, 4]``,
    ``keep [T, Hd, Wd]`` bool or None). The input history is consumed (updated in place)."""
    hw = check_hw(hw)
    t = depths.shape[0]
    cells = t * hw[0] * hw[1]
    if int(history.cursor) + cells > history.capacity:
        raise ValueError(f"history: {int(history.cursor)} + {cells} cells exceed its {history.capacity}; "
                         "init_history(max_cells=...) must cover every write")
    keep = jnp.ones(depths.shape, bool) if keep is None else jnp.asarray(keep, bool)
    return _append(history, jnp.asarray(depths, jnp.float32), jnp.asarray(intrinsics, jnp.float32),
                   jnp.asarray(cam2world, jnp.float32), keep, hw, depth_downsample)


@partial(jax.jit, static_argnames=("hw",), donate_argnums=0)
def _record(history: ViewHistory, indices, intrinsics, cam2world, hw):
    seen = visible(history.points, history.valid, intrinsics, cam2world, hw)
    return dataclasses.replace(history, seen=history.seen.at[indices].set(seen),
                               recorded=history.recorded.at[indices].set(True))


def record_views(history: ViewHistory, latent_indices, intrinsics, cam2world, hw: Sequence[int]) -> ViewHistory:
    """Freezes what history latents ``latent_indices [T]`` see now from their cameras (``intrinsics [T, 3, 3]``
    at ``hw``, ``cam2world [T, 4, 4]``): the cells inside each frustum. The input history is consumed."""
    hw = check_hw(hw)
    intrinsics, cam2world = check_cameras(intrinsics, cam2world)
    indices = jnp.asarray(latent_indices, jnp.int32)
    if indices.shape != intrinsics.shape[:1]:
        raise ValueError(f"latent_indices: expected shape [{intrinsics.shape[0]}], got {list(indices.shape)}")
    return _record(history, indices, intrinsics, cam2world, hw)


@partial(jax.jit, static_argnames=("hw", "k", "voxel_size"))
def _select(history: ViewHistory, tgt_k, tgt_c2w, candidates, hw, k, threshold, voxel_size):
    target = visible(history.points, history.valid, tgt_k, tgt_c2w, hw)
    iou = voxel_iou(history.points, history.seen, target, voxel_size)
    return rank_references(iou, k, threshold, candidates & history.recorded)


def select_frozen(history: ViewHistory, target_intrinsics, target_cam2world, hw: Sequence[int], *, k: int = 4,
                  threshold: float = 0.04, voxel_size: float = 0.1, num_history: int | None = None) -> References:
    """Up to ``k`` recorded history latents by voxel IoU of their frozen views with the union of what the target
    cameras (``[T, 3, 3]`` at ``hw``, ``[T, 4, 4]``) see of all lifted cells now; only latents
    ``< num_history`` (default all) are candidates. Returns ``References`` over the ``F`` history slots."""
    hw = check_hw(hw)
    tgt_k, tgt_c2w = check_cameras(target_intrinsics, target_cam2world, "target_")
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k: expected a positive int, got {k!r}")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size: expected > 0, got {voxel_size!r}")
    f = history.seen.shape[0]
    candidates = jnp.arange(f) < (f if num_history is None else int(num_history))
    return _select(history, tgt_k, tgt_c2w, candidates, hw, k, float(threshold), float(voxel_size))
