"""The latent spatial memory as a rollout's scene cache: latents written with their depth, read at latent resolution."""

from __future__ import annotations

import jax.numpy as jnp

from mirage_jax import memory
from mirage_jax.world.caches.base import PointCache, Views


class LatentCache(PointCache):
    """The latent spatial memory (docs/design.md §3): write latents with their depth, read at latent resolution."""

    def __init__(self, capacity: int, channels: int, dtype, depth_downsample: str, write_frames: int,
                 dedup_voxel_size: float):
        super().__init__(memory.init(capacity, channels, dtype, voxel_size=dedup_voxel_size), write_frames)
        self.depth_downsample = depth_downsample

    def write(self, latents, frames, depth, keep, k_depth, c2w, k_pix):
        return self._write(latents, depth, keep, k_depth, c2w, self.depth_downsample)

    def read(self, views: Views):
        feats, hit = memory.read(self.state, jnp.asarray(views.k_lat), jnp.asarray(views.c2w), views.lat_hw)
        return feats.astype(jnp.float32), hit
