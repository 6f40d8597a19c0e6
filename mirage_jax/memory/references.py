"""Reference-frame selection by voxel IoU (docs/design.md §3), in JAX with static shapes (no Python sets).

A camera "sees" a point when the point projects inside its grid with ``z > near`` (frustum test, as the
official), or, with ``occlusion_aware=True``, only when the point also wins the z-buffer of its cell (the
nearest point of that cell in that camera). A set of seen points becomes a set of occupied voxels
(``floor(p / voxel_size)``, 0.1 m by default). For each history frame, the IoU of its voxel set with the union
of the target views' voxel sets is computed; frames with IoU >= ``threshold`` (0.04) are ranked by IoU and
the top ``k`` (4) returned (ties go to the earlier history frame).

Voxel sets are computed by sorting the points' voxel keys once (a dense voxel id per point) and scattering
per-frame "seen" flags into a ``[F, P]`` occupancy table.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mirage_jax.memory.capacity import group_ids, voxel_keys
from mirage_jax.memory.read import NEAR, project_cells, splat_views
from mirage_jax.memory.state import LatentMemory
from mirage_jax.memory.validate import check_cameras, check_hw, check_near, check_not_consumed, check_views_fit


class References(NamedTuple):
    """Selected history frames: ``indices [k]`` int32 (-1 = none), their ``scores [k]`` (IoU, 0 for none),
    and ``iou [F]`` of every history frame."""

    indices: jax.Array
    scores: jax.Array
    iou: jax.Array


def visible(points, valid, intrinsics, cam2world, hw: Sequence[int], *, occlusion_aware: bool = False,
            key=None, near: float = NEAR):
    """``[T, P]`` bool: which of ``points [P, 3]`` (where ``valid [P]``) each of ``T`` cameras sees.

    ``occlusion_aware``: only z-buffer winners count (ties to the lowest ``key [P]``, default the index).
    ``near`` (metres, finite, > 0): points at camera depth ``z <= near`` are not seen.
    """
    near = check_near(near)
    cell, z = project_cells(points, valid, intrinsics, cam2world, hw, near)
    n_cells = hw[0] * hw[1]
    if not occlusion_aware:
        return cell < n_cells
    key = jnp.arange(points.shape[0], dtype=jnp.int32) if key is None else key
    _, _, winner = splat_views(cell, z, key, cell.shape[0], hw)
    rows = jnp.broadcast_to(jnp.arange(cell.shape[0])[:, None], winner.shape)
    return jnp.zeros(cell.shape, bool).at[rows, jnp.where(winner >= 0, winner, points.shape[0])].set(True, mode="drop")


def dense_voxel_ids(points, voxel_size: float):
    """``[P]`` int32 id in ``[0, P)`` per point: equal iff the points share a voxel."""
    keys = voxel_keys(points, voxel_size)
    p = points.shape[0]
    *cols, index = jax.lax.sort([keys[:, 0], keys[:, 1], keys[:, 2], jnp.arange(p, dtype=jnp.int32)], num_keys=3)
    return jnp.zeros((p,), jnp.int32).at[index].set(group_ids(cols))


def voxel_iou(points, history_seen, target_seen, voxel_size: float = 0.1):
    """IoU ``[F]`` of each history frame's voxel set with the target views' union.

    Args:
      points: ``[P, 3]`` world points.
      history_seen: ``[F, P]`` bool, which points each history frame sees.
      target_seen: ``[T, P]`` (or ``[P]``) bool, which points the target views see (united over T).
    """
    vid = dense_voxel_ids(points, voxel_size)
    target = target_seen if target_seen.ndim == 1 else target_seen.any(axis=0)
    target_occ = jnp.zeros((points.shape[0],), bool).at[vid].max(target)
    rows = jnp.broadcast_to(jnp.arange(history_seen.shape[0])[:, None], history_seen.shape)
    occ = jnp.zeros(history_seen.shape, bool).at[rows, jnp.broadcast_to(vid, history_seen.shape)].max(history_seen)
    inter = jnp.sum(occ & target_occ, axis=1)
    union = jnp.sum(occ | target_occ, axis=1)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1), 0.0).astype(jnp.float32)


def rank_references(iou, k: int = 4, threshold: float = 0.04, history_mask=None) -> References:
    """Top-``k`` history frames by ``iou [F]`` among those with IoU >= ``threshold`` (and ``history_mask``)."""
    eligible = iou >= threshold
    if history_mask is not None:
        eligible &= history_mask
    k_eff = min(k, iou.shape[0])
    scores, indices = jax.lax.top_k(jnp.where(eligible, iou, -1.0), k_eff)
    chosen = scores >= 0
    pad = k - k_eff
    indices = jnp.pad(jnp.where(chosen, indices, -1), (0, pad), constant_values=-1)
    scores = jnp.pad(jnp.where(chosen, scores, 0.0), (0, pad))
    return References(indices.astype(jnp.int32), scores, iou)


@partial(jax.jit, static_argnames=("hw", "k", "voxel_size", "occlusion_aware"))
def _select(points, valid, key, hist_k, hist_c2w, tgt_k, tgt_c2w, history_mask, hw, k, threshold, voxel_size,
            occlusion_aware):
    seen = partial(visible, points, valid, hw=hw, occlusion_aware=occlusion_aware, key=key)
    iou = voxel_iou(points, seen(hist_k, hist_c2w), seen(tgt_k, tgt_c2w), voxel_size)
    return rank_references(iou, k, threshold, history_mask)


def select_references(source, history_intrinsics, history_cam2world, target_intrinsics, target_cam2world,
                      hw: Sequence[int], *, valid=None, key=None, k: int = 4, threshold: float = 0.04,
                      voxel_size: float = 0.1, occlusion_aware: bool = False, history_mask=None) -> References:
    """Chooses up to ``k`` history frames whose view of the scene overlaps the target views most.

    Args:
      source: a ``LatentMemory`` (its valid points, ties by write id) or world points ``[P, 3]`` (then
        ``valid [P]`` (default all) and ``key [P]`` (default the index) may be given) — e.g. the lifted depth
        of candidate and target frames, as the data pipeline does.
      history_intrinsics, history_cam2world: ``[F, 3, 3]`` (at ``hw``), ``[F, 4, 4]`` history cameras.
      target_intrinsics, target_cam2world: ``[T, 3, 3]`` (at ``hw``), ``[T, 4, 4]`` target cameras.
      hw: ``(h, w)`` grid used for the frustum / z-buffer tests.
      history_mask: optional ``[F]`` bool, False = not a candidate (e.g. padded frames).
    Returns:
      ``References(indices [k] int32 (-1 = none, best first), scores [k], iou [F])``.
    """
    hw = check_hw(hw)
    if isinstance(source, LatentMemory):
        check_not_consumed(source)
        points, valid, key = source.points, source.valid, source.write_id
    else:
        points = jnp.asarray(source, jnp.float32)
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"source: expected a LatentMemory or points [P, 3], got shape {list(points.shape)}")
        valid = jnp.ones(points.shape[0], bool) if valid is None else jnp.asarray(valid, bool)
        key = jnp.arange(points.shape[0], dtype=jnp.int32) if key is None else jnp.asarray(key, jnp.int32)
        if valid.shape != points.shape[:1] or key.shape != points.shape[:1]:
            shapes = f"{list(valid.shape)}, {list(key.shape)}"
            raise ValueError(f"valid, key: expected shape [{points.shape[0]}], got {shapes}")
    hist_k, hist_c2w = check_cameras(history_intrinsics, history_cam2world, "history_")
    tgt_k, tgt_c2w = check_cameras(target_intrinsics, target_cam2world, "target_")
    if occlusion_aware:  # the z-buffer indexes views x points
        check_views_fit(hist_k.shape[0], points.shape[0], "history_intrinsics")
        check_views_fit(tgt_k.shape[0], points.shape[0], "target_intrinsics")
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k: expected a positive int, got {k!r}")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size: expected > 0, got {voxel_size!r}")
    if history_mask is not None:
        history_mask = jnp.asarray(history_mask, bool)
        if history_mask.shape != hist_k.shape[:1]:
            raise ValueError(f"history_mask: expected shape [{hist_k.shape[0]}], got {list(history_mask.shape)}")
    return _select(points, valid, key, hist_k, hist_c2w, tgt_k, tgt_c2w, history_mask, hw, k, float(threshold),
                   float(voxel_size), bool(occlusion_aware))
