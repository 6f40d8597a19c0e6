"""Flow-matching noise schedules (docs/design.md §5): sigma grids, the shift warp and the model timesteps.

Convention: ``x_t = (1 - σ) x0 + σ ε``, velocity ``ε - x0``, model timestep ``1000 σ``. A schedule of ``steps``
sampler steps is ``sigmas [steps + 1]`` (decreasing, the last one 0) plus ``timesteps [steps]`` for the model.
"""

from __future__ import annotations

import numpy as np

from mirage_jax.config import CHOICES

NUM_TRAIN_TIMESTEPS = 1000
GRIDS = CHOICES["sample.sigma_grid"]


def shift_sigmas(sigmas, shift: float):
    """The flow shift warp ``σ' = sσ / (1 + (s-1)σ)`` (elementwise; numpy or jax arrays)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_sigmas(steps: int, shift: float = 5.0, grid: str = "wan") -> np.ndarray:
    """Shifted sigmas ``[steps + 1]`` float32, decreasing, ending with the final ``σ = 0``.

    ``grid="wan"``: ``linspace(0.999, 0, steps+1)[:-1]`` before the shift (the original Wan
    ``FlowUniPCMultistepScheduler`` the official Mirage loop uses). ``grid="diffusers"``:
    ``linspace(1, 1/1000, steps+1)[:-1]`` and ``σ[0] -= 1e-6`` when it is 1 (diffusers'
    ``UniPCMultistepScheduler(use_flow_sigmas=True)``).
    """
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift!r}")
    if grid == "wan":
        base = np.linspace(1 - 1 / NUM_TRAIN_TIMESTEPS, 0, steps + 1)[:-1]
        sigmas = shift_sigmas(base, shift)
    elif grid == "diffusers":
        base = np.linspace(1, 1 / NUM_TRAIN_TIMESTEPS, steps + 1)[:-1]
        sigmas = shift_sigmas(base, shift)
        if abs(sigmas[0] - 1) < 1e-6:
            sigmas[0] -= 1e-6
    else:
        raise ValueError(f"sample.sigma_grid must be one of {GRIDS}, got {grid!r}")
    return np.concatenate([sigmas, [0.0]]).astype(np.float32)


def model_timesteps(sigmas: np.ndarray, integer: bool = True) -> np.ndarray:
    """Model timesteps ``[steps]`` float32 for ``sigmas [steps + 1]``: ``1000 σ`` (truncated to an integer
    when ``integer``, as the diffusers and original Wan UniPC schedulers feed the DiT)."""
    t = np.asarray(sigmas[:-1], np.float32) * NUM_TRAIN_TIMESTEPS
    return (t.astype(np.int64) if integer else t).astype(np.float32)
