"""Scene caches for a rollout, one interface: the latent spatial memory, the RGB point cache, or none.

A cache is written with ``write(latents [T,h,w,C], frames [T,H,W,3] in [-1,1], depth [T,Hd,Wd], keep
[T,Hd,Wd] | None, k_depth [T,3,3] at depth resolution, c2w [T,4,4], k_pix [T,3,3] at pixel resolution)`` after
each chunk, and read at the next chunk's cameras as a *scene latent* ``[T, h, w, C]`` plus a hit mask ``[T, h, w]``
— the VACE control input. The variants differ only in what they store and how a read becomes a latent:

- ``"latent"`` (:class:`LatentCache`): latent features at latent resolution; a read is one z-buffer splat at
  latent resolution (``memory.read``). No rendering, no encoder.
- ``"rgb"`` (:class:`mirage_jax.world.rgb_cache.RGBCache`): colours at pixel resolution; a read renders
  every pixel frame of the chunk with the same z-buffer at pixel resolution and encodes the renders with
  the latent space (the Spatia/Voyager-style baseline).
- ``"none"`` (:class:`NoCache`): nothing stored; zero scene, all-miss hit mask, no references.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from mirage_jax import memory

CACHES = ("latent", "none", "rgb")


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
        keep = np.ones(np.shape(depth), bool) if keep is None else np.asarray(keep, bool)
        pad = self.write_frames - t

        def padded(a, fill=0):
            a = np.asarray(a)
            return np.concatenate([a, np.full((pad,) + a.shape[1:], fill, a.dtype)]) if pad else a

        eye = np.broadcast_to(np.eye(4, dtype=np.float32), (pad, 4, 4))
        self.state = memory.write(
            self.state, jnp.asarray(padded(np.asarray(feats, np.float32))), jnp.asarray(padded(depth)),
            jnp.asarray(np.concatenate([k_depth, np.broadcast_to(k_depth[:1], (pad, 3, 3))])),
            jnp.asarray(np.concatenate([c2w, eye])), jnp.asarray(padded(keep, False)),
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


class LatentCache(PointCache):
    """The latent spatial memory (DESIGN.md §3): write latents with their depth, read at latent resolution."""

    def __init__(self, capacity: int, channels: int, dtype, depth_downsample: str, write_frames: int):
        super().__init__(memory.init(capacity, channels, dtype), write_frames)
        self.depth_downsample = depth_downsample

    def write(self, latents, frames, depth, keep, k_depth, c2w, k_pix):
        return self._write(latents, depth, keep, k_depth, c2w, self.depth_downsample)

    def read(self, views: Views):
        feats, hit = memory.read(self.state, jnp.asarray(views.k_lat), jnp.asarray(views.c2w), views.lat_hw)
        return feats.astype(jnp.float32), hit


class NoCache:
    """No scene memory: reads are empty, nothing is stored, no references."""

    state = None

    def __init__(self, channels: int):
        self.channels = channels

    def write(self, latents, frames, depth, keep, k_depth, c2w, k_pix):
        return None

    def read(self, views: Views):
        t = len(views.k_lat)
        return jnp.zeros((t, *views.lat_hw, self.channels), jnp.float32), jnp.zeros((t, *views.lat_hw), bool)

    def references(self, *args, **kwargs):
        return [], []

    def num_points(self) -> int:
        return 0

    def bytes_used(self) -> int:
        return 0

    def bytes_allocated(self) -> int:
        return 0


REFERENCE_RULES = ("frozen", "current")


class FrozenReferences:
    """The official reference rule for a rollout (``memory.history``): the latent cells of every cache write,
    and what each generated latent saw right after its chunk was written.

    ``write`` takes the cache's write-back inputs (padded to ``write_frames`` as the caches do), ``record`` the
    new latents' cameras, ``select`` ranks the recorded latents for a chunk's target views.
    """

    def __init__(self, total_latents: int, writes: int, write_frames: int, lat_hw: tuple, depth_downsample: str):
        cells = writes * write_frames * lat_hw[0] * lat_hw[1]
        self.history = memory.init_history(total_latents, cells)
        self.write_frames, self.lat_hw, self.depth_downsample = write_frames, tuple(lat_hw), depth_downsample

    def write(self, depth, keep, k_depth, c2w) -> None:
        """Appends the cells of ``depth [T,Hd,Wd]`` (``keep`` or None, ``k_depth [T,3,3]``, ``c2w [T,4,4]``)."""
        pad = self.write_frames - len(depth)
        keep = np.ones(np.shape(depth), bool) if keep is None else np.asarray(keep, bool)

        def padded(a, fill):
            a = np.asarray(a)
            return np.concatenate([a, np.broadcast_to(fill, (pad,) + a.shape[1:]).astype(a.dtype)]) if pad else a

        self.history = memory.append_cells(self.history, padded(depth, 0.0), padded(k_depth, k_depth[0]),
                                           padded(c2w, np.eye(4, dtype=np.float32)), padded(keep, False),
                                           self.lat_hw, depth_downsample=self.depth_downsample)

    def record(self, latent_indices, k_lat, c2w) -> None:
        self.history = memory.record_views(self.history, np.asarray(latent_indices), k_lat, c2w, self.lat_hw)

    def select(self, views: Views, num_history: int, k: int, threshold: float, voxel_size: float):
        """``(indices, ious)`` of the chosen history latents, best first (see ``select_references``)."""
        if k == 0 or num_history == 0:
            return [], []
        refs = memory.select_frozen(self.history, views.k_lat, views.c2w, views.lat_hw, k=k, threshold=threshold,
                                    voxel_size=voxel_size, num_history=num_history)
        idx, iou = np.asarray(refs.indices), np.asarray(refs.scores)
        return [int(i) for i in idx[idx >= 0]], [float(v) for v in iou[idx >= 0]]


def make_cache(kind: str, config, space, total_latents: int, write_frames: int):
    """The cache ``kind`` for a rollout generating ``total_latents`` latents, at most ``write_frames`` per write."""
    if kind == "latent":
        return LatentCache(int(config.memory.capacity), space.channels, jnp.dtype(config.memory.feature_dtype),
                           config.memory.depth_downsample, write_frames)
    if kind == "none":
        return NoCache(space.channels)
    if kind == "rgb":
        from mirage_jax.world.rgb_cache import RGBCache  # noqa: PLC0415

        return RGBCache(total_latents * int(config.data.height) * int(config.data.width), space, write_frames)
    raise ValueError(f"cache: expected one of {CACHES}, got {kind!r}")
