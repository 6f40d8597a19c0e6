"""Where real references and preceding latents sit in the fixed number of slots of the DiT sequence.

The sequence is ``[references (R slots) | targets (T) | preceding (P slots)]``; RoPE gives the reference slots
the temporal positions ``-R..-1`` and the preceding slots ``T..T+P-1`` (``mirage_jax.models.rope``). The
official pipeline pads nothing: ``r`` references take ``-r..-1`` and ``p`` preceding latents ``T..T+p-1``.
So with fewer real entries than slots, the references fill the LAST slots and the preceding latents the FIRST
ones, with the padding (masked out as attention keys) on the far side of each block: every real entry keeps
the position the official gives it. Entries are numpy (the data pipeline, on the host) or jax arrays (the
generator, on the device); the masks are numpy. Training examples (``mirage_jax.data.examples``), the loss's capping
(``mirage_jax.train.loss``) and the generator (``mirage_jax.world.generator``) all use these functions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _placed(items, slots: int, last: bool) -> tuple[np.ndarray, np.ndarray]:
    xp = jnp if isinstance(items, jax.Array) else np  # device arrays stay on the device (the generator)
    items = xp.asarray(items)
    n = len(items)
    if n > slots:
        raise ValueError(f"{n} entries for {slots} slots")
    pad = xp.zeros((slots - n,) + items.shape[1:], items.dtype)
    mask = np.arange(slots) >= slots - n if last else np.arange(slots) < n
    return (xp.concatenate([pad, items]) if last else xp.concatenate([items, pad])), mask


def place_references(items, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """``items [n, ...]`` (best first) in the last ``n`` of ``slots``; returns ``(padded [slots, ...], mask)``."""
    return _placed(items, slots, last=True)


def place_preceding(items, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """``items [n, ...]`` (oldest first) in the first ``n`` of ``slots``; returns ``(padded [slots, ...], mask)``."""
    return _placed(items, slots, last=False)


def keep_reference_slots(array, kept: int):
    """The last ``kept`` reference slots of ``array [B, R, ...]`` (where the real references are)."""
    return array[:, array.shape[1] - kept:]


def keep_preceding_slots(array, kept: int):
    """The first ``kept`` preceding slots of ``array [B, P, ...]`` (where the real preceding latents are)."""
    return array[:, :kept]
