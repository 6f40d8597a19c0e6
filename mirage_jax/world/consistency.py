"""Consistency protocols of a generated video against ground-truth cameras and depth (docs/design.md §10).

- **closed loop** (the paper's "_C" protocol): the last frame of a path that returns to its start vs the first
  frame, PSNR (dB) and SSIM;
- **3D reprojection**: frame ``i`` warped into view ``j`` with the ground-truth depth of ``i`` and the
  ground-truth cameras, compared with frame ``j`` on the pixels that land in view and are not occluded there:
  mean absolute error on the 0..255 scale;
- **per-chunk means** of per-frame values (the drift curve, the per-chunk reprojection error).

LPIPS is not computed: it needs a pretrained network, the ``lpips`` package is PyTorch with downloaded
weights, and no maintained JAX or numpy implementation exists.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax import geometry
from mirage_jax.world.image_metrics import psnr, ssim, to_unit

DEPTH_REL_TOL = 0.05  # a warped point is visible in view j when |z - depth_j| <= 5 % of depth_j
REPROJECTION_GAP = 4  # default pairs (i, i + 4): one latent frame apart


def closed_loop(video) -> dict:
    """``{"closed_loop_psnr", "closed_loop_ssim"}`` of the last frame of ``video [N, H, W, 3]`` (uint8 or
    [-1, 1], H, W >= 11) against its first. Identical frames give the PSNR cap, 100 dB (MSE floored at 1e-10).
    """
    return {"closed_loop_psnr": float(psnr(video[-1], video[0])),
            "closed_loop_ssim": float(ssim(video[-1], video[0]))}


def gap_pairs(num_frames: int, gap: int = REPROJECTION_GAP, name: str = "reprojection_gap") -> np.ndarray:
    """``[P, 2]`` frame pairs ``(i, i + gap)`` for every ``i`` with ``i + gap < num_frames``; a gap out of range
    is a ``ValueError`` naming ``name``."""
    if not 1 <= gap < num_frames:
        raise ValueError(f"{name}: expected 1 <= gap < num_frames={num_frames}, got {gap}")
    first = np.arange(num_frames - gap)
    return np.stack([first, first + gap], -1)


def _check_reprojection_inputs(frames, depths, intrinsics, poses, pairs, rel_tol) -> None:
    """``ValueError`` naming the first input whose shape or values do not fit ``frames [N, H, W, 3]``."""
    if frames.ndim != 4:
        raise ValueError(f"frames: expected shape [N, H, W, 3], got {list(frames.shape)}")
    n, h, w = frames.shape[:3]
    expected = {"frames": (frames.shape, (n, h, w, 3)), "depths": (depths.shape, (n, h, w)),
                "intrinsics": (intrinsics.shape, (n, 3, 3)), "poses": (poses.shape, (n, 4, 4))}
    for name, (shape, want) in expected.items():
        if tuple(shape) != want:
            raise ValueError(f"{name}: expected shape {list(want)} (frames [N, H, W, 3]), got {list(shape)}")
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) == 0 or pairs.min() < 0 or pairs.max() >= n:
        raise ValueError(f"pairs: expected [P >= 1, 2] frame indices in [0, {n}), got shape {list(pairs.shape)}")
    if not 0 < rel_tol < 1:
        raise ValueError(f"rel_tol: expected 0 < rel_tol < 1, got {rel_tol}")


def _pair_error(frames, depths, intrinsics, poses, pair, rel_tol):
    """``(mean absolute error, covisible pixel count)`` of frame ``pair[0]`` warped into view ``pair[1]``.

    Every pixel of ``i`` with valid depth is lifted to the world and projected into ``j`` (nearest cell, as
    ``memory.read``); it counts when it lands inside the grid, in front of the camera, and its depth is within
    ``rel_tol`` of the ground-truth depth of ``j`` at that cell (not occluded). ``frames [N, H, W, 3]`` 0..255.
    """
    i, j = pair[0], pair[1]
    h, w = depths.shape[1:]
    depth_i = depths[i]
    valid = jnp.isfinite(depth_i) & (depth_i > 0)
    world = geometry.backproject_to_world(jnp.where(valid, depth_i, 1.0), intrinsics[i], poses[i])
    uv, z = geometry.project(world.reshape(-1, 3), intrinsics[j], poses[j])
    u, v = jnp.round(uv[:, 0]), jnp.round(uv[:, 1])
    inside = (z > 0) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    cell = jnp.where(inside, v * w + u, 0).astype(jnp.int32)
    depth_j = depths[j].reshape(-1)[cell]
    seen = jnp.isfinite(depth_j) & (depth_j > 0) & (jnp.abs(z - depth_j) <= rel_tol * depth_j)
    visible = valid.reshape(-1) & inside & seen
    diff = jnp.abs(frames[i].reshape(-1, 3) - frames[j].reshape(-1, 3)[cell]).mean(-1)
    count = visible.sum()
    return jnp.where(visible, diff, 0.0).sum() / jnp.maximum(count, 1), count


@jax.jit
def _pair_errors(frames, depths, intrinsics, poses, pairs, rel_tol):
    """``_pair_error`` of every pair of ``pairs [P, 2]``, one at a time (one pair's arrays in memory)."""
    return jax.lax.map(lambda pair: _pair_error(frames, depths, intrinsics, poses, pair, rel_tol), pairs)


def reprojection_error(frames, depths, intrinsics, poses, pairs, rel_tol: float = DEPTH_REL_TOL):
    """Photometric reprojection error of each frame pair ``(i, j)`` of ``pairs [P, 2]``.

    Frame ``i`` of ``frames [N, H, W, 3]`` (uint8 or [-1, 1]) is warped into view ``j`` with ``depths [N, H, W]``
    (metric z-depth of frame ``i``; ``0`` or non-finite = invalid), ``intrinsics [N, 3, 3]`` and ``poses
    [N, 4, 4]`` (OpenCV c2w, docs/design.md §2), and compared with frame ``j`` where the point is in view and not
    occluded (its depth within ``rel_tol`` of ``depths[j]`` at the cell it lands in).

    Returns ``(error [P], coverage [P])``: the mean absolute error per channel on the 0..255 scale over the
    covisible pixels (NaN where none), and the covisible fraction of frame ``i``'s pixels.
    """
    frames = np.asarray(frames)
    depths, pairs = np.asarray(depths, np.float32), np.asarray(pairs, np.int32)
    intrinsics, poses = np.asarray(intrinsics, np.float32), np.asarray(poses, np.float32)
    _check_reprojection_inputs(frames, depths, intrinsics, poses, pairs, rel_tol)
    error, count = _pair_errors(to_unit(frames) * 255.0, depths, intrinsics, poses, pairs, jnp.float32(rel_tol))
    error, count = np.asarray(error, np.float64), np.asarray(count)
    return np.where(count > 0, error, np.nan), count / (depths.shape[1] * depths.shape[2])


def per_chunk_mean(values, frames, bounds: Sequence[Sequence[int]]) -> list[float]:
    """Mean of ``values [P]`` over the entries whose frame index ``frames [P]`` lies in each chunk's
    ``[start, end)`` of ``bounds``, NaN values left out; NaN for a chunk with none."""
    values, frames = np.asarray(values, np.float64), np.asarray(frames)
    return [nan_mean(values[(frames >= start) & (frames < end)]) for start, end in bounds]


def nan_mean(values) -> float:
    """Mean of ``values`` with NaN left out; NaN when nothing is left (no warning)."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")
