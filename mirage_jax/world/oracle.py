"""An oracle "model" with the WanDiT call signature: it predicts the control's scene latent as the clean
sample, i.e. the velocity field that drives every target (and preceding) frame toward the memory read.

Where the cache hit, the result is exactly what the cache holds; where it missed, the scene latent is 0
(mid-grey in the patchify latent space). It shows what a rollout can get out of a cache at most, with no
training: tests and benchmarks use it to compare caches on identical trajectories.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.cache
def oracle_model(channels: int, min_sigma: float = 1e-3):
    """A callable ``(latents [B,F,h,w,C], timesteps [B,F], context, *, num_references, control, frame_mask)
    -> velocity [B,F,h,w,C]`` with ``velocity = (x - scene) / σ``, ``σ = timestep / 1000``. The same object
    for the same arguments, so compiled rollouts are reused."""

    def model(latents: jax.Array, timesteps: jax.Array, context: jax.Array, *, num_references: int,
              control: jax.Array | None = None, frame_mask: jax.Array | None = None) -> jax.Array:
        r = num_references
        scene = jnp.zeros_like(latents[:, r:]) if control is None else control[..., :channels]
        x0 = jnp.concatenate([jnp.zeros_like(latents[:, :r]), scene.astype(latents.dtype)], axis=1)
        sigma = jnp.maximum(timesteps / 1000.0, min_sigma)[..., None, None, None]
        return (latents - x0) / sigma

    return model
