"""``WanDiT``: the Wan2.2 DiT (TI2V-5B layout) with Mirage's VACE memory branch and LoRA (docs/design.md §4).

Call ``model(latents [B,F,H,W,C], timesteps [B,F], context [B,L,text_dim], *, num_references, control=None,
frame_mask=None) -> velocity [B,F,H,W,C_out]`` (fp32). Frames are laid out ``[references | targets | preceding]``
(``num_references`` static). ``control`` [B, F-R, H, W, vace_in] feeds the VACE branch (None: no hints);
``frame_mask`` [B, F] bool marks padded frames (False), which are excluded as attention keys in the DiT and
VACE self-attention (None: no mask, the official math). Timesteps are per frame (0 for clean frames).

Pipeline: patchify (1,2,2) with patch vector order (pt, ph, pw, c) -> Linear -> blocks (scanned) with VACE
hints added after ``vace_layers`` to non-reference tokens -> head LN + (shift, scale) from the time embedding ->
Linear -> unpatchify (same order). Time embedding: sinusoid (cos first) -> Linear/SiLU/Linear (fp32);
modulation: Linear(SiLU(temb)) -> [B, F, 6, D]; text: Linear/GELU-tanh/Linear.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirage_jax.models.attention import check_available
from mirage_jax.models.block import DiTSettings, Rope, WanBlock, layer_hint_index, scan_layers, stack_modules
from mirage_jax.models.layers import Linear, layer_norm, timestep_sinusoid
from mirage_jax.models.partitioning import constrain
from mirage_jax.models.rope import rope_positions, rope_tables
from mirage_jax.models.vace import VaceBranch


def patchify(x: jax.Array, ph: int, pw: int) -> jax.Array:
    """[B, F, H, W, C] -> [B, F, (H/ph)(W/pw), ph*pw*C] with the patch vector ordered (ph, pw, c)."""
    b, f, hh, ww, c = x.shape
    x = x.reshape(b, f, hh // ph, ph, ww // pw, pw, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, f, (hh // ph) * (ww // pw), ph * pw * c)


def unpatchify(x: jax.Array, h: int, w: int, ph: int, pw: int) -> jax.Array:
    """Inverse of ``patchify``: [B, F, h*w, ph*pw*C] -> [B, F, h*ph, w*pw, C]."""
    b, f = x.shape[:2]
    x = x.reshape(b, f, h, w, ph, pw, -1).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, f, h * ph, w * pw, -1)


class WanDiT(nnx.Module):
    """The DiT (+ VACE branch when ``vace_layers`` is non-empty); see the module docstring."""

    def __init__(self, settings: DiTSettings, *, rngs: nnx.Rngs):
        s = settings
        pt, ph, pw = s.patch_size
        lin = dict(rngs=rngs, dtype=s.dtype, param_dtype=s.pdtype)
        fp32 = dict(rngs=rngs, dtype=jnp.float32, param_dtype=s.pdtype)
        self.settings = s
        self.patch_embedding = Linear(pt * ph * pw * s.in_channels, s.dim, (None, "embed"), **lin)
        self.text_embedding_1 = Linear(s.text_dim, s.dim, (None, "embed"), **lin)
        self.text_embedding_2 = Linear(s.dim, s.dim, ("embed", None), **lin)
        self.time_embedding_1 = Linear(s.freq_dim, s.dim, (None, "embed"), **fp32)
        self.time_embedding_2 = Linear(s.dim, s.dim, ("embed", None), **fp32)
        self.time_projection = Linear(s.dim, 6 * s.dim, ("embed", None), **fp32)
        self.blocks = stack_modules(lambda r: WanBlock(s, s.lora_rank, rngs=r), s.num_layers, rngs.params())
        table = jax.random.normal(rngs.params(), (2, s.dim), s.pdtype) / np.sqrt(s.dim)
        self.head_modulation = nnx.Param(table, logical_axes=(None, "embed"))
        self.head = Linear(s.dim, pt * ph * pw * s.out_channels, ("embed", None), zero_init=True, **lin)
        self.vace = VaceBranch(s, rngs=rngs) if s.vace_layers else None

    def _validate(self, latents, timesteps, context, num_references, control, frame_mask) -> None:
        s = self.settings
        _, ph, pw = s.patch_size
        if latents.ndim != 5 or latents.shape[-1] != s.in_channels:
            raise ValueError(f"latents must be [B,F,H,W,{s.in_channels}], got {latents.shape}")
        b, f, hh, ww, _ = latents.shape
        if hh % ph or ww % pw:
            raise ValueError(f"latents H,W = {hh},{ww} must be divisible by the patch size {(ph, pw)}")
        if not isinstance(num_references, (int, np.integer)) or not 0 <= num_references < f:
            raise ValueError(f"num_references={num_references!r} must be a static int in [0, F={f})")
        if timesteps.shape != (b, f):
            raise ValueError(f"timesteps must be [B,F]={(b, f)}, got {timesteps.shape}")
        if context.ndim != 3 or context.shape[0] != b or context.shape[2] != s.text_dim:
            raise ValueError(f"context must be [B={b},L,{s.text_dim}], got {context.shape}")
        if control is not None:
            if self.vace is None:
                raise ValueError("control given but the model has no VACE branch (config.model.vace_layers is empty)")
            want = (b, f - num_references, hh, ww, s.vace_in_channels)
            if control.shape != want:
                raise ValueError(f"control must be [B,F-num_references,H,W,vace_in]={want}, got {control.shape}")
        if frame_mask is not None and (frame_mask.shape != (b, f) or frame_mask.dtype != jnp.bool_):
            raise ValueError(f"frame_mask must be bool [B,F]={(b, f)}, got {frame_mask.dtype} {frame_mask.shape}")

    def time_embedding(self, timesteps: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per-frame ``temb`` [B, F, D] and block modulation ``t_mod`` [B, F, 6, D] (fp32)."""
        s = self.settings
        temb = self.time_embedding_2(jax.nn.silu(self.time_embedding_1(timestep_sinusoid(timesteps, s.freq_dim))))
        t_mod = self.time_projection(jax.nn.silu(temb))
        return temb, t_mod.reshape(*t_mod.shape[:-1], 6, s.dim)

    def __call__(self, latents: jax.Array, timesteps: jax.Array, context: jax.Array, *, num_references: int,
                 control: jax.Array | None = None, frame_mask: jax.Array | None = None) -> jax.Array:
        self._validate(latents, timesteps, context, num_references, control, frame_mask)
        s = self.settings
        _, ph, pw = s.patch_size
        b, f, hh, ww, _ = latents.shape
        h, w, r = hh // ph, ww // pw, int(num_references)
        tokens = h * w

        x = self.patch_embedding(patchify(latents, ph, pw)).astype(jnp.float32)  # [B, F, S, D]
        x = constrain(x, ("batch", None, "length", "embed"), s.rules)
        temb, t_mod = self.time_embedding(timesteps)
        ctx = self.text_embedding_2(jax.nn.gelu(self.text_embedding_1(context), approximate=True))
        cos, sin = rope_tables(rope_positions(f, h, w, r), s.head_dim, s.rope_theta)
        rope = Rope(jnp.asarray(cos), jnp.asarray(sin))
        key_mask = None if frame_mask is None else jnp.repeat(frame_mask, tokens, axis=1)

        hints = None
        if control is not None:
            hints = self.vace(x[:, r:], patchify(control, ph, pw), t_mod[:, r:], ctx, rope.slice(r * tokens),
                              None if key_mask is None else key_mask[:, r * tokens:])
        hint_index = jnp.asarray(layer_hint_index(s.num_layers, s.vace_layers))

        def step(block: WanBlock, x, idx):
            x = block(x, t_mod, ctx, rope, key_mask)
            if hints is not None:
                hint = jax.lax.dynamic_index_in_dim(hints, jnp.maximum(idx, 0), 0, keepdims=False)
                hint = jnp.where(idx >= 0, hint.astype(jnp.float32), 0.0)
                x = jnp.concatenate([x[:, :r], x[:, r:] + hint], axis=1) if r else x + hint
            return x, None

        x, _ = scan_layers(self.blocks, step, x, hint_index, s)
        mod = self.head_modulation[...].astype(jnp.float32) + temb[:, :, None, :]  # [B, F, 2, D]
        shift, scale = mod[:, :, 0, None, :], mod[:, :, 1, None, :]
        out = self.head(layer_norm(x, s.eps) * (1 + scale) + shift).astype(jnp.float32)
        return unpatchify(out, h, w, ph, pw)


def _init_state(settings: DiTSettings, seed: jax.Array):
    return nnx.state(WanDiT(settings, rngs=nnx.Rngs(jax.random.key(seed))))


def build_model(config, seed: int = 0, mesh: jax.sharding.Mesh | None = None) -> WanDiT:
    """A freshly initialised ``WanDiT`` for ``config`` (``config.model``, ``config.mesh.rules``).

    With ``mesh``, parameters are initialised directly into their sharded layout (``jax.jit`` with
    ``out_shardings`` from the logical axes), so the full model never sits on one device. Initialisation is
    one compiled program (cached per settings and mesh; the seed is a runtime argument); the values do not
    depend on the mesh.
    """
    from mirage_jax.models.partitioning import state_shardings

    settings = DiTSettings.from_config(config)
    check_available(settings.attention)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: WanDiT(settings, rngs=nnx.Rngs(0))))
    shardings = None if mesh is None else state_shardings(abstract, mesh, settings.rules)
    init = jax.jit(_init_state, static_argnums=0, out_shardings=shardings)
    return nnx.merge(graphdef, init(settings, jnp.asarray(seed, jnp.int32)))
