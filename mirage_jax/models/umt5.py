"""The umT5 text encoder (Wan's ``models_t5_umt5-xxl-enc``) in Flax NNX.

Pre-norm T5 blocks: ``x += attn(rms(x))`` with a per-layer bucketed relative-position bias (bidirectional,
``num_buckets`` 32, ``max_distance`` 128) and no q·k scaling; ``x += fc2(fc1(rms(x)) · gelu_tanh(gate(rms(x))))``;
final T5 RMSNorm (``x · rsqrt(mean(x²) + eps) · w`` in fp32). No biases anywhere. Attribute names follow the
original Wan checkpoint (``token_embedding``, ``blocks.i.{norm1,attn.{q,k,v,o},norm2,ffn.{gate,fc1,fc2},
pos_embedding}``, ``norm``); :mod:`mirage_jax.convert.umt5` also reads transformers' ``UMT5EncoderModel`` names.

``encode_padded(model, ids [B, L] int, lengths [B] int) -> [B, L, dim] float32``: padded keys are masked out of
attention and every row at or past a prompt's own length is zero (per prompt).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirage_jax.models.numpy_init import Init
from mirage_jax.models.params_io import read_config, restore_params, save_params


@dataclasses.dataclass(frozen=True)
class UMT5Config:
    """Encoder sizes (defaults: umT5-XXL)."""

    vocab_size: int = 256384
    dim: int = 4096
    num_layers: int = 24
    num_heads: int = 64
    head_dim: int = 64
    ffn_dim: int = 10240
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6

    @classmethod
    def from_config(cls, text_config) -> UMT5Config:
        """From ``config.text`` (``dim`` plus the ``umt5`` subsection)."""
        u = text_config.umt5
        return cls(int(u.vocab_size), int(text_config.dim), int(u.num_layers), int(u.num_heads), int(u.head_dim),
                   int(u.ffn_dim), int(u.num_buckets), int(u.max_distance), float(u.eps))  # fmt: skip


def relative_position_bucket(relative: np.ndarray, num_buckets: int, max_distance: int) -> np.ndarray:
    """T5 bidirectional buckets of ``key - query`` offsets (half the buckets per direction, log-spaced far)."""
    half = num_buckets // 2
    buckets = (relative > 0).astype(np.int32) * half
    distance = np.abs(relative)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        large = max_exact + (
            np.log(np.maximum(distance, 1) / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
        ).astype(np.int32)
    large = np.minimum(large, half - 1)
    return buckets + np.where(distance < max_exact, distance, large).astype(np.int32)


class Dense(nnx.Module):
    """Bias-free linear layer: ``kernel [in, out]``."""

    def __init__(self, in_dim: int, out_dim: int, *, init: Init):
        self.kernel = init.kernel((in_dim, out_dim))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...]


class T5Norm(nnx.Module):
    """T5 RMSNorm: ``x · rsqrt(mean(x²) + eps) · weight`` (fp32, no mean subtraction, no bias)."""

    def __init__(self, dim: int, eps: float, *, init: Init):
        self.weight = init.ones((dim,))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        return (xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + self.eps) * self.weight[...]).astype(x.dtype)


class Embedding(nnx.Module):
    """A lookup table ``embedding [num, dim]``."""

    def __init__(self, num: int, dim: int, *, init: Init):
        self.embedding = init.kernel((num, dim))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0)


class Attention(nnx.Module):
    """Multi-head self-attention without q·k scaling; ``bias [H, L, L]`` holds position bias and mask."""

    def __init__(self, cfg: UMT5Config, *, init: Init):
        inner = cfg.num_heads * cfg.head_dim
        self.num_heads = cfg.num_heads
        self.q, self.k, self.v = (Dense(cfg.dim, inner, init=init) for _ in range(3))
        self.o = Dense(inner, cfg.dim, init=init)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        b, length, _ = x.shape
        q, k, v = (f(x).reshape(b, length, self.num_heads, -1) for f in (self.q, self.k, self.v))
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k) + bias
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(x.dtype)
        return self.o(jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, length, -1))


class FeedForward(nnx.Module):
    """Gated GELU (tanh): ``fc2(fc1(x) · gelu(gate(x)))``."""

    def __init__(self, cfg: UMT5Config, *, init: Init):
        self.gate = Dense(cfg.dim, cfg.ffn_dim, init=init)
        self.fc1 = Dense(cfg.dim, cfg.ffn_dim, init=init)
        self.fc2 = Dense(cfg.ffn_dim, cfg.dim, init=init)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.fc1(x) * jax.nn.gelu(self.gate(x), approximate=True))


class Block(nnx.Module):
    """Pre-norm attention + FFN, with this layer's own relative-position table ``[num_buckets, heads]``."""

    def __init__(self, cfg: UMT5Config, *, init: Init):
        self.cfg = cfg
        self.norm1 = T5Norm(cfg.dim, cfg.eps, init=init)
        self.attn = Attention(cfg, init=init)
        self.norm2 = T5Norm(cfg.dim, cfg.eps, init=init)
        self.ffn = FeedForward(cfg, init=init)
        self.pos_embedding = Embedding(cfg.num_buckets, cfg.num_heads, init=init)

    def __call__(self, x: jax.Array, buckets: jax.Array, mask_bias: jax.Array) -> jax.Array:
        bias = self.pos_embedding(buckets).transpose(2, 0, 1)[None] + mask_bias  # [B, H, L, L]
        x = x + self.attn(self.norm1(x), bias)
        return x + self.ffn(self.norm2(x))


class UMT5Encoder(nnx.Module):
    """``__call__(ids [B, L], mask [B, L] bool) -> [B, L, dim]`` (rows of padded tokens not zeroed here)."""

    def __init__(self, cfg: UMT5Config = UMT5Config(), seed: int | None = 0):
        """Random parameters from ``seed`` (numpy), or abstract ones (``seed=None``) to restore into."""
        init = Init(seed)
        self.cfg = cfg
        self.dim = cfg.dim
        self.token_embedding = Embedding(cfg.vocab_size, cfg.dim, init=init)
        self.blocks = nnx.List([Block(cfg, init=init) for _ in range(cfg.num_layers)])
        self.norm = T5Norm(cfg.dim, cfg.eps, init=init)

    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        length = ids.shape[1]
        offsets = np.arange(length)[None, :] - np.arange(length)[:, None]
        buckets = jnp.asarray(relative_position_bucket(offsets, self.cfg.num_buckets, self.cfg.max_distance))
        mask_bias = jnp.where(mask[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
        x = self.token_embedding(ids)
        for block in self.blocks:
            x = block(x, buckets, mask_bias)
        return self.norm(x)


@functools.partial(jax.jit, static_argnums=0)
def _encode_jit(graphdef, state, ids, lengths):
    model = nnx.merge(graphdef, state)
    valid = jnp.arange(ids.shape[1])[None, :] < lengths[:, None]
    return jnp.where(valid[..., None], model(ids, valid), 0.0)


def encode_padded(model: UMT5Encoder, ids, lengths) -> jax.Array:
    """``ids [B, L]`` (padded), ``lengths [B]`` → ``[B, L, dim]`` with zeros at and past each length (compiled)."""
    ids = jnp.asarray(ids, jnp.int32)
    lengths = jnp.asarray(lengths, jnp.int32)
    if ids.ndim != 2 or lengths.shape != (ids.shape[0],):
        raise ValueError(f"ids [B, L] and lengths [B] expected, got {ids.shape} and {lengths.shape}")
    graphdef, state = nnx.split(model)
    return _encode_jit(graphdef, state, ids, lengths)


def save(model: UMT5Encoder, directory: str | Path) -> None:
    """Writes ``directory/state`` (Orbax) and ``directory/umt5_config.json``."""
    save_params(model, directory, dataclasses.asdict(model.cfg), "umt5_config.json")


def load(directory: str | Path, text_config=None) -> UMT5Encoder:
    """Reads :func:`save` output; with ``text_config`` (``config.text``) the sizes must match it."""
    cfg = UMT5Config(**read_config(directory, "umt5_config.json", "config.text.checkpoint"))
    if text_config is not None and UMT5Config.from_config(text_config) != cfg:
        raise ValueError(f"config.text sizes {UMT5Config.from_config(text_config)} differ from the checkpoint's {cfg}")
    return restore_params(UMT5Encoder(cfg, seed=None), directory)
