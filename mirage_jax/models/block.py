"""The Wan transformer block, its settings, and stacked (scanned) layers.

A block (docs/design.md §4) on a token stream ``x`` [B, F, S, D] (F frames of S tokens, fp32):

    x += gate   * SelfAttn(LN(x) * (1 + scale) + shift)          (RMSNorm(q), RMSNorm(k) over D, 3D RoPE)
    x +=          CrossAttn(LN_affine(x), text)                   (no modulation, no gate)
    x += c_gate * FFN(LN(x) * (1 + c_scale) + c_shift)           (GELU-tanh)

with ``(shift, scale, gate, c_shift, c_scale, c_gate)`` = the block's ``modulation`` [6, D] + the per-frame time
projection [B, F, 6, D]. Modulation is applied per frame (broadcast over the frame's tokens) instead of
materialising a per-token [B, L, 6, D] table.

Layers of the same shape are stored *stacked* (leading ``layers`` axis on every parameter) and run with
``jax.lax.scan`` under ``jax.checkpoint`` with the configured policy (``scan_layers=False`` unrolls the same
stacked parameters, so checkpoints do not depend on it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirage_jax.models.context_parallel import attend_frames
from mirage_jax.models.layers import LayerNorm, Linear, RMSNorm, layer_norm
from mirage_jax.models.partitioning import constrain
from mirage_jax.models.rope import apply_rope

REMAT_POLICIES = (
    "none", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable", "everything_saveable"
)


@dataclasses.dataclass(frozen=True)
class DiTSettings:
    """The static (hashable) model hyper-parameters, read from ``config.model`` and ``config.mesh.rules``."""

    dim: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    patch_size: tuple[int, int, int]
    in_channels: int
    out_channels: int
    text_dim: int
    freq_dim: int
    eps: float
    rope_theta: float
    vace_layers: tuple[int, ...]
    vace_in_channels: int
    lora_rank: int
    lora_alpha: float
    scan_layers: bool
    remat_policy: str
    compute_dtype: str
    param_dtype: str
    attention: str
    rules: tuple = ()

    @classmethod
    def from_config(cls, config) -> DiTSettings:
        m = config.model
        rules = tuple((name, tuple(t) if isinstance(t, (list, tuple)) else t) for name, t in config.mesh.rules)
        s = cls(
            dim=int(m.dim), num_layers=int(m.num_layers), num_heads=int(m.num_heads), ffn_dim=int(m.ffn_dim),
            patch_size=tuple(int(p) for p in m.patch_size), in_channels=int(config.latent.channels),
            out_channels=int(config.latent.channels), text_dim=int(config.text.dim), freq_dim=int(m.freq_dim),
            eps=float(m.eps),
            rope_theta=float(m.rope_theta), vace_layers=tuple(int(v) for v in m.vace_layers),
            vace_in_channels=int(m.vace_in_channels), lora_rank=int(m.lora_rank), lora_alpha=float(m.lora_alpha),
            scan_layers=bool(m.scan_layers), remat_policy=str(m.remat_policy), compute_dtype=str(m.compute_dtype),
            param_dtype=str(m.param_dtype), attention=str(m.attention), rules=rules,
        )
        s.validate()
        return s

    def validate(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"config.model.dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if len(self.patch_size) != 3 or self.patch_size[0] != 1:
            raise ValueError(f"config.model.patch_size={self.patch_size}: expected (1, ph, pw)")
        if self.vace_layers and (self.vace_layers[0] != 0 or list(self.vace_layers) != sorted(set(self.vace_layers))
                                 or self.vace_layers[-1] >= self.num_layers):
            raise ValueError(
                f"config.model.vace_layers={self.vace_layers}: must be increasing, start at 0 and be < num_layers"
            )
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"config.model.remat_policy={self.remat_policy!r}: expected one of {REMAT_POLICIES}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def dtype(self):
        return jnp.dtype(self.compute_dtype)

    @property
    def pdtype(self):
        return jnp.dtype(self.param_dtype)


@dataclasses.dataclass(frozen=True)
class Rope:
    """RoPE tables ``cos``/``sin`` [N, head_dim/2] for the N tokens a block attends over."""

    cos: jax.Array
    sin: jax.Array

    def slice(self, start: int) -> Rope:
        return Rope(self.cos[start:], self.sin[start:])


class Attention(nnx.Module):
    """Wan attention: q/k/v/o linears (LoRA-able), RMSNorm over the full dim on q and k, optional RoPE."""

    def __init__(self, s: DiTSettings, lora_rank: int, *, rngs: nnx.Rngs):
        lin = dict(rngs=rngs, dtype=s.dtype, param_dtype=s.pdtype, lora_rank=lora_rank, lora_alpha=s.lora_alpha)
        self.q = Linear(s.dim, s.dim, ("embed", "heads"), **lin)
        self.k = Linear(s.dim, s.dim, ("embed", "heads"), **lin)
        self.v = Linear(s.dim, s.dim, ("embed", "heads"), **lin)
        self.o = Linear(s.dim, s.dim, ("heads", "embed"), **lin)
        self.norm_q = RMSNorm(s.dim, "heads", eps=s.eps, dtype=s.dtype, param_dtype=s.pdtype)
        self.norm_k = RMSNorm(s.dim, "heads", eps=s.eps, dtype=s.dtype, param_dtype=s.pdtype)
        self.num_heads = s.num_heads
        self.impl = s.attention
        self.rules = s.rules

    def _heads(self, a: jax.Array) -> jax.Array:
        """[B, F, S, D] -> [B, F, S, H, D/H] (or [B, L, D] -> [B, L, H, D/H]) with its logical axes."""
        axes = ("batch", None, "length", "heads", "kv") if a.ndim == 4 else ("batch", None, "heads", "kv")
        return constrain(a.reshape(*a.shape[:-1], self.num_heads, -1), axes, self.rules)

    def __call__(self, x: jax.Array, source: jax.Array, rope: Rope | None, key_mask: jax.Array | None) -> jax.Array:
        """x [B, F, S, D] attends to the same frames (source [B, F, S, D]) or to a sequence (source [B, L, D]);
        key_mask [B, F*S] bool or None -> [B, F, S, D]. The frames stay 4-D so that their token axis can be
        split over the ``context`` mesh axis (``mirage_jax.models.context_parallel``)."""
        q, k, v = self._heads(self.norm_q(self.q(x))), self._heads(self.norm_k(self.k(source))), self._heads(
            self.v(source))
        if rope is not None:
            cos, sin = (t.reshape(*x.shape[1:3], -1) for t in (rope.cos, rope.sin))  # [F, S, d/2]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = attend_frames(q, k, v, key_mask, self.impl)
        return self.o(out.reshape(*x.shape[:-1], -1))


class WanBlock(nnx.Module):
    """One DiT block (module docstring); ``lora_rank`` > 0 adds LoRA to q, k, v, o (self and cross) and the FFN."""

    def __init__(self, s: DiTSettings, lora_rank: int, *, rngs: nnx.Rngs):
        table = jax.random.normal(rngs.params(), (6, s.dim), s.pdtype) / math.sqrt(s.dim)
        self.modulation = nnx.Param(table, logical_axes=(None, "embed"))
        self.self_attn = Attention(s, lora_rank, rngs=rngs)
        self.cross_norm = LayerNorm(s.dim, eps=s.eps, param_dtype=s.pdtype)
        self.cross_attn = Attention(s, lora_rank, rngs=rngs)
        lin = dict(rngs=rngs, dtype=s.dtype, param_dtype=s.pdtype, lora_rank=lora_rank, lora_alpha=s.lora_alpha)
        self.ffn_in = Linear(s.dim, s.ffn_dim, ("embed", "mlp"), **lin)
        self.ffn_out = Linear(s.ffn_dim, s.dim, ("mlp", "embed"), **lin)
        self.eps = s.eps
        self.rules = s.rules

    def __call__(self, x: jax.Array, t_mod: jax.Array, context: jax.Array, rope: Rope,
                 key_mask: jax.Array | None) -> jax.Array:
        """x [B, F, S, D] fp32, t_mod [B, F, 6, D] fp32, context [B, L, D], key_mask [B, F*S] -> [B, F, S, D]."""
        mod = self.modulation[...].astype(jnp.float32) + t_mod
        shift, scale, gate, c_shift, c_scale, c_gate = (mod[:, :, i, None, :] for i in range(6))
        h = layer_norm(x, self.eps) * (1 + scale) + shift
        x = x + self.self_attn(h, h, rope, key_mask).astype(jnp.float32) * gate
        x = x + self.cross_attn(self.cross_norm(x), context, None, None).astype(jnp.float32)
        h = layer_norm(x, self.eps) * (1 + c_scale) + c_shift
        hidden = constrain(jax.nn.gelu(self.ffn_in(h), approximate=True), ("batch", None, "length", "mlp"),
                           self.rules)
        x = x + self.ffn_out(hidden).astype(jnp.float32) * c_gate
        return constrain(x, ("batch", None, "length", "embed"), self.rules)


def stack_modules(make: Callable[[nnx.Rngs], nnx.Module], num: int, key: jax.Array) -> nnx.Module:
    """``num`` independently initialised copies of ``make(rngs)`` as one module with stacked parameters.

    Every parameter gets a leading axis of size ``num`` whose logical name is ``"layers"``.
    """
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: make(nnx.Rngs(0))))
    state = jax.vmap(lambda k: nnx.state(make(nnx.Rngs(k))))(jax.random.split(key, num))

    def add_axis(v: nnx.Variable) -> nnx.Variable:
        axes = v.get_metadata().get("logical_axes") or (None,) * (v.ndim - 1)
        v.set_metadata(logical_axes=("layers", *axes))
        return v

    state = jax.tree.map(add_axis, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(graphdef, state)


def scan_layers(stacked: nnx.Module, fn: Callable, carry, xs, s: DiTSettings):
    """Runs ``carry, y = fn(layer, carry, x)`` over the stacked layers (``jax.lax.scan`` + remat policy).

    ``xs``: a pytree with a leading layer axis (or ``None``). Returns ``(carry, ys)`` with ys stacked.
    """
    graphdef, state = nnx.split(stacked)

    def body(c, layer):
        st, x = layer
        return fn(nnx.merge(graphdef, st), c, x)

    if s.remat_policy != "none":
        body = jax.checkpoint(body, policy=getattr(jax.checkpoint_policies, s.remat_policy), prevent_cse=False)
    if s.scan_layers:
        return jax.lax.scan(body, carry, (state, xs))
    num = jax.tree.leaves(state)[0].shape[0]
    ys = []
    for i in range(num):
        carry, y = body(carry, jax.tree.map(lambda a: a[i], (state, xs)))  # noqa: B023
        ys.append(y)
    return carry, (None if ys[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *ys))


def layer_hint_index(num_layers: int, hint_layers: tuple[int, ...]) -> np.ndarray:
    """[num_layers] int32: the hint index added after each DiT layer, -1 where none."""
    index = np.full((num_layers,), -1, np.int32)
    index[list(hint_layers)] = np.arange(len(hint_layers), dtype=np.int32)
    return index
