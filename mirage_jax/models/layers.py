"""Small building blocks of the Wan DiT: linear layers (with optional LoRA), norms, the timestep sinusoid.

Parameters are stored in ``param_dtype`` (fp32 by default) and cast to the compute dtype at use; norms run in
fp32 (Wan's numerics). Every parameter carries ``logical_axes`` metadata (see ``partitioning``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


class LoRAParam(nnx.Param):
    """A LoRA factor (``lora_a`` [in, r] or ``lora_b`` [r, out]); its own type so filters can select it."""


def _uniform(key, shape, bound, dtype):
    return jax.random.uniform(key, shape, dtype, -bound, bound)


class Linear(nnx.Module):
    """``y = x @ kernel + bias`` with kernel [in, out]; optional LoRA ``+ (alpha/r) * (x @ A) @ B``.

    Init: Xavier-uniform kernel and zero bias (Wan's init), or all zeros with ``zero_init`` (VACE ``after_proj``,
    output head). LoRA follows PEFT: ``A`` Kaiming-uniform, ``B`` zeros, so a fresh LoRA changes nothing.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        axes: tuple[str | None, str | None],
        *,
        rngs: nnx.Rngs,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        zero_init: bool = False,
        lora_rank: int = 0,
        lora_alpha: float = 1.0,
    ):
        key = rngs.params()
        if zero_init:
            kernel = jnp.zeros((in_features, out_features), param_dtype)
        else:
            kernel = _uniform(key, (in_features, out_features), math.sqrt(6.0 / (in_features + out_features)),
                              param_dtype)
        self.kernel = nnx.Param(kernel, logical_axes=axes)
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype), logical_axes=(axes[1],))
        self.dtype = dtype
        if lora_rank > 0:
            a = _uniform(rngs.params(), (in_features, lora_rank), 1.0 / math.sqrt(in_features), param_dtype)
            self.lora_a = LoRAParam(a, logical_axes=(axes[0], None))
            self.lora_b = LoRAParam(jnp.zeros((lora_rank, out_features), param_dtype), logical_axes=(None, axes[1]))
            self.lora_scale = float(lora_alpha) / lora_rank
        else:
            self.lora_a = self.lora_b = None
            self.lora_scale = 0.0

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(self.dtype)
        y = x @ self.kernel[...].astype(self.dtype) + self.bias[...].astype(self.dtype)
        if self.lora_a is not None:
            low = x @ self.lora_a[...].astype(self.dtype)
            y = y + (low @ self.lora_b[...].astype(self.dtype)) * jnp.asarray(self.lora_scale, self.dtype)
        return y


class RMSNorm(nnx.Module):
    """RMS normalisation over the last dim with a learned scale, computed in fp32 (q/k norm of Wan)."""

    def __init__(self, dim: int, axis_name: str | None, *, eps: float, dtype=jnp.float32, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=(axis_name,))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...].astype(jnp.float32)).astype(self.dtype)


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """Affine-free LayerNorm over the last dim in fp32 (returns fp32)."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return (x32 - mean) * jax.lax.rsqrt(var + eps)


class LayerNorm(nnx.Module):
    """LayerNorm with learned scale and bias, in fp32 (the norm in front of Wan's cross-attention)."""

    def __init__(self, dim: int, *, eps: float, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("embed",))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype), logical_axes=("embed",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        return layer_norm(x, self.eps) * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)


def timestep_sinusoid(t: jax.Array, dim: int) -> jax.Array:
    """``[cos(t w_i), sin(t w_i)]`` (cos half first), ``w_i = 10000^(-i/(dim/2))``; fp32, shape ``t.shape + (dim,)``."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = t.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
