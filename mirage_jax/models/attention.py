"""Multi-head attention kernels behind one interface, selected by name (``config.model.attention``).

``attend(q, k, v, key_mask, impl)`` with q [B, T, H, d], k/v [B, S, H, d], key_mask [B, S] bool or None
(False = padded key, never attended to) returns [B, T, H, d]. Implementations:

* ``"xla"``: ``jax.nn.dot_product_attention(implementation="xla")``; runs everywhere (the CPU default).
* ``"cudnn"``: cuDNN fused (flash) attention through ``jax.nn.dot_product_attention``; needs an NVIDIA GPU.
* ``"splash"``: the Pallas TPU splash-attention kernel (key padding through segment ids); needs a TPU.
* ``"chunked"``: pure XLA, queries in blocks of ``QUERY_CHUNK`` under ``jax.lax.map`` + ``jax.checkpoint``, so
  only one block's scores [B, H, chunk, S] live at a time, in the forward and the backward (memory-efficient
  attention for any backend, e.g. long sequences on CPU or for AOT memory plans).

``check_available(impl)`` raises a ``ValueError`` naming the missing platform before anything is compiled.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_PLATFORM = {"xla": None, "cudnn": "gpu", "splash": "tpu", "chunked": None}
QUERY_CHUNK = 1024


def check_available(impl: str) -> None:
    """Raises ``ValueError`` if ``impl`` is unknown or needs a platform that the default backend is not."""
    if impl not in _PLATFORM:
        raise ValueError(f"config.model.attention={impl!r}: expected one of {sorted(_PLATFORM)}")
    needed = _PLATFORM[impl]
    if needed is not None and jax.default_backend() != needed:
        raise ValueError(
            f"config.model.attention={impl!r} needs a {needed.upper()} backend, but JAX runs on "
            f"{jax.default_backend()!r}; use attention='xla' here"
        )


def _dot_product(q, k, v, key_mask, implementation):
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


def chunked_attention(q, k, v, key_mask, chunk: int = QUERY_CHUNK):
    """XLA attention over query blocks of ``chunk`` tokens (rematerialised per block in the backward)."""
    b, t, h, d = q.shape
    if t <= chunk:
        return _dot_product(q, k, v, key_mask, "xla")
    n = -(-t // chunk)
    blocks = jnp.pad(q, ((0, 0), (0, n * chunk - t), (0, 0), (0, 0))).reshape(b, n, chunk, h, d).swapaxes(0, 1)
    out = jax.lax.map(jax.checkpoint(lambda qi: _dot_product(qi, k, v, key_mask, "xla")), blocks)
    return out.swapaxes(0, 1).reshape(b, n * chunk, h, d)[:, :t]


def _splash(q, k, v, key_mask, block: int = 512):
    """Splash attention per batch element; sequences padded to ``block`` multiples, padded/masked keys excluded
    through segment ids. (Under a multi-device mesh it must run inside ``shard_map``; untested on CPU.)"""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    batch, t, heads, d = q.shape
    s = k.shape[1]
    tp, sp = t + (-t % block), s + (-s % block)
    mask = sm.MultiHeadMask([sm.FullMask((tp, sp)) for _ in range(heads)])
    kernel = sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1)
    valid = jnp.ones((batch, s), bool) if key_mask is None else key_mask
    kv_ids = jnp.where(jnp.pad(valid, ((0, 0), (0, sp - s))), 0, 1).astype(jnp.int32)
    q_ids = jnp.zeros((batch, tp), jnp.int32)
    q = q * jnp.asarray(1.0 / math.sqrt(d), q.dtype)
    qh = jnp.pad(q, ((0, 0), (0, tp - t), (0, 0), (0, 0))).transpose(0, 2, 1, 3)  # [B, H, N, d]
    kh, vh = (jnp.pad(a, ((0, 0), (0, sp - s), (0, 0), (0, 0))).transpose(0, 2, 1, 3) for a in (k, v))
    out = jax.vmap(lambda a, b, c, qi, ki: kernel(a, b, c, segment_ids=sk.SegmentIds(qi, ki)))(
        qh, kh, vh, q_ids, kv_ids)
    return out.transpose(0, 2, 1, 3)[:, :t]


def attend(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None, impl: str = "xla") -> jax.Array:
    """Softmax attention with scale ``1/sqrt(d)``; see the module docstring for shapes and ``impl``."""
    if impl == "xla":
        return _dot_product(q, k, v, key_mask, "xla")
    if impl == "cudnn":
        return _dot_product(q, k, v, key_mask, "cudnn")
    if impl == "splash":
        return _splash(q, k, v, key_mask)
    if impl == "chunked":
        return chunked_attention(q, k, v, key_mask)
    raise ValueError(f"attention impl {impl!r}: expected one of {sorted(_PLATFORM)}")
