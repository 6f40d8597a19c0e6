"""Attention over a video's frames, with the tokens split over the mesh axis ``context`` (context parallelism).

The DiT keeps its activations as ``[B, F, S, D]`` (frames × tokens per frame) and the rule
``("length", "context")`` splits the token axis ``S`` over the ``context`` mesh axis: every device holds
``S / cp`` tokens of every frame for all the token-wise work of a block (linears, norms, FFN), so activation
memory falls by ``cp`` along the sequence. Attention is the one step that mixes tokens. ``attend_frames``
runs it in a ``shard_map`` over ``context`` only (the other mesh axes stay automatic):

* self-attention (Ulysses style): one all-to-all trades the token split for a head split, so each device
  holds all ``F·S`` tokens of ``H / cp`` heads and attends over the full sequence with any backend of
  ``mirage_jax.models.attention``; a second all-to-all trades back. The all-to-all concatenates the token
  blocks in device order, which is the tokens' own order, so RoPE (applied before) and the key mask line up;
* cross-attention (keys are the text, not split): no communication, each device attends its own queries.

Without a ``context`` axis larger than 1 in the current mesh it is plain attention over the flattened
frames, the same program as before context parallelism existed. Needs ``num_heads`` and ``S`` divisible by
``cp`` (``mirage_jax.config_checks`` checks both).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from mirage_jax.models.attention import attend

CONTEXT_AXIS = "context"
_TOKENS = PartitionSpec(None, None, CONTEXT_AXIS, None, None)  # [B, F, S, H, d] split along S


def context_size() -> int:
    """Size of the ``context`` axis of the current mesh (``jax.set_mesh``); 1 without one."""
    mesh = jax.sharding.get_abstract_mesh()
    return 1 if mesh.empty or CONTEXT_AXIS not in mesh.axis_names else int(mesh.shape[CONTEXT_AXIS])


def _flat(a: jax.Array) -> jax.Array:
    """``[B, F, S, H, d]`` -> ``[B, F·S, H, d]``; ``[B, L, H, d]`` unchanged."""
    return a.reshape(a.shape[0], -1, *a.shape[-2:])


def _attend_local(q, k, v, key_mask, *, impl: str) -> jax.Array:
    """q ``[B, F, S, H, d]`` over k/v ``[B, F, S, H, d]`` or ``[B, L, H, d]`` -> ``[B, F, S, H, d]``."""
    return attend(_flat(q), _flat(k), _flat(v), key_mask, impl).reshape(q.shape)


def _ulysses(q, k, v, key_mask, *, impl: str) -> jax.Array:
    """Inside ``shard_map``: tokens split -> heads split, full-sequence attention, and back."""
    to_heads = functools.partial(jax.lax.all_to_all, axis_name=CONTEXT_AXIS, split_axis=3, concat_axis=2, tiled=True)
    out = _attend_local(to_heads(q), to_heads(k), to_heads(v), key_mask, impl=impl)
    return jax.lax.all_to_all(out, CONTEXT_AXIS, split_axis=2, concat_axis=3, tiled=True)


def _attend_text(q, k, v, key_mask, *, impl: str) -> jax.Array:
    """Inside ``shard_map``: the device's queries over the whole text (``k``/``v`` arrive in float32, see
    ``attend_frames``) in the queries' dtype."""
    return _attend_local(q, k.astype(q.dtype), v.astype(q.dtype), key_mask, impl=impl)


def attend_frames(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None, impl: str) -> jax.Array:
    """Softmax attention of ``q [B, F, S, H, d]`` over ``k``/``v``: the same frames (self-attention, 5-D) or a
    ``[B, L, H, d]`` sequence (cross-attention); ``key_mask [B, F·S]`` bool or None. Returns ``[B, F, S, H, d]``."""
    if context_size() == 1:
        return _attend_local(q, k, v, key_mask, impl=impl)
    self_attention = k.ndim == 5
    body = _ulysses if self_attention else _attend_text
    kv_spec = _TOKENS if self_attention else PartitionSpec()
    if not self_attention:  # the text's gradient is summed over the context axis: in float32 (XLA:CPU aborts
        k, v = k.astype(jnp.float32), v.astype(jnp.float32)  # compiling a bfloat16 one: AllReducePromotion)
    if key_mask is None:
        run = lambda q, k, v: body(q, k, v, None, impl=impl)  # noqa: E731
        specs, args = (_TOKENS, kv_spec, kv_spec), (q, k, v)
    else:
        run = functools.partial(body, impl=impl)
        specs, args = (_TOKENS, kv_spec, kv_spec, PartitionSpec()), (q, k, v, key_mask)
    # check_vma=False: Pallas kernels (the splash backend) declare outputs without manual-axis types
    return jax.shard_map(run, in_specs=specs, out_specs=_TOKENS, axis_names={CONTEXT_AXIS}, check_vma=False)(*args)
