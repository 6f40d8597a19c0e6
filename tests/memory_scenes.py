"""Small scene/camera generators shared by the memory tests (numpy, float64, deterministic seeds)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from mirage_jax import geometry, memory

FY_OVER_FX = 1.125  # fx != fy everywhere in the memory tests, so a swapped axis cannot pass


def intrinsics(t: int, hw, f: float | None = None) -> np.ndarray:
    """``[t, 3, 3]`` pinhole matrices for an ``hw`` grid: ``fx = f``, ``fy = FY_OVER_FX · f``, principal point
    at the grid centre."""
    h, w = hw
    f = float(w) if f is None else f
    k = geometry.make_intrinsics(np.full(t, f), np.full(t, FY_OVER_FX * f), np.full(t, (w - 1) / 2),
                                 np.full(t, (h - 1) / 2))
    return np.array(k, np.float32)


def random_poses(rng: np.random.Generator, t: int, radius: float = 0.5) -> np.ndarray:
    """``[t, 4, 4]`` cameras near the origin looking roughly along +z."""
    eyes = rng.uniform(-radius, radius, (t, 3))
    targets = eyes + np.array([0.0, 0.0, 3.0]) + rng.uniform(-0.6, 0.6, (t, 3))
    return np.stack([np.asarray(geometry.look_at(e, g)) for e, g in zip(eyes, targets)]).astype(np.float32)


def points_in_view(rng, k, pose, hw, n, depth_range=(0.5, 5.0), margin=2):
    """``n`` world points [n, 3] (float64) whose cells in camera (k, pose) are random, off cell boundaries."""
    h, w = hw
    u = rng.integers(-margin, w + margin, n) + rng.uniform(-0.35, 0.35, n)
    v = rng.integers(-margin, h + margin, n) + rng.uniform(-0.35, 0.35, n)
    d = rng.uniform(*depth_range, n)
    cam = np.stack([(u - k[0, 2]) * d / k[0, 0], (v - k[1, 2]) * d / k[1, 1], d], -1)
    return cam @ np.asarray(pose, np.float64)[:3, :3].T + np.asarray(pose, np.float64)[:3, 3]


def off_boundaries(points, ks, poses, tol=1e-3):
    """Mask of points whose projection in every camera is ``tol`` away from a rounding boundary."""
    pts = np.asarray(points, np.float64)
    ok = np.ones(len(pts), bool)
    for k, pose in zip(ks, poses):
        cam = (pts - pose[:3, 3]) @ np.asarray(pose, np.float64)[:3, :3]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([cam[:, 0] * k[0, 0] / cam[:, 2] + k[0, 2], cam[:, 1] * k[1, 1] / cam[:, 2] + k[1, 2]], -1)
        frac = np.abs(uv - np.floor(uv) - 0.5)
        ok &= ((frac > tol).all(-1) & (np.abs(cam[:, 2] - memory.NEAR) > tol)) | (cam[:, 2] < 0)
    return ok


def memory_from_points(points, features, write_id, capacity: int | None = None, frame_id=None):
    """A ``LatentMemory`` holding exactly these points in slots 0..n-1 (rest empty)."""
    n, c = features.shape
    cap = n if capacity is None else capacity
    mem = memory.init(cap, c)
    pad = cap - n
    frame_id = np.zeros(n, np.int32) if frame_id is None else frame_id
    return dataclasses.replace(
        mem,
        points=jnp.asarray(np.pad(np.asarray(points, np.float32), ((0, pad), (0, 0)))),
        features=jnp.asarray(np.pad(np.asarray(features, np.float32), ((0, pad), (0, 0)))),
        valid=jnp.asarray(np.arange(cap) < n),
        write_id=jnp.asarray(np.pad(np.asarray(write_id, np.int32), (0, pad), constant_values=-1)),
        frame_id=jnp.asarray(np.pad(np.asarray(frame_id, np.int32), (0, pad), constant_values=-1)),
        next_write_id=jnp.asarray(int(np.max(write_id, initial=-1)) + 1, jnp.int32),
    )


def stored(mem) -> dict:
    """The stored points of a memory as a dict keyed by write id: {wid: (point, feature, frame_id)}."""
    valid = np.asarray(mem.valid)
    pts, feats = np.asarray(mem.points)[valid], np.asarray(mem.features, np.float32)[valid]
    wids, frames = np.asarray(mem.write_id)[valid], np.asarray(mem.frame_id)[valid]
    return {int(i): (p, f, int(fr)) for i, p, f, fr in zip(wids, pts, feats, frames)}
