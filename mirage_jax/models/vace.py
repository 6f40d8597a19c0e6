"""The VACE memory branch (docs/design.md §4) and its control input.

``VaceBranch`` embeds the control video [B, F', h, w, vace_in] (F' = non-reference frames), adds
``before_proj(c0)`` to the DiT's embedded non-reference tokens, and runs ``len(vace_layers)`` DiT-shaped blocks
(stacked, scanned) over the non-reference tokens only; block k emits the hint ``after_proj(c)``
(zero-initialised), which the DiT adds after layer ``vace_layers[k]`` to the non-reference tokens.

``build_control`` assembles the 96-channel control: 48 "scene" channels (memory read, zero where not hit) and
48 "score" channels, either the official constant latent (VAE latent of an all-white video, ``"constant"``) or
our hit mask (``"hit_mask"``: 1.0 where the memory hit, 0.0 elsewhere, broadcast to all 48 channels, so the
input width, and hence checkpoints, are the same in both modes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mirage_jax.config import CHOICES
from mirage_jax.models.block import DiTSettings, Rope, WanBlock, scan_layers, stack_modules
from mirage_jax.models.layers import Linear
from mirage_jax.video_shapes import num_frames

SCORE_SOURCES = CHOICES["model.score_source"]


def constant_score_latent(latent_space, num_latents: int, hw: tuple[int, int]) -> jax.Array:
    """The official constant "score" latent ``[num_latents, h, w, C]``: the latent of an all-white video of
    ``num_frames(num_latents)`` frames at ``hw`` pixels (precompute once per shape)."""
    white = jnp.ones((1, num_frames(num_latents), *hw, 3), jnp.float32)
    return jnp.asarray(latent_space.encode(white)[0], jnp.float32)


def build_control(scene: jax.Array, hit: jax.Array, score_source: str, score_latent: jax.Array | None = None):
    """Control input [B, F', h, w, 2C] from ``scene`` [B, F', h, w, C] and ``hit`` [B, F', h, w] bool.

    ``score_source="constant"`` needs ``score_latent`` [F', h, w, C] or [B, F', h, w, C] (broadcast over batch);
    ``"hit_mask"`` ignores it. Scene cells that were not hit are zeroed.
    """
    if scene.ndim != 5 or hit.shape != scene.shape[:4]:
        raise ValueError(f"scene must be [B,F,h,w,C] and hit [B,F,h,w]; got {scene.shape} and {hit.shape}")
    scene = jnp.where(hit[..., None], scene, 0).astype(jnp.float32)
    if score_source == "hit_mask":
        score = jnp.broadcast_to(hit[..., None].astype(jnp.float32), scene.shape)
    elif score_source == "constant":
        if score_latent is None or score_latent.shape[-4:] != scene.shape[1:]:
            got = None if score_latent is None else score_latent.shape
            raise ValueError(f"score_source='constant' needs score_latent [F,h,w,C]={scene.shape[1:]}; got {got}")
        score = jnp.broadcast_to(jnp.asarray(score_latent, jnp.float32), scene.shape)
    else:
        raise ValueError(f"score_source={score_source!r}: expected one of {SCORE_SOURCES}")
    return jnp.concatenate([scene, score], axis=-1)


class VaceBlock(WanBlock):
    """A DiT block (no LoRA) plus ``after_proj`` (zero-initialised) producing the hint."""

    def __init__(self, s: DiTSettings, *, rngs: nnx.Rngs):
        super().__init__(s, 0, rngs=rngs)
        self.after_proj = Linear(s.dim, s.dim, ("embed", None), rngs=rngs, dtype=s.dtype, param_dtype=s.pdtype,
                                 zero_init=True)


class VaceBranch(nnx.Module):
    """Patch embedding of the control, ``before_proj`` (block 0's) and the stacked VACE blocks."""

    def __init__(self, s: DiTSettings, *, rngs: nnx.Rngs):
        pt, ph, pw = s.patch_size
        lin = dict(rngs=rngs, dtype=s.dtype, param_dtype=s.pdtype)
        self.patch_embedding = Linear(pt * ph * pw * s.vace_in_channels, s.dim, (None, "embed"), **lin)
        self.before_proj = Linear(s.dim, s.dim, ("embed", None), **lin)
        self.blocks = stack_modules(lambda r: VaceBlock(s, rngs=r), len(s.vace_layers), rngs.params())
        self.settings = s

    def __call__(self, x_emb: jax.Array, control_patches: jax.Array, t_mod: jax.Array, context: jax.Array,
                 rope: Rope, key_mask: jax.Array | None) -> jax.Array:
        """Hints [K, B, F', S, D] from the embedded non-reference tokens x_emb [B, F', S, D] (fp32) and the
        patchified control [B, F', S, patch*vace_in]; t_mod [B, F', 6, D], rope/key_mask over the F'*S tokens."""
        c = self.before_proj(self.patch_embedding(control_patches)).astype(jnp.float32) + x_emb

        def step(block: VaceBlock, c, _):
            c = block(c, t_mod, context, rope, key_mask)
            return c, block.after_proj(c)

        _, hints = scan_layers(self.blocks, step, c, None, self.settings)
        return hints
