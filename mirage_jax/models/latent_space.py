"""The latent space the world model works in: ``make_latent_space(config) -> LatentSpace``.

Two kinds (``config.latent.kind``), one interface:

* ``"patchify"`` — exact and parameter-free, for fast CPU configs. Latent frame k is the s×s pixel-unshuffle
  (``s = config.latent.spatial_factor``; channel order (c, w-offset, h-offset) as the Wan VAE patchify, see
  :mod:`mirage_jax.models.vae.patchify`) of pixel frame 4k, so ``C = 3·s²`` (48 for s = 4). Values are the
  [-1, 1] pixels themselves (scale 1: per-channel std of natural/procedural frames is ≈0.3–0.6, close enough to
  unit variance for the diffusion schedule; no extra constant to keep in sync). ``decode`` puts latent k back at
  pixel frame 4k exactly and fills frames 4k-3 … 4k-1 by linear interpolation between keyframes k-1 and k, so
  ``encode(decode(z)) == z`` bit for bit.
* ``"wan_vae"`` — the Wan2.2 VAE (:mod:`mirage_jax.models.vae`): normalised latents (per-channel mean/std),
  causal chunked encode/decode, optional spatial tiling (``config.latent.vae.tiled``).

``encode(video [B, T, H, W, 3] in [-1, 1], T = 4N+1) -> latents [B, 1+(T-1)//4, H/s, W/s, C]`` and
``decode(latents [B, t, h, w, C]) -> video [B, 1+4(t-1), H, W, 3]``. Both accept numpy or jax arrays and
return **jax** arrays (float32); they are jit-compiled per input shape. Bad shapes raise ``ValueError`` before
any compute.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax.models.vae import patchify
from mirage_jax.video_shapes import FRAMES_PER_LATENT, check_latents, check_video, num_latents


class LatentSpace:
    """Interface: ``encode``, ``decode``, ``spatial_factor``, ``temporal_factor``, ``channels``."""

    spatial_factor: int
    temporal_factor: int = FRAMES_PER_LATENT
    channels: int

    def latent_shape(self, video_shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        """``[B, T, H, W, 3] -> [B, 1+(T-1)//4, H/s, W/s, C]`` (validates like ``encode``)."""
        check_video(video_shape, self.spatial_factor)
        b, t, h, w, _ = video_shape
        s = self.spatial_factor
        return (b, num_latents(t), h // s, w // s, self.channels)

    def encode(self, video) -> jax.Array:
        raise NotImplementedError

    def decode(self, latents) -> jax.Array:
        raise NotImplementedError

    def replicate(self, mesh: jax.sharding.Mesh) -> None:
        """Puts the parameters (if any) on every device of ``mesh``, so a batch split over it encodes there."""


@functools.partial(jax.jit, static_argnums=1)
def _patchify_encode(video: jax.Array, s: int) -> jax.Array:
    return patchify.unshuffle(video[:, ::FRAMES_PER_LATENT].astype(jnp.float32), s)


@functools.partial(jax.jit, static_argnums=1)
def _patchify_decode(latents: jax.Array, s: int) -> jax.Array:
    keys = patchify.shuffle(latents.astype(jnp.float32), s)  # [B, t, H, W, 3]: pixel frames 0, 4, 8, ...
    if keys.shape[1] == 1:
        return keys
    step = FRAMES_PER_LATENT
    w = jnp.arange(1, step + 1, dtype=jnp.float32).reshape(1, 1, step, 1, 1, 1) / step  # frames 4k-3 .. 4k
    between = keys[:, :-1, None] * (1.0 - w) + keys[:, 1:, None] * w  # w = 1 gives keys[:, 1:] exactly
    b, t1, _, h, wd, c = between.shape
    return jnp.concatenate([keys[:, :1], between.reshape(b, t1 * step, h, wd, c)], axis=1)


class PatchifyLatentSpace(LatentSpace):
    """Exact pixel-unshuffle latents of every 4th frame (see module docstring)."""

    def __init__(self, spatial_factor: int = 4):
        if spatial_factor < 1:
            raise ValueError(f"config.latent.spatial_factor: expected >= 1, got {spatial_factor}")
        self.spatial_factor = spatial_factor
        self.channels = 3 * spatial_factor * spatial_factor

    def encode(self, video) -> jax.Array:
        """``[B, 4N+1, H, W, 3] -> [B, N+1, H/s, W/s, 3s²]``."""
        check_video(np.shape(video), self.spatial_factor)
        return _patchify_encode(jnp.asarray(video), self.spatial_factor)

    def decode(self, latents) -> jax.Array:
        """``[B, t, h, w, 3s²] -> [B, 1+4(t-1), h·s, w·s, 3]``."""
        check_latents(np.shape(latents), self.channels)
        return _patchify_decode(jnp.asarray(latents), self.spatial_factor)


class WanVAELatentSpace(LatentSpace):
    """The Wan2.2 VAE (normalised latents); ``tiled`` decodes/encodes in overlapping spatial tiles."""

    def __init__(self, vae, *, tiled: bool = False, tile_hw=(30, 52), tile_stride_hw=(15, 26)):
        from mirage_jax.models.vae import tiling  # noqa: PLC0415 (the VAE's code loads only for this kind)

        self.vae = vae
        self.spatial_factor = vae.spatial_factor
        self.channels = vae.z_dim
        self.tiled = tiled
        self.tile_hw = tuple(tile_hw)
        self.tile_stride_hw = tuple(tile_stride_hw)
        self._tiling = tiling

    def replicate(self, mesh: jax.sharding.Mesh) -> None:
        from flax import nnx  # noqa: PLC0415

        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        nnx.update(self.vae, jax.device_put(nnx.state(self.vae), replicated))

    def encode(self, video) -> jax.Array:
        check_video(np.shape(video), self.spatial_factor)
        video = jnp.asarray(video, jnp.float32)
        if self.tiled:
            return self._tiling.encode_tiled(self.vae, video, self.tile_hw, self.tile_stride_hw)
        return self.vae.encode(video)

    def decode(self, latents) -> jax.Array:
        check_latents(np.shape(latents), self.channels)
        latents = jnp.asarray(latents, jnp.float32)
        if self.tiled:
            return self._tiling.decode_tiled(self.vae, latents, self.tile_hw, self.tile_stride_hw)
        return self.vae.decode(latents)


def make_latent_space(config) -> LatentSpace:
    """Builds the latent space named by ``config.latent.kind`` (full config or its ``latent`` section)."""
    latent = config.latent if "latent" in config else config
    if latent.kind == "patchify":
        space = PatchifyLatentSpace(latent.spatial_factor)
    elif latent.kind == "wan_vae":
        from mirage_jax.models.vae import load_or_init  # noqa: PLC0415

        vae_cfg = latent.vae
        space = WanVAELatentSpace(
            load_or_init(vae_cfg),
            tiled=vae_cfg.tiled,
            tile_hw=vae_cfg.tile_hw,
            tile_stride_hw=vae_cfg.tile_stride_hw,
        )
    else:
        raise ValueError(f"config.latent.kind: expected 'patchify' or 'wan_vae', got {latent.kind!r}")
    if space.channels != latent.channels:
        raise ValueError(
            f"config.latent.channels={latent.channels} but the {latent.kind!r} latent space has {space.channels}"
        )
    if space.spatial_factor != latent.spatial_factor:
        raise ValueError(
            f"config.latent.spatial_factor={latent.spatial_factor} but the {latent.kind!r} latent space has "
            f"{space.spatial_factor}"
        )
    return space
