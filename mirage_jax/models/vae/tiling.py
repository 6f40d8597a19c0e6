"""Spatial tiling with overlap blending, so large frames encode/decode in bounded memory.

Tiles are given in latent cells (``tile_hw``, ``tile_stride_hw``; official inference: 30×52 cells with stride
15×26). Each tile is processed on its own (one compiled function: every tile has the same size — the last tile
of a row/column is shifted back to end at the border instead of being cropped, a deviation from the official
positions that avoids recompiles) and accumulated with a weight mask: linear ramps ``(i+1)/border`` over the
``border = (tile - stride)`` overlap on every side that is not the frame border, the minimum of the height and
width ramps, as the official ``build_mask``; the sum is divided by the summed weights. Only the accumulators
and one tile's activations are alive at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Start cells of equally sized tiles covering ``[0, size)``; the last one ends exactly at ``size``."""
    if tile <= 0 or stride <= 0 or stride > tile:
        raise ValueError(f"tile/stride: expected 0 < stride <= tile, got tile={tile}, stride={stride}")
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def ramp(length: int, border: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """``[length]`` weights: 1, with linear ramps ``(i+1)/border`` at the start and/or the (mirrored) end."""
    w = np.ones(length, np.float32)
    border = min(border, length)
    if border > 0:
        up = (np.arange(border, dtype=np.float32) + 1) / border
        if ramp_start:
            w[:border] = np.minimum(w[:border], up)
        if ramp_end:
            w[-border:] = np.minimum(w[-border:], up[::-1])
    return w


def blend_tiles(
    fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    tile_hw: tuple[int, int],
    stride_hw: tuple[int, int],
    in_scale: int,
    out_scale: int,
) -> jax.Array:
    """Applies ``fn`` to overlapping spatial tiles of ``x [B, T, H, W, C]`` and blends the outputs.

    Tiles are in cells: cell ``i`` is ``in_scale`` pixels of the input and ``out_scale`` of the output
    (decode: 1 → 16; encode: 16 → 1). ``fn(tile [B, T, th·in, tw·in, C]) -> [B, T', th·out, tw·out, C']``.
    """
    cells_h, cells_w = x.shape[2] // in_scale, x.shape[3] // in_scale
    th, tw = min(tile_hw[0], cells_h), min(tile_hw[1], cells_w)
    starts_h = tile_starts(cells_h, th, min(stride_hw[0], th))
    starts_w = tile_starts(cells_w, tw, min(stride_hw[1], tw))
    border_h, border_w = (tile_hw[0] - stride_hw[0]) * out_scale, (tile_hw[1] - stride_hw[1]) * out_scale
    values = weight = None
    for i in starts_h:
        mask_h = ramp(th * out_scale, border_h, i > 0, i + th < cells_h)
        for j in starts_w:
            mask_w = ramp(tw * out_scale, border_w, j > 0, j + tw < cells_w)
            tile = x[:, :, i * in_scale : (i + th) * in_scale, j * in_scale : (j + tw) * in_scale]
            out = fn(tile)
            if values is None:
                shape = (out.shape[0], out.shape[1], cells_h * out_scale, cells_w * out_scale, out.shape[-1])
                values = jnp.zeros(shape, out.dtype)
                weight = jnp.zeros(shape[2:4], out.dtype)
            mask = jnp.asarray(np.minimum(mask_h[:, None], mask_w[None, :]))
            hs, ws = slice(i * out_scale, (i + th) * out_scale), slice(j * out_scale, (j + tw) * out_scale)
            values = values.at[:, :, hs, ws].add(out * mask[:, :, None])
            weight = weight.at[hs, ws].add(mask)
    return values / weight[:, :, None]


def decode_tiled(vae, latents, tile_hw=(30, 52), stride_hw=(15, 26)) -> jax.Array:
    """``WanVAE.decode`` in overlapping latent tiles (blended unclamped, then clamped to [-1, 1])."""
    out = blend_tiles(lambda z: vae.decode(z, clamp=False), jnp.asarray(latents), tile_hw, stride_hw, 1,
                      vae.spatial_factor)  # fmt: skip
    return jnp.clip(out, -1.0, 1.0)


def encode_tiled(vae, video, tile_hw=(30, 52), stride_hw=(15, 26)) -> jax.Array:
    """``WanVAE.encode`` in overlapping tiles (``tile_hw`` in latent cells = 16 pixels each)."""
    return blend_tiles(vae.encode, jnp.asarray(video), tile_hw, stride_hw, vae.spatial_factor, 1)
