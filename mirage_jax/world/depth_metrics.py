"""Depth error of a predicted depth map against the ground truth: AbsRel and δ < 1.25 on valid cells.

The standard monocular-depth metrics (Eigen et al. 2014), used to score the latent depth head that writes the
memory back: ``abs_rel = mean(|pred - gt| / gt)`` and ``delta_1.25 = mean(max(pred/gt, gt/pred) < 1.25)``,
both over the valid cells: ground truth and prediction finite and > 0 (depth ``0`` or non-finite is invalid,
docs/design.md §2), and inside the optional ``valid`` mask.
"""

from __future__ import annotations

import numpy as np

DELTA = 1.25


def valid_cells(pred, gt, valid=None) -> np.ndarray:
    """Bool ``[...]``: cells of ``pred, gt [...]`` where both depths are finite and > 0 (and ``valid``)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred: shape {pred.shape} differs from gt {gt.shape}")
    if valid is not None and np.shape(valid) != gt.shape:
        raise ValueError(f"valid: shape {np.shape(valid)} differs from gt {gt.shape}")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(pred) & np.isfinite(gt) & (pred > 0) & (gt > 0)
    return ok if valid is None else ok & np.asarray(valid, bool)


def abs_rel(pred, gt, valid=None) -> float:
    """Mean of ``|pred - gt| / gt`` over the valid cells; NaN when there are none."""
    p, g = _valid_values(pred, gt, valid)
    return float(np.mean(np.abs(p - g) / g)) if p.size else float("nan")


def delta_accuracy(pred, gt, valid=None, threshold: float = DELTA) -> float:
    """Fraction of the valid cells with ``max(pred/gt, gt/pred) < threshold``; NaN when there are none."""
    p, g = _valid_values(pred, gt, valid)
    return float(np.mean(np.maximum(p / g, g / p) < threshold)) if p.size else float("nan")


def depth_errors(pred, gt, valid=None) -> dict:
    """``{"abs_rel", "delta_1.25", "valid_fraction"}`` of ``pred`` against ``gt`` (same shape ``[...]``)."""
    mask = valid_cells(pred, gt, valid)
    return {"abs_rel": abs_rel(pred, gt, mask), "delta_1.25": delta_accuracy(pred, gt, mask),
            "valid_fraction": float(mask.mean()) if mask.size else float("nan")}


def _valid_values(pred, gt, valid) -> tuple[np.ndarray, np.ndarray]:
    """``pred`` and ``gt`` at the valid cells, flat float64."""
    mask = valid_cells(pred, gt, valid)
    return np.asarray(pred, np.float64)[mask], np.asarray(gt, np.float64)[mask]
