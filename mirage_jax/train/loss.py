"""The flow-matching training loss (one function, pure, jit-able).

Per example and per target latent frame, ``σ ~ U(0, 1)`` shifted by ``σ' = sσ / (1 + (s-1)σ)`` (the sampler's
``shift_sigmas``; the official draws one σ per frame shared by the batch; we draw per example too, which only
adds variety).
Target frame 0 is clean (σ = 0, timestep 0) and excluded from the loss. The sequence fed to the model is
``[references | noisy targets | preceding]``; references and preceding latents are clean (timestep 0), get no
loss, and the batch masks (random counts drawn by the data pipeline) become the model's ``frame_mask``.
The VACE control is built from ``[target_scene | preceding_scene]`` and the hit masks. Prompts are dropped
to the empty-prompt embedding with probability ``drop_prob``. The loss is the fp32 MSE between the predicted
velocity and ``ε − x0`` over target frames 1.., averaged over every element.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from mirage_jax.data.training_example import TrainingExample
from mirage_jax.models.sequence_slots import keep_preceding_slots, keep_reference_slots
from mirage_jax.models.vace import build_control
from mirage_jax.sampling.schedules import shift_sigmas

NUM_BUCKETS = 4  # loss reported per timestep bucket: σ' in [0, .25), [.25, .5), [.5, .75), [.75, 1]


@dataclass(frozen=True)
class LossSettings:
    """Static settings of the loss (hashable: part of the compiled step)."""

    shift: float = 5.0
    drop_prob: float = 0.1
    max_references: int = 4
    max_preceding: int = 2
    score_source: str = "hit_mask"

    @classmethod
    def from_config(cls, config) -> LossSettings:
        return cls(shift=float(config.train.shift), drop_prob=float(config.text.drop_prob),
                   max_references=int(config.train.max_references), max_preceding=int(config.train.max_preceding),
                   score_source=str(config.model.score_source))


def sample_sigmas(key: jax.Array, batch: int, frames: int, shift: float) -> jax.Array:
    """Shifted per-frame noise levels ``[batch, frames]``; column 0 (the clean first frame) is exactly 0."""
    sigma = shift_sigmas(jax.random.uniform(key, (batch, frames), jnp.float32), shift)
    return sigma.at[:, 0].set(0.0)


def context_parts(batch: TrainingExample, settings: LossSettings) -> dict:
    """References, preceding frames and their masks, capped at ``max_references`` / ``max_preceding`` slots.

    The data pipeline places real references in the LAST reference slots and real preceding latents in the
    FIRST preceding slots (``mirage_jax.models.sequence_slots``) and draws at most the caps, so the kept slots
    hold every real entry at the position the rollout gives it. Returns arrays with R' = min(R, max_references),
    P' = min(P, max_preceding).
    """
    r = min(batch["reference_latents"].shape[1], settings.max_references)
    p = min(batch["preceding_latents"].shape[1], settings.max_preceding)
    return {
        "references": keep_reference_slots(batch["reference_latents"], r),
        "reference_mask": keep_reference_slots(batch["reference_mask"], r),
        **{name: keep_preceding_slots(batch[key], p) for name, key in (
            ("preceding", "preceding_latents"), ("preceding_mask", "preceding_mask"),
            ("preceding_scene", "preceding_scene"), ("preceding_hit", "preceding_hit"))},
    }


def flow_matching_loss(model, batch: TrainingExample, key: jax.Array, settings: LossSettings, empty_context: jax.Array,
                       score_latent: jax.Array | None = None, sigmas: jax.Array | None = None):
    """Loss and diagnostics for one batch (the ``TrainingExample`` fields with a leading
    batch axis B; Tl target latents).

    Args:
      model: ``WanDiT``-like callable ``(latents, timesteps, context, *, num_references, control, frame_mask)``.
      key: PRNG key for σ, noise and text dropout.
      empty_context: ``[L, D]`` embedding of the empty prompt (text dropout target).
      score_latent: ``[Tl+P', h, w, C]`` constant score latent (``score_source="constant"`` only).
      sigmas: optional fixed (already shifted) ``[B, Tl]`` noise levels (evaluation); column 0 is forced to 0.
    Returns:
      ``(loss, aux)``: scalar fp32 loss; aux holds ``bucket_sum``/``bucket_count`` ``[NUM_BUCKETS]`` (per-frame
      MSE summed by σ' bucket, to report the loss per timestep bucket).
    """
    x0 = batch["target_latents"].astype(jnp.float32)
    b, tl = x0.shape[:2]
    k_sigma, k_noise, k_drop = jax.random.split(key, 3)
    if sigmas is None:
        sigma = sample_sigmas(k_sigma, b, tl, settings.shift)
    else:
        sigma = sigmas.astype(jnp.float32).at[:, 0].set(0.0)
    eps = jax.random.normal(k_noise, x0.shape, jnp.float32)
    s = sigma[:, :, None, None, None]
    x_t = (1.0 - s) * x0 + s * eps

    parts = context_parts(batch, settings)
    r, p = parts["references"].shape[1], parts["preceding"].shape[1]
    latents = jnp.concatenate([parts["references"].astype(jnp.float32), x_t,
                               parts["preceding"].astype(jnp.float32)], axis=1)
    timesteps = jnp.concatenate([jnp.zeros((b, r)), 1000.0 * sigma, jnp.zeros((b, p))], axis=1)
    frame_mask = jnp.concatenate([parts["reference_mask"].astype(bool), jnp.ones((b, tl), bool),
                                  parts["preceding_mask"].astype(bool)], axis=1)
    scene = jnp.concatenate([batch["target_scene"], parts["preceding_scene"]], axis=1)
    hit = jnp.concatenate([batch["target_hit"], parts["preceding_hit"]], axis=1).astype(bool)
    control = build_control(scene, hit, settings.score_source, score_latent)

    context = batch["context"].astype(jnp.float32)
    if settings.drop_prob > 0 and sigmas is None:
        drop = jax.random.bernoulli(k_drop, settings.drop_prob, (b,))
        context = jnp.where(drop[:, None, None], empty_context[None].astype(jnp.float32), context)

    velocity = model(latents, timesteps, context, num_references=r, control=control, frame_mask=frame_mask)
    pred = velocity[:, r:r + tl].astype(jnp.float32)
    frame_mse = jnp.mean(jnp.square(pred - (eps - x0)), axis=(2, 3, 4))[:, 1:]  # [B, Tl-1]
    loss = jnp.mean(frame_mse)
    bucket = jnp.clip((sigma[:, 1:] * NUM_BUCKETS).astype(jnp.int32), 0, NUM_BUCKETS - 1)
    onehot = jax.nn.one_hot(bucket, NUM_BUCKETS, dtype=jnp.float32)
    aux = {"bucket_sum": jnp.einsum("bt,btk->k", frame_mse, onehot), "bucket_count": onehot.sum((0, 1))}
    return loss, aux
