"""3D rotary position embedding of Wan with Mirage's segment-aware positions (docs/design.md §4).

Sequence layout ``[references (R) | targets | preceding]``; a token of frame ``f`` (0-based in that layout),
patch row ``i`` and column ``j`` has positions

* temporal ``f - R`` (references ``-R..-1``, targets ``0..``, preceding continue after the targets),
* height ``i + h`` for references and ``i`` otherwise (``h`` = token-grid height),
* width ``j``.

The head dim ``d`` is split into (t, h, w) = ``(d - 4(d//6), 2(d//6), 2(d//6))`` dims; each axis rotates
interleaved pairs ``(x[2k], x[2k+1])`` with frequencies ``theta^(-2k/d_axis)``. Positions are static (they
depend only on shapes), so the cos/sin tables are built in float64 numpy at trace time and enter the program
as fp32 constants.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rope_positions(num_frames: int, height: int, width: int, num_references: int) -> np.ndarray:
    """Integer positions ``[num_frames*height*width, 3]`` (t, h, w) of the tokens, in (f, i, j) order."""
    if not 0 <= num_references < num_frames:
        raise ValueError(f"num_references={num_references} must be in [0, num_frames={num_frames})")
    f, i, j = np.meshgrid(np.arange(num_frames), np.arange(height), np.arange(width), indexing="ij")
    is_ref = f < num_references
    pos = np.stack([f - num_references, i + height * is_ref, j], axis=-1)
    return pos.reshape(-1, 3)


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """The (t, h, w) split of the head dim, e.g. 128 -> (44, 42, 42), 32 -> (12, 10, 10)."""
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"head_dim={head_dim} must be even and >= 6 for 3D RoPE")
    s = head_dim // 6
    return head_dim - 4 * s, 2 * s, 2 * s


def rope_tables(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` float32 tables ``[N, head_dim/2]`` for positions ``[N, 3]`` (computed in float64)."""
    angles = []
    for axis, dim in enumerate(axis_dims(head_dim)):
        freqs = theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
        angles.append(positions[:, axis : axis + 1].astype(np.float64) * freqs)
    angles = np.concatenate(angles, axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates interleaved pairs of ``x`` [B, *N, H, d] by tables [*N, d/2] (fp32 math, returns ``x.dtype``);
    ``*N`` is the token axis, or the frame and token axes ``F, S``."""
    pairs = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    c, s = cos[..., None, :], sin[..., None, :]
    out = jnp.stack([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)
