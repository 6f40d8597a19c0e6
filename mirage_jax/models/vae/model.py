"""The Wan2.2 VAE (``AutoencoderKLWan`` 2.2 layout) in Flax NNX, with compiled causal chunked encode/decode.

``WanVAE.encode(video [B, T, H, W, 3] in [-1, 1], T = 4N+1) -> [B, N+1, H/16, W/16, z_dim]`` (normalised
posterior mean) and ``WanVAE.decode(latents) -> [B, 1+4(t-1), H, W, 3]`` clamped to [-1, 1].

Chunk schedule (exactly the official one): the encoder sees frame 0 alone, then groups of 4 frames; the
decoder sees one latent frame at a time. The first chunk is traced once with its special cases; the identical
steady-state chunks are the body of one ``jax.lax.scan`` whose carry is the explicit cache (a flat list of
arrays, see :mod:`mirage_jax.models.vae.cache`). The whole encode/decode is one ``jax.jit`` per input shape.

Spatial sharding: pass ``mesh`` and a mesh ``axis`` to ``encode``/``decode`` to shard the frame height over
that axis (``H`` must divide by 16·axis size); XLA's SPMD partitioner inserts the conv halo exchanges and the
gathers for the per-frame attention, and the result equals the unsharded one.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from mirage_jax.models.vae import patchify
from mirage_jax.models.vae.cache import ChunkCache
from mirage_jax.models.vae.constants import LATENTS_MEAN, LATENTS_STD
from mirage_jax.models.vae.layers import CausalConv3d, DownBlock, Init, MidBlock, PointwiseConv, RMSNorm, UpBlock

PATCH = 2  # 2×2 pixel-unshuffle in front of the encoder (RGB → 12 channels)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture sizes (defaults: the real Wan2.2 VAE, 705 M parameters)."""

    base_dim: int = 160
    decoder_base_dim: int = 256
    z_dim: int = 48
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)

    @classmethod
    def from_config(cls, vae_config) -> VAEConfig:
        """From ``config.latent.vae`` (an ml_collections section)."""
        return cls(
            base_dim=int(vae_config.base_dim),
            decoder_base_dim=int(vae_config.decoder_base_dim),
            z_dim=int(vae_config.z_dim),
            dim_mult=tuple(int(m) for m in vae_config.dim_mult),
            num_res_blocks=int(vae_config.num_res_blocks),
            temporal_downsample=tuple(bool(t) for t in vae_config.temporal_downsample),
        )


class Encoder(nnx.Module):
    """conv_in → residual down blocks → mid block → RMS norm, SiLU → conv_out (2·z_dim channels)."""

    def __init__(self, cfg: VAEConfig, *, init: Init):
        dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
        last = len(cfg.dim_mult) - 1
        self.conv_in = CausalConv3d(3 * PATCH * PATCH, dims[0], init=init)
        self.down_blocks = nnx.List([
            DownBlock(a, o, cfg.num_res_blocks, temporal=i != last and cfg.temporal_downsample[i], down=i != last,
                      init=init)
            for i, (a, o) in enumerate(zip(dims[:-1], dims[1:]))
        ])  # fmt: skip
        self.mid_block = MidBlock(dims[-1], init=init)
        self.norm_out = RMSNorm(dims[-1], init=init)
        self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim, init=init)

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        x = self.mid_block(x, cache)
        return self.conv_out(jax.nn.silu(self.norm_out(x)), cache)


class Decoder(nnx.Module):
    """conv_in → mid block → residual up blocks → RMS norm, SiLU → conv_out (12 channels, before unpatchify)."""

    def __init__(self, cfg: VAEConfig, *, init: Init):
        mult = cfg.dim_mult
        dims = [cfg.decoder_base_dim * m for m in (mult[-1], *mult[::-1])]
        temporal_up = cfg.temporal_downsample[::-1]
        last = len(mult) - 1
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0], init=init)
        self.mid_block = MidBlock(dims[0], init=init)
        self.up_blocks = nnx.List([
            UpBlock(a, o, cfg.num_res_blocks, temporal=i != last and temporal_up[i], up=i != last, init=init)
            for i, (a, o) in enumerate(zip(dims[:-1], dims[1:]))
        ])  # fmt: skip
        self.norm_out = RMSNorm(dims[-1], init=init)
        self.conv_out = CausalConv3d(dims[-1], 3 * PATCH * PATCH, init=init)

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        x = self.conv_in(x, cache)
        x = self.mid_block(x, cache)
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out(jax.nn.silu(self.norm_out(x)), cache)


def _run_chunks(step, first: jax.Array, rest: jax.Array) -> jax.Array:
    """``step(x, slots) -> (y, slots)`` on ``first [B, ...]`` then scanned over ``rest [N, B, ...]``.

    Returns the outputs concatenated along time ``[B, T_out, ...]``.
    """
    y0, slots = step(first, None)
    if rest.shape[0] == 0:
        return y0

    def body(carry, chunk):
        y, carry = step(chunk, carry)
        return carry, y

    _, ys = jax.lax.scan(body, slots, rest)  # [N, B, t, ...]
    ys = jnp.moveaxis(ys, 0, 1)
    ys = ys.reshape(ys.shape[0], ys.shape[1] * ys.shape[2], *ys.shape[3:])
    return jnp.concatenate([y0, ys], axis=1)


def _constrain(x: jax.Array, mesh, axis: str | None) -> jax.Array:
    """Shards the height axis (index 2 of ``[B, T, H, W, C]``) over ``axis`` when a mesh is given."""
    if mesh is None or axis is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(None, None, axis, None, None)))


class WanVAE(nnx.Module):
    """The Wan2.2 video VAE. ``encode``/``decode`` as in the module docstring; ``spatial_factor`` 16."""

    temporal_factor = 4

    def __init__(self, cfg: VAEConfig = VAEConfig(), seed: int | None = 0):
        """Random parameters from ``seed`` (numpy), or abstract ones (``seed=None``) to restore into."""
        init = Init(seed)
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        self.spatial_factor = PATCH * 2 ** (len(cfg.dim_mult) - 1)
        self.encoder = Encoder(cfg, init=init)
        self.quant_conv = PointwiseConv(2 * cfg.z_dim, 2 * cfg.z_dim, init=init)
        self.post_quant_conv = PointwiseConv(cfg.z_dim, cfg.z_dim, init=init)
        self.decoder = Decoder(cfg, init=init)

    def _stats(self) -> tuple[jax.Array, jax.Array]:
        if self.z_dim != len(LATENTS_MEAN):
            return jnp.zeros(self.z_dim), jnp.ones(self.z_dim)  # non-48 research configs: identity normalisation
        return jnp.asarray(LATENTS_MEAN, jnp.float32), jnp.asarray(LATENTS_STD, jnp.float32)

    def encode_mean(self, video: jax.Array, mesh=None, axis: str | None = None) -> jax.Array:
        """Traceable: posterior mean (un-normalised) ``[B, N+1, H/16, W/16, z_dim]`` of ``[B, 4N+1, H, W, 3]``."""
        x = _constrain(patchify.unshuffle(video, PATCH), mesh, axis)
        b, t = x.shape[:2]
        rest = x[:, 1:].reshape(b, (t - 1) // 4, 4, *x.shape[2:]).swapaxes(0, 1)

        def step(chunk, slots):
            cache = ChunkCache(slots)
            y = self.encoder(_constrain(chunk, mesh, axis), cache)
            return y, cache.finish()

        out = _run_chunks(step, x[:, :1], rest)
        kernel, bias = self.quant_conv.kernel[...], self.quant_conv.bias[...]
        return out @ kernel[:, : self.z_dim] + bias[: self.z_dim]  # mu half of quant_conv

    def decode_raw(self, z: jax.Array, mesh=None, axis: str | None = None) -> jax.Array:
        """Traceable: un-normalised latents ``[B, t, h, w, z_dim]`` → unclamped video ``[B, 1+4(t-1), 16h, 16w, 3]``."""
        x = _constrain(self.post_quant_conv(z), mesh, axis)

        def step(chunk, slots):
            cache = ChunkCache(slots)
            y = self.decoder(_constrain(chunk, mesh, axis), cache)
            return y, cache.finish()

        out = _run_chunks(step, x[:, :1], x[:, 1:, None].swapaxes(0, 1))
        return _constrain(patchify.shuffle(out, PATCH), mesh, axis)

    def normalize(self, mu: jax.Array) -> jax.Array:
        mean, std = self._stats()
        return (mu - mean) / std

    def denormalize(self, z: jax.Array) -> jax.Array:
        mean, std = self._stats()
        return z * std + mean

    def encode(self, video, mesh=None, axis: str | None = None) -> jax.Array:
        """``[B, 4N+1, H, W, 3]`` in [-1, 1] → normalised latents ``[B, N+1, H/16, W/16, z_dim]`` (compiled)."""
        from mirage_jax.models.latent_space import check_video  # noqa: PLC0415 (avoids an import cycle)

        check_video(jnp.shape(video), self.spatial_factor)
        graphdef, state = nnx.split(self)
        return _encode_jit(graphdef, state, jnp.asarray(video, jnp.float32), mesh, axis)

    def decode(self, latents, mesh=None, axis: str | None = None, clamp: bool = True) -> jax.Array:
        """Normalised latents ``[B, t, h, w, z_dim]`` → video ``[B, 1+4(t-1), 16h, 16w, 3]`` (compiled).

        ``clamp=False`` skips the final clamp to [-1, 1] (tiled decoding blends first, then clamps).
        """
        from mirage_jax.models.latent_space import check_latents  # noqa: PLC0415

        check_latents(jnp.shape(latents), self.z_dim)
        graphdef, state = nnx.split(self)
        return _decode_jit(graphdef, state, jnp.asarray(latents, jnp.float32), mesh, axis, clamp)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _encode_jit(graphdef, state, video, mesh, axis):
    vae = nnx.merge(graphdef, state)
    return vae.normalize(vae.encode_mean(video, mesh, axis))


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5))
def _decode_jit(graphdef, state, latents, mesh, axis, clamp):
    vae = nnx.merge(graphdef, state)
    video = vae.decode_raw(vae.denormalize(latents), mesh, axis)
    return jnp.clip(video, -1.0, 1.0) if clamp else video
