"""Depth (and keep-mask) reduction from depth resolution ``[H, W]`` to the latent grid ``[h, w]``.

``H = sy·h`` and ``W = sx·w`` for integer factors. Both modes take the same depth value per cell: the
official ``F.interpolate(mode="bilinear", align_corners=False)`` sample at source coordinate ``s·u + (s-1)/2``
(for s = 16: 16u + 7.5, the mean of the 4 centre pixels of the 16×16 block; for odd s: the centre pixel),
computed with PyTorch's weight formula so finite depths match it bit for bit. They differ in which cells are
valid (stored):

- ``"bilinear"`` (official-compatible): the sampled depth must be finite and > 0. Zeros among the centre
  pixels are mixed in (the official "flying points"). A keep mask is reduced conservatively: a cell may be
  stored only if its *whole* block is keep=True (the official reads the block's top-left pixel, which lets
  thin dynamic objects leak into memory).
- ``"robust"``: a cell is valid only if *every* pixel of its block is finite, > 0 and keep=True, so holes
  and masked pixels never bleed into the sampled depth.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from mirage_jax.config import CHOICES

MODES = CHOICES["memory.depth_downsample"]


def _centre_taps(factor: int) -> tuple[int, int, float]:
    """Offsets of the two bilinear taps inside a block and the weight of the second tap."""
    return (factor - 1) // 2, factor // 2, (0.5 if factor % 2 == 0 else 0.0)


def downsample_depth(depths, keep, hw: Sequence[int], mode: str = "bilinear"):
    """Reduces ``depths [T, H, W]`` (and ``keep [T, H, W]`` bool or None) to the ``hw`` grid.

    Returns ``(depth [T, h, w] float32, ok [T, h, w] bool)``; ``ok`` marks cells that may be stored.
    """
    if mode not in MODES:
        raise ValueError(f"depth_downsample: expected one of {MODES}, got {mode!r}")
    depths = jnp.asarray(depths, jnp.float32)
    t, big_h, big_w = depths.shape
    h, w = hw
    sy, sx = big_h // h, big_w // w
    blocks = depths.reshape(t, h, sy, w, sx)
    y0, y1, ly = _centre_taps(sy)
    x0, x1, lx = _centre_taps(sx)
    # PyTorch's CPU kernel: the 4 taps weighted by products of the 1-D weights, summed in this order.
    depth = (
        blocks[:, :, y0, :, x0] * ((1.0 - ly) * (1.0 - lx))
        + blocks[:, :, y0, :, x1] * ((1.0 - ly) * lx)
        + blocks[:, :, y1, :, x0] * (ly * (1.0 - lx))
        + blocks[:, :, y1, :, x1] * (ly * lx)
    )
    if mode == "bilinear":
        ok = jnp.isfinite(depth) & (depth > 0)
        if keep is not None:
            ok &= jnp.asarray(keep, bool).reshape(t, h, sy, w, sx).all(axis=(2, 4))
    else:
        good = jnp.isfinite(blocks) & (blocks > 0)
        if keep is not None:
            good &= jnp.asarray(keep, bool).reshape(t, h, sy, w, sx)
        ok = good.all(axis=(2, 4))
    return jnp.where(ok, depth, 0.0), ok
