"""Wan2.2 VAE parity against diffusers ``AutoencoderKLWan`` (2.2 layout, tiny random config, fp32 CPU).

The diffusers folder carries its own, non-default ``latents_mean`` / ``latents_std`` (random per channel), which
the conversion must read and keep: the built-in Wan2.2 constants would give latents off by ~100%. Non-square
frames and a batch of 2.

Tolerances: encode (normalised latents) and decode max |Δ| ≤ 1e-4 (observed ~1e-5: fp32 conv summation order).
Causality invariants hold exactly in our implementation: the first chunk and the
scanned chunks see the same inputs whatever the video length.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mirage_jax.models.vae.constants import LATENTS_MEAN, LATENTS_STD
from tests.conftest import require_torch_stack

MEAN = np.random.default_rng(5).normal(0.0, 0.4, 48)  # the folder's own statistics (not the Wan2.2 ones)
STD = np.random.default_rng(6).uniform(0.3, 2.0, 48)


def _normalise(mu, mean, std):
    return (mu - np.asarray(mean)) / np.asarray(std)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(torch model, our converted model, video [2, 9, 32, 64, 3], torch latents normalised with the folder's
    statistics, torch decode, torch posterior mean, folder)."""
    torch, diffusers = require_torch_stack("diffusers")
    from mirage_jax.convert import from_diffusers

    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = diffusers.AutoencoderKLWan(
        base_dim=16, decoder_base_dim=32, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
        patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
        latents_mean=MEAN.tolist(), latents_std=STD.tolist(),
    ).eval()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():  # perturb every parameter so swapped norms/biases would show
            p.add_(0.1 * torch.randn_like(p))
        for p in model.decoder.conv_out.parameters():  # outputs mostly inside [-1, 1]: the clamp hides nothing
            p.mul_(0.1)
    folder = tmp_path_factory.mktemp("tiny_vae")
    model.save_pretrained(folder)
    ours, _ = from_diffusers(folder)

    video = np.random.default_rng(0).uniform(-0.6, 0.6, (2, 9, 32, 64, 3)).astype(np.float32)
    with torch.no_grad():
        mu = model.encode(torch.from_numpy(video).permute(0, 4, 1, 2, 3)).latent_dist.mode()
        out = model.decode(mu).sample  # diffusers' decode takes un-normalised latents
    mu = mu.permute(0, 2, 3, 4, 1).numpy()
    return model, ours, video, _normalise(mu, MEAN, STD), out.permute(0, 2, 3, 4, 1).numpy(), mu, folder


@pytest.fixture(scope="module")
def ours_latents(pair):
    _, ours, video, *_ = pair
    return np.asarray(ours.encode(video))


@pytest.mark.slow
def test_encode_matches_diffusers_with_the_folders_statistics(pair, ours_latents):
    z_ref = pair[3]
    assert ours_latents.shape == z_ref.shape == (2, 3, 2, 4, 48)
    assert np.abs(ours_latents - z_ref).max() <= 1e-4
    np.testing.assert_allclose(ours_latents[0], np.asarray(pair[1].encode(pair[2][:1]))[0], atol=1e-5)  # per example
    # the built-in Wan2.2 constants would be far off: the statistics were read, not assumed
    assert np.abs(_normalise(pair[5], LATENTS_MEAN, LATENTS_STD) - z_ref).max() > 0.5


@pytest.mark.slow
def test_decode_matches_diffusers(pair):
    _, ours, _, z_ref, out_ref, *_ = pair
    out = np.asarray(ours.decode(z_ref))
    assert out.shape == out_ref.shape == (2, 9, 32, 64, 3)
    assert np.abs(out - out_ref).max() <= 1e-4
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert np.mean(np.abs(out) > 0.999) < 0.05  # not saturated by the clamp: the comparison means something


@pytest.mark.slow
def test_convert_cli_keeps_the_folders_statistics(pair, ours_latents, tmp_path):
    """``mirage-jax convert vae`` of the diffusers folder stores its statistics; the latent space built from
    the converted checkpoint (``config.latent.vae.checkpoint``) encodes with them."""
    from mirage_jax.cli import main
    from mirage_jax.config import load_config
    from mirage_jax.models.latent_space import make_latent_space

    folder = pair[6]
    assert main(["convert", "vae", "--source", str(folder), "--out", str(tmp_path / "vae")]) == 0
    stored = json.loads((tmp_path / "vae" / "vae_config.json").read_text())
    np.testing.assert_allclose(stored["latents_mean"], MEAN, rtol=1e-6)
    np.testing.assert_allclose(stored["latents_std"], STD, rtol=1e-6)
    config = load_config("tiny_wan", [f"config.latent.vae.checkpoint={tmp_path / 'vae'}"])
    np.testing.assert_array_equal(np.asarray(make_latent_space(config).encode(pair[2])), ours_latents)


@pytest.mark.parametrize("change, message", [
    ({"attn_scales": [0.5]}, "attn_scales"),
    ({"clip_output": False}, r"does not support: \['clip_output'\]"),
    ({"latents_mean": None}, "latents_mean and latents_std are required"),
    ({"latents_std": [1.0] * 16}, "expected 48 values"),
    ({"scale_factor_spatial": 8}, "scale_factor_spatial=8"),
    ({"is_residual": False}, "is_residual"),
])
def test_unsupported_diffusers_fields_are_refused(change, message):
    from mirage_jax.convert.vae import config_from_diffusers

    config = {"_class_name": "AutoencoderKLWan", "base_dim": 16, "decoder_base_dim": 32, "z_dim": 48,
              "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [], "temperal_downsample":
              [False, True, True], "dropout": 0.0, "latents_mean": MEAN.tolist(), "latents_std": STD.tolist(),
              "is_residual": True, "in_channels": 12, "out_channels": 12, "patch_size": 2,
              "scale_factor_temporal": 4, "scale_factor_spatial": 16}
    assert config_from_diffusers(config).latents_std == tuple(STD)
    with pytest.raises(ValueError, match=message):
        config_from_diffusers({**config, **change})


@pytest.mark.slow
def test_causality_invariants_exact(pair, ours_latents):
    _, ours, video, *_ = pair
    np.testing.assert_array_equal(np.asarray(ours.encode(video[:, :1])), ours_latents[:, :1])
    np.testing.assert_array_equal(np.asarray(ours.encode(video[:, :5])), ours_latents[:, :2])


def test_original_names_map_to_diffusers():
    from mirage_jax.convert.vae import diffusers_to_path, original_to_diffusers

    cases = {
        "conv1.weight": "quant_conv.weight",
        "conv2.bias": "post_quant_conv.bias",
        "encoder.conv1.weight": "encoder.conv_in.weight",
        "decoder.head.0.gamma": "decoder.norm_out.gamma",
        "encoder.head.2.bias": "encoder.conv_out.bias",
        "encoder.middle.1.to_qkv.weight": "encoder.mid_block.attentions.0.to_qkv.weight",
        "decoder.middle.2.residual.3.gamma": "decoder.mid_block.resnets.1.norm2.gamma",
        "encoder.downsamples.1.downsamples.0.residual.6.weight": "encoder.down_blocks.1.resnets.0.conv2.weight",
        "encoder.downsamples.1.downsamples.0.shortcut.weight": "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
        "encoder.downsamples.2.downsamples.2.time_conv.bias": "encoder.down_blocks.2.downsampler.time_conv.bias",
        "decoder.upsamples.0.upsamples.3.resample.1.weight": "decoder.up_blocks.0.upsampler.resample.1.weight",
        "decoder.upsamples.3.upsamples.2.residual.0.gamma": "decoder.up_blocks.3.resnets.2.norm1.gamma",
        "model.decoder.conv1.bias": "decoder.conv_in.bias",
    }
    for original, expected in cases.items():
        assert original_to_diffusers(original) == expected
    assert diffusers_to_path("decoder.up_blocks.0.upsampler.resample.1.weight") == (
        "decoder", "up_blocks", 0, "upsampler", "resample", "kernel"
    )  # fmt: skip


def test_strict_loading_lists_problems(pair):
    from mirage_jax.convert.vae import load_into

    model, ours, *_ = pair
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}
    tensors.pop("encoder.conv_in.bias")
    tensors["encoder.bogus.weight"] = np.zeros(3, np.float32)
    tensors["quant_conv.bias"] = np.zeros(5, np.float32)
    with pytest.raises(ValueError) as err:
        load_into(ours, tensors.items(), original_names=False)
    text = str(err.value)
    assert "encoder.conv_in.bias" in text and "encoder.bogus.weight" in text and "quant_conv.bias" in text


def test_convert_cli_writes_loadable_orbax(pair, tmp_path):
    """``mirage-jax convert vae`` from an original-name (``Wan2.2_VAE``) safetensors file → Orbax."""
    import argparse

    import jax
    import safetensors.numpy
    from flax import nnx

    from mirage_jax.convert import vae as convert_vae
    from mirage_jax.models.vae import load

    model, ours, *_ = pair
    expected = [np.asarray(x) for x in jax.tree.leaves(nnx.state(ours, nnx.Param))]
    inverse = _diffusers_to_original_names(model.state_dict().keys())
    original = {inverse[k]: v.numpy() for k, v in model.state_dict().items()}
    safetensors.numpy.save_file(original, str(tmp_path / "vae_original.safetensors"))
    parser = argparse.ArgumentParser()
    convert_vae.add_arguments(parser)
    argv = ["--source", str(tmp_path / "vae_original.safetensors"), "--out", str(tmp_path / "out")]
    assert convert_vae.run(parser.parse_args([*argv, "--base-dim", "16", "--decoder-base-dim", "32"])) == 0
    got = [np.asarray(x) for x in jax.tree.leaves(nnx.state(load(tmp_path / "out"), nnx.Param))]
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_pth_through_cli_matches_diffusers(pair, tmp_path):
    """An original-name ``Wan2.2_VAE.pth`` written by ``torch.save`` → ``mirage-jax convert vae`` (the real entry
    point, ``torch.load(weights_only=True)``) → Orbax → encode/decode within 1e-4 of diffusers."""
    import torch

    from mirage_jax.cli import main
    from mirage_jax.models.vae import load

    model, _, video, _, out_ref, mu, _ = pair
    inverse = _diffusers_to_original_names(model.state_dict().keys())
    torch.save({inverse[k]: v for k, v in model.state_dict().items()}, tmp_path / "Wan2.2_VAE.pth")
    argv = ["--source", str(tmp_path / "Wan2.2_VAE.pth"), "--out", str(tmp_path / "out")]
    assert main(["convert", "vae", *argv, "--base-dim", "16", "--decoder-base-dim", "32"]) == 0
    converted = load(tmp_path / "out")
    z_builtin = _normalise(mu, LATENTS_MEAN, LATENTS_STD)  # the .pth carries no statistics: Wan2.2's apply
    assert np.abs(np.asarray(converted.encode(video)) - z_builtin).max() <= 1e-4
    assert np.abs(np.asarray(converted.decode(z_builtin)) - out_ref).max() <= 1e-4


class _NotATensor:
    """A pickled class instance: ``torch.load(weights_only=True)`` must refuse to build it."""


@pytest.mark.parametrize("payload", ["object", "non_tensor_value"])
def test_pth_with_non_tensor_payload_is_refused(tmp_path, payload):
    torch, _ = require_torch_stack("diffusers")
    from mirage_jax.convert.vae import read_tensors

    state = {"encoder.conv1.weight": torch.zeros(2)}
    state["extra"] = _NotATensor() if payload == "object" else "a string"
    torch.save(state, tmp_path / "bad.pth")
    expected = "refused, not a plain tensor state dict.*_NotATensor" if payload == "object" else "not tensors.*extra"
    with pytest.raises(ValueError, match=expected):
        read_tensors(tmp_path / "bad.pth")


def _diffusers_to_original_names(keys):
    """Inverse of ``original_to_diffusers`` by search over the original naming scheme (test helper)."""
    import re

    from mirage_jax.convert.vae import original_to_diffusers

    residual = [(".norm1.", ".residual.0."), (".conv1.", ".residual.2."), (".norm2.", ".residual.3."),
                (".conv2.", ".residual.6."), (".conv_shortcut.", ".shortcut.")]  # fmt: skip
    structure = [
        (r"^quant_conv\.", "conv1."),
        (r"^post_quant_conv\.", "conv2."),
        (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
        (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
        (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
        (r"\.mid_block\.resnets\.0\.", ".middle.0."),
        (r"\.mid_block\.resnets\.1\.", ".middle.2."),
        (r"\.mid_block\.attentions\.0\.", ".middle.1."),
        (r"^encoder\.down_blocks\.(\d+)\.downsampler\.", r"encoder.downsamples.\1.downsamples.2."),
        (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.downsamples.\1.downsamples.\2."),
        (r"^decoder\.up_blocks\.(\d+)\.upsampler\.", r"decoder.upsamples.\1.upsamples.3."),
        (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", r"decoder.upsamples.\1.upsamples.\2."),
    ]

    def candidates(key):
        if ".resnets." in key:
            for a, b in residual:
                key = key.replace(a, b)
        for pattern, repl in structure:
            key = re.sub(pattern, repl, key)
        return key

    out = {k: candidates(k) for k in keys}
    assert all(original_to_diffusers(v) == k for k, v in out.items())  # the table round-trips
    return out
