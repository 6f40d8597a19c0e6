"""Wan2.2 VAE without torch: input errors, tiling/blending, Orbax round trip, tiled vs untiled, spatial sharding."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from mirage_jax.models.latent_space import PatchifyLatentSpace
from mirage_jax.models.vae import VAEConfig, WanVAE, load, save
from mirage_jax.models.vae.tiling import (
    blend_tiles,
    decode_margin,
    decode_tiled,
    encode_margin,
    encode_tiled,
    exact_cells,
    ramp,
    tile_starts,
)

TINY = VAEConfig(base_dim=8, decoder_base_dim=16)


@pytest.fixture(scope="module")
def vae():
    return WanVAE(TINY)


@pytest.mark.parametrize("frames", [2, 4, 8])
def test_length_not_4n_plus_1_is_error(vae, frames):
    with pytest.raises(ValueError, match="4N\\+1"):
        vae.encode(np.zeros((1, frames, 32, 32, 3), np.float32))


def test_bad_shapes_are_errors(vae):
    with pytest.raises(ValueError, match="multiples of 16"):
        vae.encode(np.zeros((1, 5, 40, 32, 3), np.float32))
    with pytest.raises(ValueError, match="latents"):
        vae.decode(np.zeros((1, 2, 2, 2, 16), np.float32))


def test_tile_geometry():
    assert tile_starts(10, 4, 2) == [0, 2, 4, 6]
    assert tile_starts(9, 4, 3) == [0, 3, 5]
    assert tile_starts(3, 4, 2) == [0]
    np.testing.assert_allclose(ramp(6, 2, True, True), [0.5, 1, 1, 1, 1, 0.5])
    np.testing.assert_allclose(ramp(4, 2, False, True), [1, 1, 1, 0.5])


def test_blending_is_exact_for_a_pointwise_decoder():
    """With a spatially local decoder (patchify) every tile agrees, so the blend must equal the full decode."""
    space = PatchifyLatentSpace(4)
    z = np.random.default_rng(0).normal(size=(1, 2, 10, 13, 48)).astype(np.float32)
    full = np.asarray(space.decode(z))
    np.testing.assert_allclose(np.asarray(blend_tiles(space.decode, z, (4, 5), (2, 3), 1, 4)), full, atol=1e-6)
    np.testing.assert_allclose(np.asarray(blend_tiles(space.encode, full, (4, 5), (2, 3), 4, 1)), z, atol=1e-6)


def test_orbax_round_trip(vae, tmp_path):
    save(vae, tmp_path / "vae")
    back = load(tmp_path / "vae")
    assert back.cfg == vae.cfg
    for a, b in zip(jax.tree.leaves(nnx.state(vae, nnx.Param)), jax.tree.leaves(nnx.state(back, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_margins_and_exact_cells():
    """Receptive-field radii counted by hand for the Wan2.2 layout (num_res_blocks 2, 4 levels): up path
    1 → +6 = 7 → ⌈8/2⌉ + 6 = 10 → ⌈11/2⌉ + 6 = 12 → ⌈13/2⌉ + 6 = 13; down path 4 → 2·4+2+4 = 14 → 34 → 74,
    + conv_in = 75 patch cells → ⌈75/8⌉ = 10 latent cells."""
    assert decode_margin(TINY) == decode_margin(VAEConfig()) == 13
    assert encode_margin(TINY) == encode_margin(VAEConfig()) == 10
    # tiles [0, 6) and [4, 10), margin 2: tile 0 exact on [0, 4), tile 1 on [6, 10); the overlap on neither
    np.testing.assert_array_equal(exact_cells(10, 6, 4, 2), [1, 1, 1, 1, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(exact_cells(10, 6, 4, 3), [1, 1, 1, 0, 0, 0, 0, 1, 1, 1])
    assert exact_cells(5, 8, 4, 3).all()  # one tile = the whole frame


# Tiling along the width only (2 latent rows keep it cheap): tiles [0, 28) and [12, 40) of 40 latent columns.
TILED_Z_SHAPE, TILE, STRIDE = (1, 3, 2, 40, 48), (2, 28), (2, 12)  # 3 latent frames: 2 cache hand-overs


@pytest.mark.slow
def test_tiled_decode_equals_untiled_away_from_seams(vae, monkeypatch):
    """The mid attention runs on the whole frame and only the local up path is tiled, so tiled == untiled
    wherever every covering tile is ≥ decode_margin (13) latent cells from its in-frame edges (here: outside the
    overlap, 60 % of the frame). Tolerance 1e-5: fp32, the two paths are compiled for different array sizes, so
    only the summation order differs (observed max 3.3e-6 at output std 0.46). Across the seam region, tiles saw
    zero padding instead of neighbours: whole-frame max |Δ| ≤ 0.15 (observed 0.066), mean ≤ 5e-3 (1.2e-3)."""
    z = np.random.default_rng(1).normal(size=TILED_Z_SHAPE).astype(np.float32)
    full = np.asarray(vae.decode(z))
    calls = []
    compiled = vae.compiled
    monkeypatch.setattr(vae, "compiled", lambda method, x: calls.append((method, x.shape)) or compiled(method, x))
    tiled = np.asarray(decode_tiled(vae, z, TILE, STRIDE))
    # memory bound: the high-resolution up path only ever ran on one latent tile at a time
    assert [m for m, _ in calls] == ["decode_features", "decode_up", "decode_up"]
    assert all(shape[2:4] == TILE for m, shape in calls if m == "decode_up")
    assert tiled.shape == full.shape and np.abs(tiled).max() <= 1.0 and (np.abs(tiled) == 1.0).any()  # clamped
    exact = np.repeat(exact_cells(TILED_Z_SHAPE[3], TILE[1], STRIDE[1], decode_margin(TINY)), vae.spatial_factor)
    assert 0.5 < exact.mean() < 1.0
    diff = np.abs(tiled - full)
    assert diff[:, :, :, exact].max() <= 1e-5
    assert diff.max() <= 0.15 and diff.mean() <= 5e-3


ENCODE_TAIL_MARGIN = 5  # encoder tail after the blend: mid block (2 resnets × 2 3×3 convs) + conv_out


@pytest.mark.slow
def test_tiled_encode_close_to_untiled_away_from_seams(vae):
    """Down path tiled, mid block on the whole blended latent: the features are exact outside
    ``~exact_cells(encode_margin)``; latents farther than the tail's conv radius (5) from those cells only see
    the seam error through the global mid attention. Tolerance there 1e-2 (latent std 0.78; observed 3.0e-3),
    whole frame ≤ 0.15 (observed 0.071)."""
    video = np.random.default_rng(2).uniform(-1, 1, (1, 9, 32, 40 * 16, 3)).astype(np.float32)
    full = np.asarray(vae.encode(video))
    tiled = np.asarray(encode_tiled(vae, video, TILE, STRIDE))
    assert tiled.shape == full.shape == (1, 3, 2, 40, 48)
    inexact = ~exact_cells(40, TILE[1], STRIDE[1], encode_margin(TINY))
    near = np.convolve(inexact, np.ones(2 * ENCODE_TAIL_MARGIN + 1), mode="same") > 0
    assert 0.2 < (~near).mean() < 1.0
    diff = np.abs(tiled - full)
    assert diff[:, :, :, ~near].max() <= 1e-2
    assert diff.max() <= 0.15


@pytest.mark.slow
def test_spatially_sharded_encode_equals_unsharded(vae):
    from mirage_jax.sharding import make_mesh

    if len(jax.devices()) < 2:
        pytest.skip("needs >= 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    mesh = make_mesh(data=1, fsdp=2, tensor=1, devices=jax.devices()[:2])
    video = np.random.default_rng(2).uniform(-1, 1, (1, 5, 32, 32, 3)).astype(np.float32)
    ref = np.asarray(vae.encode(video))
    sharded = np.asarray(vae.encode(video, mesh=mesh, axis="fsdp"))
    np.testing.assert_allclose(sharded, ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 2, 5, 7, 3, 4), (2, 1, 8, 8, 16, 8)])
def test_low_resolution_upsample_conv_equals_conv_of_upsampled_frames(shape):
    """The phase decomposition (2×2 convs of the low-res frames) against a numpy 3×3 conv of the 2×-repeated frames."""
    from mirage_jax.models.vae.layers import upsample2_conv_frames

    b, t, h, w, c, o = shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((b, t, h, w, c)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, c, o)).astype(np.float32)
    up = np.pad(x.repeat(2, axis=2).repeat(2, axis=3), ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0))).astype(np.float64)
    ref = sum(
        np.einsum("btyxc,co->btyxo", up[:, :, dy : dy + 2 * h, dx : dx + 2 * w], kernel[dy, dx])
        for dy in range(3) for dx in range(3)
    )  # fmt: skip
    out = np.asarray(upsample2_conv_frames(jax.numpy.asarray(x), jax.numpy.asarray(kernel)))
    assert out.shape == (b, t, 2 * h, 2 * w, o)
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5 * np.abs(ref).max())


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kernel_size", [(3, 3, 3), (3, 1, 1)])
def test_causal_conv_in_time_pairs_equals_direct_3d_conv(frames, kernel_size):
    """Winograd F(2, 3) over frame pairs (+ a direct odd last frame) against a numpy 3-D conv, valid in time."""
    from mirage_jax.models.numpy_init import Init
    from mirage_jax.models.vae.layers import CausalConv3d

    layer = CausalConv3d(6, 5, kernel_size, init=Init(3))
    kernel, bias = np.asarray(layer.kernel[...], np.float64), np.asarray(layer.bias[...], np.float64)
    bias += np.random.default_rng(4).standard_normal(bias.shape)
    layer.bias[...] = jax.numpy.asarray(bias, jax.numpy.float32)
    x = np.random.default_rng(5).standard_normal((2, frames + 2, 6, 7, 6)).astype(np.float32)
    kt, kh, kw = kernel_size
    xp = np.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0))).astype(np.float64)
    ref = bias + sum(
        np.einsum("btyxc,co->btyxo", xp[:, k : k + frames, dy : dy + 6, dx : dx + 7], kernel[k, dy, dx])
        for k in range(kt) for dy in range(kh) for dx in range(kw)
    )  # fmt: skip
    out = np.asarray(layer.conv(jax.numpy.asarray(x)))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * np.abs(ref).max())
