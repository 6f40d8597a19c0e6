"""The Wan2.2 VAE (``AutoencoderKLWan`` 2.2 layout) in Flax NNX, with compiled causal chunked encode/decode.

``WanVAE.encode(video [B, T, H, W, 3] in [-1, 1], T = 4N+1) -> [B, N+1, H/16, W/16, z_dim]`` (normalised
posterior mean) and ``WanVAE.decode(latents) -> [B, 1+4(t-1), H, W, 3]`` clamped to [-1, 1].

Chunk schedule (exactly the official one): the encoder sees frame 0 alone, then groups of 4 frames; the
decoder sees one latent frame at a time. The first chunk is traced once with its special cases; the identical
steady-state chunks are the body of one ``jax.lax.scan`` whose carry is the explicit cache (a flat list of
arrays, see :mod:`mirage_jax.models.vae.cache`). The whole encode/decode is one ``jax.jit`` per input shape
(on CPU with Eigen's threaded convolutions, see :mod:`mirage_jax.xla_options`).
Each network also runs as two chunked passes with their own caches, the same arithmetic as one pass (every
layer is causal per chunk), so :mod:`.tiling` can tile only the local parts — encoder: the local down path,
then the mid block (global per-frame attention) and output head at latent resolution; decoder: conv_in and
the mid block at latent resolution, then the local up path.

Spatial sharding: pass ``mesh`` and a mesh ``axis`` to ``encode``/``decode`` to shard the frame height over
that axis (``H`` must divide by 16·axis size); XLA's SPMD partitioner inserts the conv halo exchanges and the
gathers for the per-frame attention, and the result equals the unsharded one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from mirage_jax.models.numpy_init import Init
from mirage_jax.models.vae import patchify
from mirage_jax.models.vae.cache import ChunkCache
from mirage_jax.models.vae.constants import LATENTS_MEAN, LATENTS_STD
from mirage_jax.models.vae.layers import CausalConv3d, DownBlock, MidBlock, PointwiseConv, RMSNorm, UpBlock
from mirage_jax.video_shapes import FRAMES_PER_LATENT, check_latents, check_video
from mirage_jax.xla_options import conv_jit

PIXEL_UNSHUFFLE = 2  # 2×2 pixel-unshuffle in front of the encoder (RGB → 12 channels)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture sizes (defaults: the real Wan2.2 VAE, 705 M parameters) and the latent statistics.

    ``latents_mean`` / ``latents_std`` (``[z_dim]`` each) normalise the posterior mean: ``z = (mu - mean) / std``.
    ``None`` means the built-in Wan2.2 constants for ``z_dim = 48`` (the official ``.pth`` does not carry
    them) and no normalisation otherwise; a diffusers folder's own values are kept (``convert.vae``).
    """

    base_dim: int = 160
    decoder_base_dim: int = 256
    z_dim: int = 48
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None

    def __post_init__(self):
        for name in ("latents_mean", "latents_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.z_dim:
                raise ValueError(f"VAE {name}: expected {self.z_dim} values (z_dim), got {len(value)}")
        if self.latents_std is not None and min(self.latents_std) <= 0:
            raise ValueError(f"VAE latents_std: expected positive values, got min {min(self.latents_std)}")

    def architecture(self) -> VAEConfig:
        """The sizes only (statistics dropped): what must match between a config and a checkpoint."""
        return dataclasses.replace(self, latents_mean=None, latents_std=None)

    def statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` used to normalise latents (see the class docstring for the defaults)."""
        if self.latents_mean is not None and self.latents_std is not None:
            return tuple(self.latents_mean), tuple(self.latents_std)
        if self.z_dim == len(LATENTS_MEAN):
            return LATENTS_MEAN, LATENTS_STD
        return (0.0,) * self.z_dim, (1.0,) * self.z_dim

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
        self.conv_in = CausalConv3d(3 * PIXEL_UNSHUFFLE * PIXEL_UNSHUFFLE, dims[0], init=init)
        self.down_blocks = nnx.List([
            DownBlock(a, o, cfg.num_res_blocks, temporal=i != last and cfg.temporal_downsample[i], down=i != last,
                      init=init)
            for i, (a, o) in enumerate(zip(dims[:-1], dims[1:]))
        ])  # fmt: skip
        self.mid_block = MidBlock(dims[-1], init=init)
        self.norm_out = RMSNorm(dims[-1], init=init)
        self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim, init=init)

    def down(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        """The spatially local part: conv_in → down blocks (``[B, t, H/2, W/2, 12] -> [B, t', H/16, W/16, C]``)."""
        x = self.conv_in(x, cache)
        for block in self.down_blocks:
            x = block(x, cache)
        return x

    def tail(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        """At latent resolution: mid block (global per-frame attention) → norm, SiLU → conv_out."""
        x = self.mid_block(x, cache)
        return self.conv_out(jax.nn.silu(self.norm_out(x)), cache)

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        return self.tail(self.down(x, cache), cache)


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
        self.conv_out = CausalConv3d(dims[-1], 3 * PIXEL_UNSHUFFLE * PIXEL_UNSHUFFLE, init=init)

    def head(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        """At latent resolution: conv_in → mid block (global per-frame attention)."""
        return self.mid_block(self.conv_in(x, cache), cache)

    def up(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        """The spatially local, high-resolution part: up blocks → norm, SiLU → conv_out."""
        for block in self.up_blocks:
            x = block(x, cache)
        return self.conv_out(jax.nn.silu(self.norm_out(x)), cache)

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        return self.up(self.head(x, cache), cache)


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

    temporal_factor = FRAMES_PER_LATENT

    def __init__(self, cfg: VAEConfig = VAEConfig(), seed: int | None = 0, compute_dtype: str = "float32"):
        """Random parameters from ``seed`` (numpy), or abstract ones (``seed=None``) to restore into.

        ``compute_dtype``: the dtype the compiled encode/decode run in (parameters and activations cast to it;
        outputs float32); ``"bfloat16"`` is the official inference precision and halves activation memory.
        """
        init = Init(seed)
        self.cfg = cfg
        self.compute_dtype = str(jnp.dtype(compute_dtype))
        self.z_dim = cfg.z_dim
        self.spatial_factor = PIXEL_UNSHUFFLE * 2 ** (len(cfg.dim_mult) - 1)
        self.encoder = Encoder(cfg, init=init)
        self.quant_conv = PointwiseConv(2 * cfg.z_dim, 2 * cfg.z_dim, init=init)
        self.post_quant_conv = PointwiseConv(cfg.z_dim, cfg.z_dim, init=init)
        self.decoder = Decoder(cfg, init=init)

    def _stats(self) -> tuple[jax.Array, jax.Array]:
        mean, std = self.cfg.statistics()
        return jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

    def _chunked(self, part, x: jax.Array, first_len: int, chunk_len: int, mesh, axis) -> jax.Array:
        """Runs the causal ``part(x, cache)`` over time chunks of ``x [B, T, ...]`` (``first_len`` frames, then
        ``chunk_len`` each) with its own explicit cache; returns the outputs concatenated along time."""
        b, t = x.shape[:2]
        rest = x[:, first_len:].reshape(b, (t - first_len) // chunk_len, chunk_len, *x.shape[2:]).swapaxes(0, 1)

        def step(chunk, slots):
            cache = ChunkCache(slots)
            y = part(_constrain(chunk, mesh, axis), cache)
            return y, cache.finish()

        return _constrain(_run_chunks(step, x[:, :first_len], rest), mesh, axis)

    def encode_features(self, video: jax.Array, mesh=None, axis: str | None = None) -> jax.Array:
        """Traceable, spatially local: ``[B, 4N+1, H, W, 3]`` → down-path features ``[B, N+1, H/16, W/16, C]``.

        The chunks: frame 0 alone, then groups of 4 (the official schedule); each gives one latent frame.
        """
        x = _constrain(patchify.unshuffle(video, PIXEL_UNSHUFFLE), mesh, axis)
        return self._chunked(self.encoder.down, x, 1, 4, mesh, axis)

    def _mu(self, out: jax.Array) -> jax.Array:
        kernel, bias = self.quant_conv.kernel[...], self.quant_conv.bias[...]
        return out @ kernel[:, : self.z_dim] + bias[: self.z_dim]  # mu half of quant_conv

    def encode_tail(self, features: jax.Array, mesh=None, axis: str | None = None) -> jax.Array:
        """Traceable: down-path features → posterior mean (un-normalised) ``[B, N+1, H/16, W/16, z_dim]``."""
        return self._mu(self._chunked(self.encoder.tail, features, 1, 1, mesh, axis))

    def encode_mean(self, video: jax.Array, mesh=None, axis: str | None = None) -> jax.Array:
        """Traceable: posterior mean (un-normalised) ``[B, N+1, H/16, W/16, z_dim]`` of ``[B, 4N+1, H, W, 3]``.

        One chunked pass through the whole encoder (= ``encode_tail(encode_features(video))``, faster).
        """
        x = _constrain(patchify.unshuffle(video, PIXEL_UNSHUFFLE), mesh, axis)
        return self._mu(self._chunked(self.encoder, x, 1, 4, mesh, axis))

    def decode_features(self, z: jax.Array, mesh=None, axis: str | None = None) -> jax.Array:
        """Traceable: un-normalised latents ``[B, t, h, w, z_dim]`` → head features ``[B, t, h, w, C]``
        (post_quant_conv, conv_in, mid block with its global per-frame attention; one latent frame per chunk)."""
        return self._chunked(self.decoder.head, self.post_quant_conv(z), 1, 1, mesh, axis)

    def decode_up(self, features: jax.Array, mesh=None, axis: str | None = None) -> jax.Array:
        """Traceable, spatially local: head features ``[B, t, h, w, C]`` → unclamped video
        ``[B, 1+4(t-1), 16h, 16w, 3]`` (one latent frame per chunk, its own causal cache)."""
        out = self._chunked(self.decoder.up, features, 1, 1, mesh, axis)
        return _constrain(patchify.shuffle(out, PIXEL_UNSHUFFLE), mesh, axis)

    def decode_raw(self, z: jax.Array, mesh=None, axis: str | None = None) -> jax.Array:
        """Traceable: un-normalised latents ``[B, t, h, w, z_dim]`` → unclamped video ``[B, 1+4(t-1), 16h, 16w, 3]``.

        One chunked pass through the whole decoder (= ``decode_up(decode_features(z))``, faster).
        """
        out = self._chunked(self.decoder, self.post_quant_conv(z), 1, 1, mesh, axis)
        return _constrain(patchify.shuffle(out, PIXEL_UNSHUFFLE), mesh, axis)

    def normalize(self, mu: jax.Array) -> jax.Array:
        mean, std = self._stats()
        return (mu - mean) / std

    def denormalize(self, z: jax.Array) -> jax.Array:
        mean, std = self._stats()
        return z * std + mean

    def encode(self, video, mesh=None, axis: str | None = None) -> jax.Array:
        """``[B, 4N+1, H, W, 3]`` in [-1, 1] → normalised latents ``[B, N+1, H/16, W/16, z_dim]`` (compiled)."""
        check_video(jnp.shape(video), self.spatial_factor)
        graphdef, state = nnx.split(self)
        return _encode_jit(graphdef, state, jnp.asarray(video, jnp.float32), mesh, axis)

    def decode(self, latents, mesh=None, axis: str | None = None) -> jax.Array:
        """Normalised latents ``[B, t, h, w, z_dim]`` → video ``[B, 1+4(t-1), 16h, 16w, 3]`` in [-1, 1] (compiled)."""
        check_latents(jnp.shape(latents), self.z_dim)
        graphdef, state = nnx.split(self)
        return _decode_jit(graphdef, state, jnp.asarray(latents, jnp.float32), mesh, axis)

    def compiled(self, method: str, x) -> jax.Array:
        """``self.<method>(x)`` as one compiled function (cached per method and shape), e.g. the parts
        ``encode_features`` / ``encode_tail`` / ``decode_features`` / ``decode_up`` that tiling runs separately."""
        graphdef, state = nnx.split(self)
        return _method_jit(graphdef, method, state, jnp.asarray(x, jnp.float32))


def _in_compute_dtype(graphdef, state) -> tuple[WanVAE, jnp.dtype]:
    """The VAE with its floating parameters cast to its ``compute_dtype`` (traced: a cast inside the program)."""
    dtype = jnp.dtype(nnx.merge(graphdef, state).compute_dtype)
    if dtype != jnp.float32:
        state = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    return nnx.merge(graphdef, state), dtype


@conv_jit(static_argnums=(0, 1))
def _method_jit(graphdef, method, state, x):
    vae, dtype = _in_compute_dtype(graphdef, state)
    return getattr(vae, method)(x.astype(dtype)).astype(jnp.float32)


@conv_jit(static_argnums=(0, 3, 4))
def _encode_jit(graphdef, state, video, mesh, axis):
    vae, dtype = _in_compute_dtype(graphdef, state)
    return vae.normalize(vae.encode_mean(video.astype(dtype), mesh, axis).astype(jnp.float32))


@conv_jit(static_argnums=(0, 3, 4))
def _decode_jit(graphdef, state, latents, mesh, axis):
    vae, dtype = _in_compute_dtype(graphdef, state)
    video = vae.decode_raw(vae.denormalize(latents).astype(dtype), mesh, axis)
    return jnp.clip(video.astype(jnp.float32), -1.0, 1.0)
