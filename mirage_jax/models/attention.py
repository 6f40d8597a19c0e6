"""Multi-head attention kernels behind one interface, selected by name (``config.model.attention``).

``attend(q, k, v, key_mask, impl)`` with q [B, T, H, d], k/v [B, S, H, d], key_mask [B, S] bool or None
(False = padded key, never attended to) returns [B, T, H, d]. Implementations:

* ``"xla"``: ``jax.nn.dot_product_attention(implementation="xla")``; runs everywhere (the CPU default).
* ``"cudnn"``: cuDNN fused (flash) attention through ``jax.nn.dot_product_attention``; needs an NVIDIA GPU.
* ``"splash"``: the Pallas TPU splash-attention kernel (key padding through segment ids); needs a TPU.
* ``"chunked"``: :func:`flash_attention`, pure JAX on any backend: an online-softmax forward over blocks of
  ``Q_BLOCK`` queries and ``KV_BLOCK`` keys and a custom VJP that saves q, k, v, the output and the
  log-sum-exp and recomputes the probabilities block by block, so only one block pair's [B, H, Q_BLOCK, KV_BLOCK]
  scores (with their probabilities and gradients) live at a time, in the forward and in the backward: memory
  linear in the sequence length (long sequences, AOT memory plans), and the fastest backend on CPU.

``check_available(impl)`` raises a ``ValueError`` naming the missing platform before anything is compiled.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_PLATFORM = {"xla": None, "cudnn": "gpu", "splash": "tpu", "chunked": None}
Q_BLOCK = 1024  # the `chunked` backend's largest blocks, tuned on the 2-core CPU at 1280 and 5120 tokens
KV_BLOCK = 320  # (docs/benchmarks.md, DiT section); a length is split into equal blocks no larger than these


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


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None,
                      chunk: int | None = None) -> jax.Array:
    """The ``chunked`` backend: :func:`flash_attention` with ``Q_BLOCK``/``KV_BLOCK`` (or ``chunk`` for both)."""
    q_block, kv_block = (Q_BLOCK, KV_BLOCK) if chunk is None else (chunk, chunk)
    return flash_attention(q, k, v, key_mask, q_block=q_block, kv_block=kv_block)


# ---- flash attention: online softmax forward, block-recomputing backward ---------------------------------------
# Blocked layout inside: q [nq, B, H, qb, d], k/v [nk, B, H, kb, d], key validity [nk, B, kb] bool (or None when
# every key is valid); scores, running max/sum and the log-sum-exp are fp32 whatever the input dtype.

_START_MAX = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: a block whose keys are all masked stays NaN-free


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None, *,
                    q_block: int, kv_block: int) -> jax.Array:
    """Softmax attention (scale ``1/sqrt(d)``) computed one [B, H, q_block, kv_block] block pair at a time.

    q [B, T, H, d], k/v [B, S, H, d], key_mask [B, S] bool or None -> [B, T, H, d]. The backward (custom VJP)
    saves q, k, v, the output and the log-sum-exp and recomputes the probabilities block by block, so neither
    pass materialises the T x S scores. The blocks are upper bounds: a length is split into equal blocks of at
    most that size (1280 tokens with 1024 -> 2 x 640), the last padded (padded keys never count).
    A batch element whose keys are all masked gets the mean of its values, with zero gradient to q and k,
    exactly as ``jax.nn.dot_product_attention`` (its masked logits are one equal large negative number).
    """
    t, s = q.shape[1], k.shape[1]
    q_block, kv_block = _balanced_block(t, q_block), _balanced_block(s, kv_block)
    if key_mask is not None:
        q, key_mask = _uniform_where_all_masked(q, key_mask)
    valid = _key_validity(key_mask, k.shape[0], s, kv_block)
    out = _flash(_to_blocks(q, q_block), _to_blocks(k, kv_block), _to_blocks(v, kv_block), valid)
    return _from_blocks(out, t)


def _balanced_block(length: int, max_block: int) -> int:
    """The smallest block that covers ``length`` in as few blocks of at most ``max_block`` as possible."""
    count = -(-length // max_block)
    return -(-length // count)


def _uniform_where_all_masked(q: jax.Array, key_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """For batch elements with no valid key: q -> 0 and every key valid (equal scores: the mean of v, as XLA)."""
    none_valid = ~jnp.any(key_mask, axis=1)  # [B]
    q = jnp.where(none_valid[:, None, None, None], jnp.zeros_like(q), q)
    return q, key_mask | none_valid[:, None]


def _to_blocks(x: jax.Array, block: int) -> jax.Array:
    """[B, N, H, d] -> [n, B, H, block, d], zero-padded to a multiple of ``block``."""
    b, n, h, d = x.shape
    count = -(-n // block)
    x = jnp.pad(x, ((0, 0), (0, count * block - n), (0, 0), (0, 0)))
    return x.reshape(b, count, block, h, d).transpose(1, 0, 3, 2, 4)


def _from_blocks(x: jax.Array, length: int) -> jax.Array:
    """[n, B, H, block, d] -> [B, length, H, d] (the padding dropped)."""
    count, b, h, block, d = x.shape
    return x.transpose(1, 0, 3, 2, 4).reshape(b, count * block, h, d)[:, :length]


def _key_validity(key_mask: jax.Array | None, batch: int, s: int, kv_block: int) -> jax.Array | None:
    """[nk, B, kv_block] bool (False: masked or padding), or None when every key is valid."""
    padding = -s % kv_block
    if key_mask is None and padding == 0:
        return None
    valid = jnp.ones((batch, s), bool) if key_mask is None else key_mask
    valid = jnp.pad(valid, ((0, 0), (0, padding)))
    return valid.reshape(batch, -1, kv_block).swapaxes(0, 1)


def _scores(qi: jax.Array, kj: jax.Array, valid_j: jax.Array | None) -> jax.Array:
    """Scaled fp32 scores [B, H, qb, kb] of one block pair; invalid keys -inf."""
    s = jnp.einsum("bhqd,bhkd->bhqk", qi, kj, preferred_element_type=jnp.float32)
    s = s * jnp.float32(1.0 / math.sqrt(qi.shape[-1]))
    return s if valid_j is None else jnp.where(valid_j[:, None, None, :], s, -jnp.inf)


def _forward_query_block(qi: jax.Array, kh: jax.Array, vh: jax.Array,
                         valid: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """One query block [B, H, qb, d] against all key blocks (online softmax) -> (out [B, H, qb, d], lse [B, H, qb])."""

    def step(carry, kv):
        row_max, row_sum, acc = carry
        kj, vj, valid_j = kv
        s = _scores(qi, kj, valid_j)
        new_max = jnp.maximum(row_max, s.max(-1))
        p = jnp.exp(s - new_max[..., None])
        rescale = jnp.exp(row_max - new_max)
        row_sum = rescale * row_sum + p.sum(-1)
        pv = jnp.einsum("bhqk,bhkd->bhqd", p.astype(vj.dtype), vj, preferred_element_type=jnp.float32)
        return (new_max, row_sum, rescale[..., None] * acc + pv), None

    rows = qi.shape[:-1]
    init = (jnp.full(rows, _START_MAX, jnp.float32), jnp.zeros(rows, jnp.float32),
            jnp.zeros((*rows, vh.shape[-1]), jnp.float32))
    (row_max, row_sum, acc), _ = jax.lax.scan(step, init, (kh, vh, valid))
    return (acc / row_sum[..., None]).astype(qi.dtype), row_max + jnp.log(row_sum)


def _flash_forward(qh: jax.Array, kh: jax.Array, vh: jax.Array,
                   valid: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """(out [nq, B, H, qb, d], lse [nq, B, H, qb]) over query blocks, one at a time."""
    return jax.lax.map(lambda qi: _forward_query_block(qi, kh, vh, valid), qh)


def _backward_key_block(kj: jax.Array, vj: jax.Array, valid_j: jax.Array | None, qh: jax.Array, dout: jax.Array,
                        lse: jax.Array, delta: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Gradients from one key block against every query block: dq parts [nq, B, H, qb, d] (fp32), dk_j, dv_j.

    Flash-attention-2: P = exp(S - lse), dV += P^T dO, dP = dO V^T, dS = P (dP - rowsum(dO * O)),
    dK += dS^T Q, dQ += dS K (the 1/sqrt(d) applied once by the caller)."""

    def step(carry, rows):
        dk, dv = carry
        qi, doi, lse_i, delta_i = rows
        p = jnp.exp(_scores(qi, kj, valid_j) - lse_i[..., None])
        dv = dv + jnp.einsum("bhqk,bhqd->bhkd", p.astype(doi.dtype), doi, preferred_element_type=jnp.float32)
        dp = jnp.einsum("bhqd,bhkd->bhqk", doi, vj, preferred_element_type=jnp.float32)
        ds = p * (dp - delta_i[..., None])
        dk = dk + jnp.einsum("bhqk,bhqd->bhkd", ds.astype(qi.dtype), qi, preferred_element_type=jnp.float32)
        dq_i = jnp.einsum("bhqk,bhkd->bhqd", ds.astype(kj.dtype), kj, preferred_element_type=jnp.float32)
        return (dk, dv), dq_i

    zeros = jnp.zeros(kj.shape, jnp.float32)
    (dk, dv), dq_parts = jax.lax.scan(step, (zeros, zeros), (qh, dout, lse, delta))
    return dq_parts, dk, dv


def _flash_backward(residuals: tuple, dout: jax.Array) -> tuple:
    """Cotangents of (qh, kh, vh, valid) from the saved residuals, key blocks outer, query blocks inner."""
    qh, kh, vh, valid, out, lse = residuals
    delta = jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # [nq, B, H, qb]

    def over_key_blocks(dq, kv):
        dq_parts, dk, dv = _backward_key_block(*kv, qh, dout, lse, delta)
        return dq + dq_parts, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(over_key_blocks, jnp.zeros(qh.shape, jnp.float32), (kh, vh, valid))
    scale = jnp.float32(1.0 / math.sqrt(qh.shape[-1]))
    return (dq * scale).astype(qh.dtype), (dk * scale).astype(kh.dtype), dv.astype(vh.dtype), None


@jax.custom_vjp
def _flash(qh: jax.Array, kh: jax.Array, vh: jax.Array, valid: jax.Array | None) -> jax.Array:
    """Blocked attention output [nq, B, H, qb, d]; differentiable in q, k, v through the custom VJP."""
    return _flash_forward(qh, kh, vh, valid)[0]


def _flash_fwd_rule(qh: jax.Array, kh: jax.Array, vh: jax.Array, valid: jax.Array | None) -> tuple:
    """The forward that also returns the residuals of the backward: inputs, output, log-sum-exp."""
    out, lse = _flash_forward(qh, kh, vh, valid)
    return out, (qh, kh, vh, valid, out, lse)


_flash.defvjp(_flash_fwd_rule, _flash_backward)


def _splash(q, k, v, key_mask, block: int = 512, interpret: bool = False):
    """Splash attention per batch element; sequences padded to ``block`` multiples, padded/masked keys excluded
    through segment ids. (Under a multi-device mesh it must run inside ``shard_map``.) ``interpret``: run the
    kernel in Pallas interpret mode (any backend, e.g. CPU tests: tests/test_splash_interpret.py)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    batch, t, heads, d = q.shape
    s = k.shape[1]
    tp, sp = t + (-t % block), s + (-s % block)
    mask = sm.MultiHeadMask([sm.FullMask((tp, sp)) for _ in range(heads)])
    kernel = sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1, interpret=interpret)
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
