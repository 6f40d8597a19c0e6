"""The whole denoising loop as one compiled function (``jax.lax.fori_loop`` over steps, model call inside).

``denoise(velocity_fn, noise, schedule, first_frame=...)`` runs UniPC or Euler from pure noise to a clean
sample. ``velocity_fn(x [B,T,h,w,C], t [] float32) -> v [B,T,h,w,C]`` is any traceable function (the DiT with
its conditioning closed over, an analytic field in tests). The clean first frame (``first_frame
[B,h,w,C]``) is imposed on the input and re-imposed after every step, so the model always sees it clean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax.config import CHOICES
from mirage_jax.sampling.schedules import flow_sigmas, model_timesteps
from mirage_jax.sampling.unipc import unipc_coefficients

SAMPLERS = CHOICES["sample.sampler"]


class Schedule(NamedTuple):
    """A sampler's static plan: ``sigmas [S+1]``, model ``timesteps [S]`` and UniPC coefficients ``[7, S]``."""

    sampler: str
    sigmas: np.ndarray
    timesteps: np.ndarray
    coefficients: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.timesteps)


def make_schedule(
    sampler: str = "unipc",
    steps: int = 20,
    shift: float = 5.0,
    grid: str = "wan",
    integer_timesteps: bool | None = None,
) -> Schedule:
    """Builds the plan. ``integer_timesteps`` defaults to True for UniPC (the model sees ``int(1000σ)``, as
    diffusers / Wan) and False for Euler (``1000σ``, as ``FlowMatchEulerDiscreteScheduler``)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sample.sampler must be one of {SAMPLERS}, got {sampler!r}")
    sigmas = flow_sigmas(steps, shift, grid)
    integer = sampler == "unipc" if integer_timesteps is None else integer_timesteps
    coefficients = np.stack(unipc_coefficients(sigmas)) if sampler == "unipc" else np.zeros((7, steps), np.float32)
    return Schedule(sampler, sigmas, model_timesteps(sigmas, integer), coefficients)


def parse_integer_timesteps(value) -> bool | None:
    """``sample.integer_timesteps``: "auto" -> None (per-sampler default), else a bool (or "true"/"false")."""
    if isinstance(value, bool) or value == "auto":
        return None if value == "auto" else value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ValueError(f"sample.integer_timesteps must be 'auto', true or false, got {value!r}")


def schedule_args(sample_config) -> tuple:
    """Hashable ``make_schedule`` arguments ``(sampler, steps, shift, grid, integer_timesteps)`` of a config's
    ``sample`` section (a static argument of compiled samplers)."""
    return (
        str(sample_config.sampler),
        int(sample_config.steps),
        float(sample_config.shift),
        str(sample_config.sigma_grid),
        parse_integer_timesteps(sample_config.integer_timesteps),
    )


def schedule_from_config(sample_config) -> Schedule:
    """The plan for a config's ``sample`` section."""
    return make_schedule(*schedule_args(sample_config))


def apply_cfg(velocity_pair: jax.Array, guidance_scale: float) -> jax.Array:
    """Classifier-free guidance on a batched pair ``[2B, ...]`` (cond first, uncond second): ``u + g (c - u)``."""
    cond, uncond = jnp.split(velocity_pair, 2, axis=0)
    return uncond + guidance_scale * (cond - uncond)


def _impose(x: jax.Array, first_frame: jax.Array | None) -> jax.Array:
    return x if first_frame is None else x.at[:, 0].set(first_frame.astype(x.dtype))


def denoise(
    velocity_fn: Callable[[jax.Array, jax.Array], jax.Array],
    noise: jax.Array,
    schedule: Schedule,
    first_frame: jax.Array | None = None,
    on_step: Callable[[jax.Array], None] | None = None,
) -> jax.Array:
    """Samples ``x0 [B,T,...]`` from ``noise [B,T,...]`` (traceable; call it inside ``jax.jit``).

    ``on_step(i)`` (optional, host side via ``jax.debug.callback``) is called after every step, e.g. to
    advance a progress bar.
    """
    sigmas = jnp.asarray(schedule.sigmas)
    timesteps = jnp.asarray(schedule.timesteps)
    coef = jnp.asarray(schedule.coefficients)
    x = _impose(noise, first_frame)

    def euler_body(i, x):
        v = velocity_fn(x, timesteps[i])
        x = x + (sigmas[i + 1] - sigmas[i]).astype(x.dtype) * v.astype(x.dtype)
        return _impose(x, first_frame)

    def unipc_body(i, carry):
        x, last, m1, m2 = carry
        px, pm, pd, cx, cm, cd, ct = (c.astype(x.dtype) for c in coef[:, i])
        m0 = x - sigmas[i].astype(x.dtype) * velocity_fn(x, timesteps[i]).astype(x.dtype)
        corrected = cx * last + cm * m1 + cd * (m2 - m1) + ct * (m0 - m1)
        x = jnp.where(i > 0, corrected, x)
        new = px * x + pm * m0 + pd * (m1 - m0)
        return _impose(new, first_frame), x, m0, m1

    def with_callback(body):
        if on_step is None:
            return body

        def wrapped(i, carry):
            out = body(i, carry)
            jax.debug.callback(on_step, i)
            return out

        return wrapped

    if schedule.sampler == "euler":
        return jax.lax.fori_loop(0, schedule.steps, with_callback(euler_body), x)
    zeros = jnp.zeros_like(x)
    x, *_ = jax.lax.fori_loop(0, schedule.steps, with_callback(unipc_body), (x, zeros, zeros, zeros))
    return x
