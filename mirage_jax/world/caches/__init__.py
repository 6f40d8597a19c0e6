"""Scene caches for a rollout, one interface, one module per kind: the latent memory, the RGB point cache, none.

A cache is written with ``write(latents [T,h,w,C], frames [T,H,W,3] in [-1,1], depth [T,Hd,Wd], keep
[T,Hd,Wd] | None, k_depth [T,3,3] at depth resolution, c2w [T,4,4], k_pix [T,3,3] at pixel resolution)`` after
each chunk, and read at the next chunk's cameras as a *scene latent* ``[T, h, w, C]`` plus a hit mask ``[T, h, w]``
— the VACE control input. The variants differ only in what they store and how a read becomes a latent:

- ``"latent"`` (``caches.latent.LatentCache``): latent features at latent resolution; a read is one z-buffer
  splat at latent resolution (``memory.read``). No rendering, no encoder.
- ``"rgb"`` (``caches.rgb.RGBCache``): colours at pixel resolution; a read renders every pixel frame of the
  chunk with the same z-buffer at pixel resolution and encodes the renders with the latent space (the
  Spatia/Voyager-style baseline).
- ``"none"`` (``caches.empty.NoCache``): nothing stored; zero scene, all-miss hit mask, no references.
"""

from __future__ import annotations

import jax.numpy as jnp

from mirage_jax.config import CHOICES
from mirage_jax.world.caches.base import PointCache, Views
from mirage_jax.world.caches.empty import NoCache
from mirage_jax.world.caches.latent import LatentCache
from mirage_jax.world.caches.rgb import RGBCache

CACHES = CHOICES["sample.cache"]

__all__ = ["CACHES", "LatentCache", "NoCache", "PointCache", "RGBCache", "Views", "make_cache"]


def make_cache(kind: str, config, space, total_latents: int, write_frames: int):
    """The cache ``kind`` for a rollout generating ``total_latents`` latents, at most ``write_frames`` per write."""
    if kind == "latent":
        return LatentCache(int(config.memory.capacity), space.channels, jnp.dtype(config.memory.feature_dtype),
                           config.memory.depth_downsample, write_frames, float(config.memory.dedup_voxel_size))
    if kind == "none":
        return NoCache(space.channels)
    if kind == "rgb":
        return RGBCache(total_latents * int(config.data.height) * int(config.data.width), space, write_frames)
    raise ValueError(f"cache: expected one of {CACHES}, got {kind!r}")
