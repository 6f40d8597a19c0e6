"""Input checks for the memory API: shapes always, values only when the arrays are concrete (not tracers).

Every failure is a ``ValueError`` naming the argument and what was expected, raised before anything is stored:
shapes before any compute; ``write`` checks its values on the device in its lift, before the insert.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax import geometry


def all_finite(x):
    """Whether every value of ``x`` is finite, as a device scalar (one pass, no host copy).

    ``x·0`` is 0 for finite x and NaN for ±inf/NaN, so the sum is finite exactly when every value is; a float
    sum vectorises on CPU where a boolean all-reduction does not (measured 2x faster).
    """
    return jnp.isfinite(jnp.sum(x * 0))


_all_finite = jax.jit(all_finite)


NON_FINITE_LATENTS = "latents: contains non-finite values"

CONSUMED = "memory was consumed by an earlier write(..., donate=True); use the memory that call returned"

INT32_MAX = int(np.iinfo(np.int32).max)


def is_concrete(*arrays) -> bool:
    """True when no argument is a JAX tracer (so its values can be inspected on the host)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_not_consumed(mem) -> None:
    """Refuses a memory whose buffers were donated to an earlier in-place write (they no longer exist)."""
    arrays = [a for a in jax.tree_util.tree_leaves(mem) if is_concrete(a) and hasattr(a, "is_deleted")]
    if any(a.is_deleted() for a in arrays):
        raise ValueError(CONSUMED)


def check_near(near, name: str = "near") -> float:
    """A near plane must be a finite depth > 0 (metres); returns it as a float."""
    try:
        value = float(near)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a finite depth > 0 (metres), got {near!r}") from None
    if isinstance(near, bool) or not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a finite depth > 0 (metres), got {near!r}")
    return value


def check_views_fit(num_views: int, num_points: int, name: str = "intrinsics") -> None:
    """A z-buffer of ``num_views`` views indexes ``num_views x num_points`` projections with int32."""
    if num_views * num_points > INT32_MAX:
        raise ValueError(f"{name}: {num_views} views x {num_points} points exceed int32 indexing ({INT32_MAX}); "
                         f"use at most {max(1, INT32_MAX // num_points)} views per call")


def check_hw(hw) -> tuple[int, int]:
    """``hw`` must be two positive ints; returns them as a tuple (hashable, for static jit arguments)."""
    try:
        h, w = (int(v) for v in hw)
        exact = all(int(v) == v and not isinstance(v, bool) for v in hw)
    except (TypeError, ValueError):
        raise ValueError(f"hw: expected (h, w) positive ints, got {hw!r}") from None
    if not exact or h < 1 or w < 1:
        raise ValueError(f"hw: expected (h, w) positive ints, got {hw!r}")
    return h, w


def _as_array(x):
    """``x`` itself if it is already an array (JAX, numpy or tracer), else a numpy array of it."""
    return x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)


def _shape(x, name: str) -> tuple[int, ...]:
    if not hasattr(x, "shape"):
        x = np.asarray(x)
    return tuple(x.shape)


def _check_float(x, name: str, what: str) -> None:
    """``x`` must hold real floats (a bool, integer or complex array would be cast silently)."""
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{name}: expected a float array of {what}, got dtype {dtype}")


def check_cameras(intrinsics, cam2world, prefix: str = "", *, check_values: bool = True):
    """``intrinsics [T, 3, 3]`` finite with positive focals, ``cam2world [T, 4, 4]`` rigid; returns float32 arrays.

    ``check_values=False`` checks the shapes only and leaves the values to the caller (``geometry.camera_faults`` on
    the device, then this check where it flags something); the arrays stay where they are (no host copy).
    """
    k_name, p_name = f"{prefix}intrinsics", f"{prefix}cam2world"
    ks, ps = _shape(intrinsics, k_name), _shape(cam2world, p_name)
    if len(ks) != 3 or ks[1:] != (3, 3) or ks[0] < 1:
        raise ValueError(f"{k_name}: expected shape [T, 3, 3] with T >= 1, got {list(ks)}")
    if len(ps) != 3 or ps[1:] != (4, 4) or ps[0] != ks[0]:
        raise ValueError(f"{p_name}: expected shape [{ks[0]}, 4, 4] (one pose per intrinsics), got {list(ps)}")
    if not check_values:
        return _as_float32(intrinsics), _as_float32(cam2world)
    if is_concrete(intrinsics, cam2world):  # checked on the host; handed to jit as float32 numpy arrays
        return geometry.validate_intrinsics(intrinsics, k_name), geometry.validate_poses(cam2world, p_name)
    return jnp.asarray(intrinsics, jnp.float32), jnp.asarray(cam2world, jnp.float32)


def _as_float32(x):
    """``x`` as float32, on the device if it is a device array (no host round trip)."""
    if getattr(x, "dtype", None) == np.float32:
        return x
    return jnp.asarray(x, jnp.float32) if isinstance(x, jax.Array) else np.asarray(x, np.float32)


def check_write_inputs(channels: int, latents, depths, intrinsics, cam2world, keep, mode: str, modes: Sequence[str],
                       *, check_values: bool = True):
    """Checks ``write``'s arguments; returns ``(latents, depths, intrinsics, cam2world, keep)`` as arrays.

    ``check_values=False`` checks shapes and dtypes only and leaves the values of the latents and cameras to
    the caller (``write`` checks them on the device, inside its lift, with ``geometry.camera_faults``).
    """
    if mode not in modes:
        raise ValueError(f"depth_downsample: expected one of {tuple(modes)}, got {mode!r}")
    ls, ds = _shape(latents, "latents"), _shape(depths, "depths")
    if len(ls) != 4 or min(ls) < 1:
        raise ValueError(f"latents: expected shape [T, h, w, C] (non-empty), got {list(ls)}")
    t, h, w, c = ls
    _check_float(latents, "latents", "latent features")
    _check_float(depths, "depths", "metric z-depth")
    if c != channels:
        raise ValueError(f"latents: expected {channels} channels (the memory's), got shape {list(ls)}")
    if len(ds) != 3 or ds[0] != t:
        raise ValueError(f"depths: expected shape [{t}, H, W] (one depth map per latent frame), got {list(ds)}")
    if ds[1] < h or ds[2] < w or ds[1] % h or ds[2] % w:
        raise ValueError(
            f"depths: H, W must be integer multiples of the latent grid ({h}, {w}), got {list(ds)}"
        )
    if keep is not None:
        kshape = _shape(keep, "keep")
        if kshape != ds:
            raise ValueError(f"keep: expected shape {list(ds)} (like depths), got {list(kshape)}")
        dtype = keep.dtype if hasattr(keep, "dtype") else np.asarray(keep).dtype
        if dtype != np.bool_:
            raise ValueError(f"keep: expected a bool mask (True = static, may be stored), got dtype {dtype}")
    intrinsics, cam2world = check_cameras(intrinsics, cam2world, check_values=check_values)
    if intrinsics.shape[0] != t:
        raise ValueError(f"intrinsics: expected shape [{t}, 3, 3] (one per latent frame), got {list(intrinsics.shape)}")
    if check_values and is_concrete(latents) and not bool(_all_finite(_as_array(latents))):
        raise ValueError(NON_FINITE_LATENTS)
    # arrays are passed on as given (jit converts them once, at the call): an eager conversion here costs
    # more than the write of a small memory
    keep = None if keep is None else _as_array(keep)
    return _as_array(latents), _as_array(depths), intrinsics, cam2world, keep
