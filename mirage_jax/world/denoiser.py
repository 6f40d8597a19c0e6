"""One chunk's denoising as one compiled program: the DiT call with its context inside the sampler loop.

The sequence fed to the model is ``[references (R) | targets (T) | preceding (P)]`` along time (docs/design.md §4).
References and preceding latents are clean (timestep 0), target frame 0 is the clean frame-0 latent
(timestep 0, re-imposed after every step). ``R`` and ``P`` are fixed per rollout (``max_references``,
``num_preceding``) and missing entries are padded and masked out with ``frame_mask`` (real references in the
last slots, real preceding latents in the first: the official RoPE positions, ``models.sequence_slots``):
every full chunk of a rollout runs the same compiled program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from mirage_jax.sampling import apply_cfg, denoise, make_schedule


def split_model(model) -> tuple[object, object]:
    """``(static part, array state)`` of a model: ``nnx.split`` for NNX modules, ``(fn, None)`` for callables."""
    if isinstance(model, nnx.Module):
        return nnx.split(model)
    if not callable(model):
        raise ValueError(f"model: expected a WanDiT (nnx.Module) or a callable with its signature, got {model!r}")
    return model, None


@functools.partial(
    jax.jit, static_argnames=("graphdef", "schedule_args", "num_references", "guidance_scale", "on_step")
)
def denoise_chunk(
    state,
    noise: jax.Array,
    first: jax.Array,
    references: jax.Array,
    preceding: jax.Array,
    control: jax.Array,
    frame_mask: jax.Array,
    context: jax.Array,
    null_context: jax.Array,
    *,
    graphdef,
    schedule_args: tuple,
    num_references: int,
    guidance_scale: float,
    on_step: Callable | None = None,
) -> jax.Array:
    """Denoised target latents ``[1, T, h, w, C]``.

    Args:
      state: the model's parameters (``None`` for a plain callable ``graphdef``).
      noise: ``[1, T, h, w, C]``; first: ``[1, h, w, C]`` clean frame-0 latent.
      references: ``[1, R, h, w, C]``; preceding: ``[1, P, h, w, C]`` (clean; padded entries arbitrary).
      control: ``[1, T + P, h, w, vace_in]``; frame_mask: ``[1, R + T + P]`` bool (False = padded).
      context / null_context: ``[1, L, D]`` text embeddings (the null one is used only when guidance != 1).
      schedule_args: ``make_schedule`` arguments ``(sampler, steps, shift, grid, integer_timesteps)``.
    """
    model = graphdef if state is None else nnx.merge(graphdef, state)
    schedule = make_schedule(*schedule_args)
    r, t, p = references.shape[1], noise.shape[1], preceding.shape[1]
    cfg = guidance_scale != 1.0
    ctx = jnp.concatenate([context, null_context]) if cfg else context

    def batch(a):
        return jnp.concatenate([a, a]) if cfg else a

    def velocity(x, timestep):
        seq = jnp.concatenate([references, x.astype(references.dtype), preceding], axis=1)
        per_frame = jnp.zeros((r + t + p,), jnp.float32).at[r + 1: r + t].set(timestep)
        out = model(
            batch(seq),
            batch(jnp.broadcast_to(per_frame, (1, r + t + p))),
            ctx,
            num_references=num_references,
            control=batch(control),
            frame_mask=batch(frame_mask),
        )[:, r: r + t]
        return apply_cfg(out, guidance_scale) if cfg else out

    return denoise(velocity, noise, schedule, first_frame=first, on_step=on_step)
