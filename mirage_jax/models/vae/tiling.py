"""Spatial tiling with overlap blending, so large frames encode/decode in bounded memory.

Only the spatially *local* part of each network is tiled; the part with the global per-frame attention (the
mid block) runs on the whole frame at latent resolution, where it is cheap:

- ``decode_tiled``: head = post_quant_conv → conv_in → mid block on the whole latent (chunk by chunk with its
  causal cache); then the up path (up blocks → norm → conv_out, the expensive high-resolution part) per tile,
  each tile with its own causal cache across the time chunks (first chunk: the temporal up-samplers' special
  case). Only one tile's high-resolution activations are alive at a time (one compiled call per tile),
  plus the output-sized accumulator (and its updated copy). Output clamped to [-1, 1] after blending.
- ``encode_tiled``: the down path (conv_in → down blocks) per tile with its own cache (frame 0, then groups of
  4), blended at latent resolution; then mid block → norm → conv_out → quant on the whole latent.

What is exact, and where: the tiled part is a stack of convolutions, so a tile's output at a cell farther than
the part's receptive-field radius (:func:`decode_margin` / :func:`encode_margin`, in latent cells) from every
tile edge *inside* the frame is the untiled value (frame borders pad with zeros in both). A cell all of whose
covering tiles are exact there (:func:`exact_cells`) is therefore the untiled result up to fp32 summation order:
``decode_tiled`` everywhere in that region (its head is computed on the whole frame). ``encode_tiled`` is exact
there only up to the down-path features: its mid-block attention (global) and convolutions read the blended
features near the seams, so seam errors leak into every latent at a much reduced size (see the tests for
measured bounds). Near seams both are a blend of tiles that saw zero padding instead of their neighbours.
The margins of the Wan2.2 layout are 13 (decode) and 10 (encode) latent cells. The official 30/15 tiles
overlap by half, so every interior cell has a covering tile within 13 cells of an edge: there the decode is
a blend of tiles that each lack some context on one side. That error decays fast away from the edge (tiny
random VAE, per latent column: ~4e-2 within 3 cells of a tile edge, ~3e-3 at 5, ~2e-4 at 7, fp32 noise
~3e-6 beyond the margin). With an overlap ``tile - stride ≥ margin`` the cells covered by one tile only are
exact (the tests' tiling); inside an overlap wider than ``2·margin`` its middle is exact too.

Tile positions: tiles are given in latent cells (``tile_hw``, ``tile_stride_hw``; official inference: 30×52
cells with stride 15×26) and start at multiples of the stride; unlike the official loop, whose last tile of a
row/column is cropped at the border (a smaller tile), ours is shifted back to end at the border. All tiles then
have one size, so the tiled part compiles once; it only moves the seam region, which the blend handles anyway.
Blending: every output is accumulated with a weight mask (linear ramps ``(i+1)/border`` over the
``border = tile - stride`` overlap on every side that is not the frame border, the minimum of the height and
width ramps, as the official ``build_mask``) and divided by the summed weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax.video_shapes import check_latents, check_video


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


def decode_margin(cfg) -> int:
    """Receptive-field radius of the decoder's up path, in latent cells (conservative, rounded up).

    Counted backwards from the output: conv_out; per up block ``2·(num_res_blocks + 1)`` 3×3 convs at its input
    resolution, and (up blocks) one 3×3 conv after the nearest 2× upsampling (radius ``k`` there → ``⌈k/2⌉``).
    """
    blocks = len(cfg.dim_mult)
    k = 1  # conv_out
    for i in reversed(range(blocks)):
        if i != blocks - 1:
            k = math.ceil((k + 1) / 2)  # upsampler conv at 2× resolution, then nearest upsampling
        k += 2 * (cfg.num_res_blocks + 1)
    return k


def encode_margin(cfg) -> int:
    """Receptive-field radius of the encoder's down path, in latent cells (conservative, rounded up).

    Counted backwards from the latent: per down block ``2·num_res_blocks`` 3×3 convs at its input resolution and
    (down blocks) the stride-2 3×3 conv (radius ``k`` → ``2k + 2``); conv_in; then patch cells → latent cells.
    """
    blocks = len(cfg.dim_mult)
    k = 0
    for i in reversed(range(blocks)):
        if i != blocks - 1:
            k = 2 * k + 2
        k += 2 * cfg.num_res_blocks
    return math.ceil((k + 1) / 2 ** (blocks - 1))  # + conv_in, at patch resolution (2^(blocks-1) per latent cell)


def exact_cells(size: int, tile: int, stride: int, margin: int) -> np.ndarray:
    """``[size]`` bool: cells where every covering tile is at least ``margin`` cells from its in-frame edges.

    Along one axis of :func:`blend_tiles` with ``tile``/``stride`` in cells (a 2-D cell is exact when both of its
    coordinates are); there, a tiled local part with that receptive-field radius equals the untiled one.
    """
    tile = min(tile, size)
    exact = np.ones(size, bool)
    for start in tile_starts(size, tile, min(stride, tile)):
        end = start + tile
        inner = np.zeros(size, bool)
        inner[start + (margin if start > 0 else 0) : end - (margin if end < size else 0)] = True
        exact[start:end] &= inner[start:end]
    return exact


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
    """``WanVAE.decode`` with the up path in overlapping latent tiles (blended unclamped, then clamped to [-1, 1]).

    Normalised latents ``[B, t, h, w, z_dim]`` → ``[B, 1+4(t-1), 16h, 16w, 3]``; exactness as in the module
    docstring (margin :func:`decode_margin`).
    """
    check_latents(jnp.shape(latents), vae.z_dim)
    features = vae.compiled("decode_features", vae.denormalize(jnp.asarray(latents, jnp.float32)))
    out = blend_tiles(lambda f: vae.compiled("decode_up", f), features, tile_hw, stride_hw, 1, vae.spatial_factor)
    return jnp.clip(out, -1.0, 1.0)


def encode_tiled(vae, video, tile_hw=(30, 52), stride_hw=(15, 26)) -> jax.Array:
    """``WanVAE.encode`` with the down path in overlapping tiles (``tile_hw`` in latent cells = 16 pixels each).

    ``[B, 4N+1, H, W, 3]`` in [-1, 1] → normalised latents ``[B, N+1, H/16, W/16, z_dim]``; exactness as in the
    module docstring (margin :func:`encode_margin`).
    """
    check_video(jnp.shape(video), vae.spatial_factor)
    video = jnp.asarray(video, jnp.float32)
    features = blend_tiles(lambda v: vae.compiled("encode_features", v), video, tile_hw, stride_hw,
                           vae.spatial_factor, 1)  # fmt: skip
    return vae.normalize(vae.compiled("encode_tail", features))
