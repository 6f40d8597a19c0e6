"""Image metrics for consistency evaluation: PSNR and SSIM on frames in [-1, 1] (or uint8), and latent error.

SSIM is the standard Gaussian-window SSIM (σ = 1.5, 11 taps, K1 = 0.01, K2 = 0.03) on the [0, 1] range,
computed per channel and averaged, valid region only (no padding), as ``skimage.metrics.structural_similarity(
gaussian_weights=True, data_range=1)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def to_unit(frames) -> jax.Array:
    """Frames as float32 in [0, 1] from uint8 [0, 255] or float [-1, 1]."""
    frames = np.asarray(frames) if not isinstance(frames, jax.Array) else frames
    if frames.dtype == np.uint8:
        return jnp.asarray(frames, jnp.float32) / 255.0
    return (jnp.clip(jnp.asarray(frames, jnp.float32), -1, 1) + 1) / 2


@jax.jit
def _psnr(a, b):
    mse = jnp.mean((a - b) ** 2, axis=(-3, -2, -1))
    return 10 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


def psnr(a, b) -> np.ndarray:
    """PSNR (dB) per frame of ``a, b [..., H, W, 3]`` (uint8 or [-1, 1]); ``[...]``."""
    return np.asarray(_psnr(to_unit(a), to_unit(b)))


def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("size",))
def _ssim(a, b, size=11):
    kernel = jnp.asarray(np.outer(_gaussian(size), _gaussian(size)))[:, :, None, None]  # [k, k, 1, 1] HWIO

    def blur(x):  # valid Gaussian filter of every channel of x [N, H, W, C] -> [N, H-k+1, W-k+1, C]
        n, h, w, c = x.shape
        planes = jnp.moveaxis(x, -1, 1).reshape(n * c, h, w, 1)
        out = jax.lax.conv_general_dilated(planes, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.moveaxis(out.reshape(n, c, *out.shape[1:3]), 1, -1)

    lead = a.shape[:-3]
    a = a.reshape((-1,) + a.shape[-3:])
    b = b.reshape((-1,) + b.shape[-3:])
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    n = size * size
    scale = n / (n - 1)  # sample covariance, as skimage
    var_a = (blur(a * a) - mu_a**2) * scale
    var_b = (blur(b * b) - mu_b**2) * scale
    cov = (blur(a * b) - mu_a * mu_b) * scale
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return jnp.mean(s, axis=(-3, -2, -1)).reshape(lead)


def ssim(a, b) -> np.ndarray:
    """SSIM per frame of ``a, b [..., H, W, 3]`` (uint8 or [-1, 1]); frames must be at least 11×11."""
    a, b = to_unit(a), to_unit(b)
    if a.shape != b.shape or a.shape[-3] < 11 or a.shape[-2] < 11:
        raise ValueError(f"ssim: expected equal shapes [..., H>=11, W>=11, C], got {a.shape} and {b.shape}")
    return np.asarray(_ssim(a, b))


def masked_latent_error(scene, target, hit) -> dict:
    """Fidelity of a memory read: ``scene, target [T,h,w,C]`` compared on ``hit [T,h,w]`` cells.

    Returns ``{"hit_fraction", "mse", "psnr"}`` (PSNR with peak-to-peak 2, i.e. latents in [-1, 1]; NaN if
    nothing was hit).
    """
    scene, target, hit = np.asarray(scene, np.float32), np.asarray(target, np.float32), np.asarray(hit, bool)
    frac = float(hit.mean())
    if not hit.any():
        return {"hit_fraction": frac, "mse": float("nan"), "psnr": float("nan")}
    mse = float(np.mean((scene - target)[hit] ** 2))
    return {"hit_fraction": frac, "mse": mse, "psnr": float(10 * np.log10(4.0 / max(mse, 1e-10)))}
