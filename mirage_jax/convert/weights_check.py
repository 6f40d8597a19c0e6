"""A checkpoint tensor loaded as a parameter must be a weight: floating point and finite.

An integer tensor under a parameter's name (an index buffer, a quantised export) or one holding NaN/inf (a
diverged or corrupt training run) would load without complaint and give a model that computes nonsense; the
converters refuse it, naming the tensor and the file.
"""

from __future__ import annotations

import numpy as np


def weight_problem(value: np.ndarray) -> str | None:
    """Why ``value`` is not a usable weight (``None`` when it is)."""
    dtype = np.dtype(value.dtype)
    if dtype.kind != "f" and dtype.name != "bfloat16":
        return f"dtype {dtype.name}, expected floating point"
    finite = np.isfinite(np.asarray(value, np.float32))
    if not finite.all():
        return f"{finite.size - int(finite.sum())} of {finite.size} values are NaN or infinite"
    return None


def check_weight(value: np.ndarray, name: str, where: str | None) -> None:
    """``ValueError`` naming ``name`` (and the file ``where``) when ``value`` is not a usable weight."""
    problem = weight_problem(value)
    if problem is not None:
        raise ValueError(f"{where + ': ' if where else ''}tensor {name!r}: {problem}")
