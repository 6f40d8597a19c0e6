"""What every scene cache shares: the cameras a chunk reads (``Views``) and the bookkeeping of the caches that
store points in a ``memory.LatentMemory`` (``PointCache``: padded writes, sizes, the recomputed reference rule).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from mirage_jax import memory


class Views(NamedTuple):
    """The cameras a chunk reads: latent-resolution targets and every pixel frame of the chunk.

    ``k_lat [T,3,3]`` at ``lat_hw``, ``c2w [T,4,4]``; ``k_pix [F,3,3]`` at ``pix_hw``, ``c2w_pix [F,4,4]``.
    """

    k_lat: np.ndarray
    c2w: np.ndarray
    lat_hw: tuple
    k_pix: np.ndarray
    c2w_pix: np.ndarray
    pix_hw: tuple


def select_references(mem, views: Views, history_k, history_c2w, num_history: int, k: int, threshold: float,
                      voxel_size: float):
    """The first ``num_history`` of the history cameras ``history_k [F,3,3]`` (latent resolution), ``history_c2w
    [F,4,4]`` are candidates (the rest pad ``F`` to a fixed size: one compiled selection per rollout).
    Returns the chosen history latent indices (best first) and their voxel IoUs with the target views."""
    if k == 0 or num_history == 0:
        return [], []
    refs = memory.select_references(
        mem, history_k, history_c2w, views.k_lat, views.c2w, views.lat_hw, k=k, threshold=threshold,
        voxel_size=voxel_size, history_mask=np.arange(len(history_k)) < num_history,
    )
    idx, iou = np.asarray(refs.indices), np.asarray(refs.scores)
    keep = idx >= 0
    return [int(i) for i in idx[keep]], [float(v) for v in iou[keep]]


def pad_frames(a, count: int, fill=0):
    """``a [T, ...]`` (numpy or jax) as a device array ``[count, ...]``, the added frames filled with ``fill``
    (a scalar or an array of one frame's shape)."""
    a = jnp.asarray(a)
    if count == len(a):
        return a
    return jnp.concatenate([a, jnp.broadcast_to(jnp.asarray(fill, a.dtype), (count - len(a),) + a.shape[1:])])


class PointCache:
    """A ``memory.LatentMemory`` used as a cache (shared bookkeeping of the latent and RGB caches).

    Every write is padded to ``write_frames`` frames (padded frames have depth 0 and keep=False, so nothing of
    them is stored): the first frame, full chunks and a short last chunk all run one compiled write.
    """

    def __init__(self, state, write_frames: int):
        self.state = state
        self.write_frames = write_frames

    def _write(self, feats, depth, keep, k_depth, c2w, depth_downsample: str):
        """``memory.write`` of ``feats [T,h,w,C]`` with ``depth/keep [T,Hd,Wd]``, padded to ``write_frames``."""
        t = len(feats)
        if t > self.write_frames:
            raise ValueError(f"cache write of {t} frames; at most {self.write_frames} per write")
        keep = jnp.ones(np.shape(depth), bool) if keep is None else jnp.asarray(keep, bool)
        n = self.write_frames
        self.state = memory.write(
            self.state, pad_frames(jnp.asarray(feats, jnp.float32), n), pad_frames(depth, n),
            pad_frames(k_depth, n, k_depth[0]), pad_frames(c2w, n, np.eye(4, dtype=np.float32)),
            pad_frames(keep, n, False),
            depth_downsample=depth_downsample, donate=True,  # the cache owns its state: update it in place
        )
        return self.state

    def num_points(self) -> int:
        return memory.num_points(self.state)

    def bytes_used(self) -> int:
        """Bytes of the stored points (points x bytes per point): what the cache holds."""
        return self.num_points() * memory.bytes_per_point(self.state)

    def bytes_allocated(self) -> int:
        """Bytes of the whole fixed-capacity state (used or not)."""
        return memory.memory_bytes(self.state)

    def references(self, views: Views, history_k, history_c2w, num_history: int, k: int, threshold: float,
                   voxel_size: float):
        return select_references(self.state, views, history_k, history_c2w, num_history, k, threshold, voxel_size)
