"""Pixel (un)shuffle with the Wan2.2 VAE channel order, channels-last.

``unshuffle(x [..., H, W, C], s) -> [..., H/s, W/s, C·s·s]`` with output channel ``c·s² + r·s + q`` where ``r``
is the *width* offset and ``q`` the *height* offset inside the s×s block — the order of diffusers'
``b c f (h q) (w r) -> b (c r q) f h w``, so converted VAE weights line up. ``shuffle`` is
the exact inverse. Both are pure reshapes/transposes (work on numpy and jax arrays alike).
"""

from __future__ import annotations


def unshuffle(x, s: int):
    """``[..., H, W, C] -> [..., H/s, W/s, C·s·s]`` (channel order (c, w-offset, h-offset))."""
    *lead, height, width, channels = x.shape
    x = x.reshape(*lead, height // s, s, width // s, s, channels)  # [..., h, q, w, r, C]
    n = len(lead)
    x = x.transpose(*range(n), n, n + 2, n + 4, n + 3, n + 1)  # [..., h, w, C, r, q]
    return x.reshape(*lead, height // s, width // s, channels * s * s)


def shuffle(x, s: int):
    """Inverse of :func:`unshuffle`: ``[..., h, w, C·s·s] -> [..., h·s, w·s, C]``."""
    *lead, height, width, channels = x.shape
    c = channels // (s * s)
    x = x.reshape(*lead, height, width, c, s, s)  # [..., h, w, C, r, q]
    n = len(lead)
    x = x.transpose(*range(n), n, n + 4, n + 1, n + 3, n + 2)  # [..., h, q, w, r, C]
    return x.reshape(*lead, height * s, width * s, c)
