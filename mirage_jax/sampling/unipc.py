"""Flow-matching UniPC (bh2, order 2, predictor-corrector, x0-prediction, lower-order final step).

All coefficients depend only on the sigma schedule, so they are computed once in numpy (float64) and the
compiled loop applies them as linear combinations of the sample and the model's x0 predictions. This is
the update of diffusers' ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True)`` written in closed form:

- predictor at step i (from σ_i to σ_{i+1}) with x0 predictions ``m0`` (now) and ``m1`` (previous step):
  ``x' = px[i] x + pm[i] m0 + pd[i] (m1 - m0)``;
- corrector at step i > 0 (re-does the step σ_{i-1} -> σ_i once ``m0`` at σ_i is known), with ``x`` the
  sample before that predictor, ``m1`` / ``m2`` the x0 predictions at σ_{i-1} / σ_{i-2}:
  ``x_c = cx[i] x + cm[i] m1 + cd[i] (m2 - m1) + ct[i] (m0 - m1)``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class UniPCCoefficients(NamedTuple):
    """Per-step coefficients, each ``[steps]`` float32 (index 0 of the corrector ones is unused)."""

    px: np.ndarray
    pm: np.ndarray
    pd: np.ndarray
    cx: np.ndarray
    cm: np.ndarray
    cd: np.ndarray
    ct: np.ndarray


def _lambda(sigma: float) -> float:
    """log-SNR ``log(α/σ)`` with ``α = 1 - σ`` (``+inf`` at σ = 0)."""
    return np.inf if sigma == 0 else np.log1p(-sigma) - np.log(sigma)


def _bh2(h: float) -> tuple[float, float, float, float]:
    """For the x0-form step size ``hh = -h``: ``(h_phi_1, B_h, b1, b2)`` of the bh2 variant."""
    hh = -h
    h_phi_1 = np.expm1(hh)
    if np.isinf(hh):  # the final step to σ = 0
        return -1.0, -1.0, 1.0, 2.0
    phi_k = h_phi_1 / hh - 1
    b1 = phi_k / h_phi_1
    b2 = (phi_k / hh - 0.5) * 2 / h_phi_1
    return h_phi_1, h_phi_1, b1, b2


def step_orders(steps: int) -> np.ndarray:
    """Predictor order per step ``[steps]``: 1 for the first (warm-up) and the last (lower_order_final) step."""
    orders = np.full(steps, 2, np.int32)
    orders[0] = 1
    orders[-1] = 1
    return orders


def unipc_coefficients(sigmas: np.ndarray) -> UniPCCoefficients:
    """Coefficient tables for ``sigmas [steps + 1]`` (decreasing, ``sigmas[-1] = 0``)."""
    sig = np.asarray(sigmas, np.float64)
    steps = len(sig) - 1
    lam = [_lambda(s) for s in sig]
    orders = step_orders(steps)
    tables = {k: np.zeros(steps) for k in UniPCCoefficients._fields}
    for i in range(steps):
        # Predictor sigma_i -> sigma_{i+1}.
        h = lam[i + 1] - lam[i]
        h_phi_1, b_h, _, _ = _bh2(h)
        alpha_t = 1 - sig[i + 1]
        tables["px"][i] = sig[i + 1] / sig[i]
        tables["pm"][i] = -alpha_t * h_phi_1
        if orders[i] == 2:
            rk = (lam[i - 1] - lam[i]) / h
            tables["pd"][i] = -alpha_t * b_h * 0.5 / rk
        if i == 0:
            continue
        # Corrector of the step sigma_{i-1} -> sigma_i, with the order that predictor used.
        h = lam[i] - lam[i - 1]
        h_phi_1, b_h, b1, b2 = _bh2(h)
        alpha_t = 1 - sig[i]
        tables["cx"][i] = sig[i] / sig[i - 1]
        tables["cm"][i] = -alpha_t * h_phi_1
        if orders[i - 1] == 2:
            rk = (lam[i - 2] - lam[i - 1]) / h
            rho0 = (b1 - b2) / (1 - rk)
            rho1 = b1 - rho0
            tables["cd"][i] = -alpha_t * b_h * rho0 / rk
            tables["ct"][i] = -alpha_t * b_h * rho1
        else:
            tables["ct"][i] = -alpha_t * b_h * 0.5
    return UniPCCoefficients(**{k: v.astype(np.float32) for k, v in tables.items()})
