"""Patchify latent space: exactness, the contract shapes, the channel order, and input errors."""

from __future__ import annotations

import numpy as np
import pytest

from mirage_jax.config import load_config
from mirage_jax.models.latent_space import make_latent_space


@pytest.fixture(scope="module")
def space():
    return make_latent_space(load_config("tiny"))


def _video(t=9, h=16, w=24, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (2, t, h, w, 3)).astype(np.float32)


def test_shapes_and_keyframes_exact(space):
    video = _video()
    z = np.asarray(space.encode(video))
    assert z.shape == (2, 3, 4, 6, 48) == space.latent_shape(video.shape)
    out = np.asarray(space.decode(z))
    assert out.shape == video.shape
    np.testing.assert_array_equal(out[:, ::4], video[:, ::4])  # frames 0, 4, 8 reproduced exactly
    np.testing.assert_array_equal(np.asarray(space.encode(out)), z)  # encode(decode(z)) == z


def test_interpolation_between_keyframes(space):
    z = np.random.default_rng(1).normal(size=(1, 3, 2, 2, 48)).astype(np.float32)
    out = np.asarray(space.decode(z))
    assert out.shape == (1, 9, 8, 8, 3)
    for j in (1, 2, 3):
        np.testing.assert_allclose(out[:, 4 + j], (1 - j / 4) * out[:, 4] + (j / 4) * out[:, 8], atol=1e-6)
    assert np.asarray(space.decode(z[:, :1])).shape == (1, 1, 8, 8, 3)


def test_channel_order_matches_wan_patchify(space):
    """Channel c·16 + r·4 + q holds pixel (4i+q, 4j+r) of colour c (q: height offset, r: width offset)."""
    video = _video(t=1, h=8, w=8, seed=2)
    z = np.asarray(space.encode(video))
    for c, r, q in [(0, 0, 0), (1, 2, 3), (2, 3, 1)]:
        np.testing.assert_array_equal(z[:, 0, 1, 0, c * 16 + r * 4 + q], video[:, 0, 4 + q, r, c])


@pytest.mark.parametrize(
    "shape, match",
    [((1, 8, 16, 16, 3), "4N\\+1"), ((1, 5, 18, 16, 3), "multiples of 4"), ((1, 5, 16, 16, 4), "\\[B, T, H, W, 3\\]")],
)
def test_bad_video_is_value_error(space, shape, match):
    with pytest.raises(ValueError, match=match):
        space.encode(np.zeros(shape, np.float32))


def test_bad_latents_is_value_error(space):
    with pytest.raises(ValueError, match="latents"):
        space.decode(np.zeros((1, 2, 4, 4, 47), np.float32))


def test_unknown_kind_and_channel_mismatch():
    c = load_config("tiny")
    c.latent.kind = "bogus"
    with pytest.raises(ValueError, match="latent.kind"):
        make_latent_space(c)
    c = load_config("tiny")
    c.latent.channels = 12
    with pytest.raises(ValueError, match="channels"):
        make_latent_space(c)


def test_wan_vae_kind_from_checkpoint(tmp_path):
    """kind "wan_vae": attributes, input errors before compute, and the Orbax checkpoint is what gets loaded."""
    import jax
    from flax import nnx

    from mirage_jax.models.vae import VAEConfig, WanVAE, save

    c = load_config("tiny")
    c.latent.kind, c.latent.spatial_factor = "wan_vae", 16
    c.latent.vae.base_dim, c.latent.vae.decoder_base_dim = 8, 16
    reference = WanVAE(VAEConfig(base_dim=8, decoder_base_dim=16), seed=3)
    save(reference, tmp_path / "vae")
    c.latent.vae.checkpoint = str(tmp_path / "vae")
    space = make_latent_space(c)
    assert (space.spatial_factor, space.temporal_factor, space.channels) == (16, 4, 48)
    assert space.latent_shape((2, 9, 64, 96, 3)) == (2, 3, 4, 6, 48)
    for a, b in zip(jax.tree.leaves(nnx.state(reference, nnx.Param)), jax.tree.leaves(nnx.state(space.vae, nnx.Param))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="4N\\+1"):
        space.encode(np.zeros((1, 6, 32, 32, 3), np.float32))
    c.latent.vae.base_dim = 16  # sizes disagree with the checkpoint
    with pytest.raises(ValueError, match="differ from the checkpoint"):
        make_latent_space(c)
