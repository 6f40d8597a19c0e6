"""Flow-matching samplers: schedules, UniPC (bh2, order 2) and Euler, and the one-jit denoising loop.

Convention (docs/design.md §5): ``x_t = (1-σ) x0 + σ ε``, velocity ``ε - x0``, timestep ``1000 σ``, shift 5.
"""

from mirage_jax.sampling.loop import (
    SAMPLERS,
    Schedule,
    apply_cfg,
    denoise,
    make_schedule,
    schedule_args,
    schedule_from_config,
)
from mirage_jax.sampling.schedules import flow_sigmas, model_timesteps, shift_sigmas
from mirage_jax.sampling.unipc import UniPCCoefficients, step_orders, unipc_coefficients

__all__ = [
    "SAMPLERS",
    "Schedule",
    "UniPCCoefficients",
    "apply_cfg",
    "denoise",
    "flow_sigmas",
    "make_schedule",
    "model_timesteps",
    "schedule_args",
    "schedule_from_config",
    "shift_sigmas",
    "step_orders",
    "unipc_coefficients",
]
