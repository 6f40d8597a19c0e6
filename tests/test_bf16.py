"""bf16 compute (the production default, ``model.compute_dtype="bfloat16"``) against fp32, same fp32 parameters.

Stated tolerances (bf16 keeps 8 mantissa bits, ~0.4% per rounding): the DiT + VACE + LoRA forward within 2% of
the output scale at the worst element and 1.5% in RMS (observed 0.6% / 0.5%); one rollout chunk (bf16 DiT in
the fp32 sampler loop, bf16 memory features) within 1% RMS in its latents (observed 0.15%), the decoded video
within 2 grey levels (observed 1); the Wan2.2 VAE (``latent.vae.compute_dtype="bfloat16"``, the official
inference precision) within 3% RMS in its latents and its decoded video, 0.1 at the worst pixel in [-1, 1]
(observed 1.3%, 1.5%, 0.043), untiled and tiled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirage_jax.config import load_config
from mirage_jax.data.synthetic import render_clip
from mirage_jax.models import build_model
from mirage_jax.world import rollout

BASE = ["data.height=32", "data.width=56", "sample.steps=4", "sample.chunk_frames=17", "model.vace_layers=(0,)",
        "model.lora_alpha=8.0"]
BF16 = ["model.compute_dtype=bfloat16", "memory.feature_dtype=bfloat16"]


@pytest.fixture(scope="module")
def models():
    """The same perturbed parameters (LoRA B and VACE after_proj non-zero) in an fp32 and a bf16-compute model."""
    fp32 = build_model(load_config("tiny", BASE), seed=0)
    leaves, treedef = jax.tree.flatten(nnx.state(fp32))
    keys = jax.random.split(jax.random.key(1), len(leaves))
    nnx.update(fp32, jax.tree.unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape, x.dtype)
                                                  for x, k in zip(leaves, keys)]))
    bf16 = build_model(load_config("tiny", BASE + BF16), seed=0)
    nnx.update(bf16, nnx.state(fp32))
    return fp32, bf16


def _relative(a, b):
    return np.abs(a - b).max() / np.abs(a).max(), np.sqrt(((a - b) ** 2).mean() / (a**2).mean())


def test_dit_forward_in_bf16(models):
    fp32, bf16 = models
    assert bf16.blocks.ffn_in.kernel[...].dtype == jnp.float32  # fp32 master parameters either way
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 6, 8, 14, 48)), jnp.float32)
    t = jnp.asarray([[0, 0, 800, 800, 800, 0], [0, 0, 300, 300, 300, 0]], jnp.float32)
    ctx = jnp.asarray(rng.normal(size=(2, 8, 32)), jnp.float32)
    control = jnp.asarray(rng.normal(size=(2, 5, 8, 14, 96)), jnp.float32)
    want = np.asarray(fp32(x, t, ctx, num_references=1, control=control))
    got = np.asarray(bf16(x, t, ctx, num_references=1, control=control))
    assert got.dtype == np.float32
    worst, rms = _relative(want, got)
    assert worst <= 0.02 and rms <= 0.015
    assert rms > 1e-4  # the bf16 path really computes in bf16


@pytest.mark.slow
def test_one_rollout_chunk_in_bf16(models):
    fp32, bf16 = models
    clip = render_clip(1, 17, 32, 56, "revisit")
    want = rollout(load_config("tiny", BASE), fp32, clip, 17, progress=False)
    got = rollout(load_config("tiny", BASE + BF16), bf16, clip, 17, progress=False)
    assert got.cache.features.dtype == jnp.bfloat16
    _, rms = _relative(want.latents, got.latents)
    assert 0 < rms <= 0.01
    assert np.abs(want.video.astype(int) - got.video.astype(int)).max() <= 2


@pytest.mark.parametrize("tiled", [False, True])
def test_vae_in_bf16(tiled):
    from mirage_jax.models.latent_space import make_latent_space

    tiles = ["latent.vae.tile_hw=(2,4)", "latent.vae.tile_stride_hw=(1,2)", f"latent.vae.tiled={tiled}"]
    fp32 = make_latent_space(load_config("tiny_wan", tiles))
    bf16 = make_latent_space(load_config("tiny_wan", [*tiles, "latent.vae.compute_dtype=bfloat16"]))
    assert bf16.vae.compute_dtype == "bfloat16" and bf16.vae.encoder.conv_in.kernel[...].dtype == jnp.float32
    video = np.random.default_rng(0).uniform(-0.8, 0.8, (1, 9, 64, 96, 3)).astype(np.float32)
    want, got = np.asarray(fp32.encode(video)), np.asarray(bf16.encode(video))
    assert got.dtype == np.float32 and 1e-4 < _relative(want, got)[1] <= 0.03
    decoded, decoded_bf16 = np.asarray(fp32.decode(want)), np.asarray(bf16.decode(want))
    assert 1e-4 < _relative(decoded, decoded_bf16)[1] <= 0.03 and np.abs(decoded - decoded_bf16).max() <= 0.1
