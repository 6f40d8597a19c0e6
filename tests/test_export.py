"""``mirage-jax export``: the official Mirage names, a round trip through ``convert dit`` that is bit-exact
(base + vace + lora) or output-exact to fp32 rounding (dit with the LoRA merged + vace), bf16 files, the LoRA
multiplier carried to ``convert``, and the errors (a model without VACE, an existing output folder)."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirage_jax.cli import main
from mirage_jax.config import load_config
from mirage_jax.convert import dit as convert_dit
from mirage_jax.convert.export import write_export
from mirage_jax.convert.safetensors_io import SafetensorsFile
from mirage_jax.models import build_model

OVERRIDES = ["model.lora_alpha=8.0", "model.vace_layers=(0,2)", "model.num_layers=3"]  # alpha != rank, sparse VACE

OFFICIAL = {
    "lora": re.compile(r"^pipe\.dit\.blocks\.\d+\.((self_attn|cross_attn)\.[qkvo]|ffn\.[02])\.lora_[AB]\.weight$"),
    "vace": re.compile(r"^vace_(patch_embedding|blocks\.\d+\.[a-z_0-9.]+)\.(weight|bias)$"
                       r"|^vace_blocks\.\d+\.modulation$"),
    "base": re.compile(r"^(blocks\.\d+\.|head\.|patch_embedding|text_embedding|time_embedding|time_projection)"),
}


def _flat(model):
    return {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model))}


def _perturbed(config, seed=0):
    """A model whose every parameter (LoRA B and VACE after_proj included) is non-zero and distinct."""
    model = build_model(config, seed=seed)
    state = nnx.state(model)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))
    return model


def _without_lora(model):
    """A copy with every LoRA B zeroed: its exported ``dit.safetensors`` is the un-merged base."""
    copy = nnx.clone(model)
    state = nnx.state(copy)
    for path, var in nnx.to_flat_state(state):
        if path[-1] == "lora_b":
            var.set_value(jnp.zeros_like(var[...]))
    nnx.update(copy, state)
    return copy


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    config = load_config("tiny", OVERRIDES)
    model = _perturbed(config)
    info = write_export(model, config, root / "run", record={"source": "test"})
    write_export(_without_lora(model), config, root / "base")
    return root, config, model, info


def test_official_names_and_metadata(exported):
    root, config, _, info = exported
    assert info["official_lora_alpha"] == 2.0 and info["lora_merged_into_dit"] and info["dtype"] == "float32"
    assert json.loads((root / "run" / "export.json").read_text())["source"] == "test"
    for group, file in info["files"].items():
        keys = SafetensorsFile(root / "run" / file).keys()
        assert keys and all(OFFICIAL[group].match(k) for k in keys), (group, keys[:5])
    lora = SafetensorsFile(root / "run" / "lora.safetensors")
    assert lora.metadata["lora_rank"] == "4" and float(lora.metadata["lora_alpha"]) == 8.0
    assert lora.shape("pipe.dit.blocks.2.ffn.0.lora_A.weight") == (4, 64)  # torch (r, in)
    assert lora.shape("pipe.dit.blocks.2.ffn.0.lora_B.weight") == (128, 4)  # torch (out, r)
    vace = SafetensorsFile(root / "run" / "vace.safetensors")
    assert vace.shape("vace_patch_embedding.weight") == (64, 96, 1, 2, 2)  # Conv3d (O, I, pt, ph, pw)
    assert vace.shape("vace_blocks.0.modulation") == (1, 6, 64)
    assert {k.split(".")[1] for k in vace.keys() if k.startswith("vace_blocks.")} == {"0", "1"}  # two blocks


def test_base_vace_lora_convert_back_bit_for_bit(exported):
    root, config, model, _ = exported
    inputs = [root / "base" / "dit.safetensors", root / "run" / "vace.safetensors", root / "run" / "lora.safetensors"]
    converted, groups = convert_dit.load_model(config, inputs)
    assert groups == {"loaded": ["base", "lora", "vace"], "initialised": []}
    ours, theirs = _flat(model), _flat(converted)
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_array_equal(theirs[key], ours[key], err_msg=key)


def test_merged_dit_and_vace_compute_the_same_model(exported):
    root, config, model, _ = exported
    files = [root / "run" / "dit.safetensors", root / "run" / "vace.safetensors"]
    merged, groups = convert_dit.load_model(config, files)
    assert groups["initialised"] == ["lora"]  # a fresh LoRA: B = 0, no change
    rng = np.random.default_rng(0)
    latents = jnp.asarray(rng.normal(size=(2, 5, 4, 6, 48)), jnp.float32)  # R=1 reference, non-square grid
    timesteps = jnp.asarray([[0, 0, 900, 900, 0], [0, 0, 400, 400, 0]], jnp.float32)
    context = jnp.asarray(rng.normal(size=(2, 7, 32)), jnp.float32)
    control = jnp.asarray(rng.normal(size=(2, 4, 4, 6, 96)), jnp.float32)
    want = np.asarray(model(latents, timesteps, context, num_references=1, control=control))
    got = np.asarray(merged(latents, timesteps, context, num_references=1, control=control))
    lora_effect = np.abs(want - np.asarray(_without_lora(model)(latents, timesteps, context, num_references=1,
                                                                 control=control))).max()
    assert lora_effect > 1e-2  # the LoRA matters, so merging it is tested
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_bfloat16_export_and_lora_scale_check(exported, tmp_path):
    root, config, model, _ = exported
    write_export(model, config, tmp_path / "bf16", dtype="bfloat16")
    file = SafetensorsFile(tmp_path / "bf16" / "vace.safetensors")
    got = np.asarray(file["vace_blocks.0.after_proj.weight"], np.float32)
    want = np.asarray(jnp.asarray(model.vace.blocks.after_proj.kernel[...][0].T, jnp.bfloat16), np.float32)
    np.testing.assert_array_equal(got, want)
    other = load_config("tiny", [*OVERRIDES, "model.lora_alpha=4.0"])
    with pytest.raises(ValueError, match=r"lora_alpha/lora_rank = 8.0/4 = 2, but .* gives 1"):
        convert_dit.load_model(other, [root / "base" / "dit.safetensors", root / "run" / "vace.safetensors",
                                       root / "run" / "lora.safetensors"])


def test_export_errors_leave_nothing(exported, tmp_path, capsys):
    root, config, model, _ = exported
    no_vace = load_config("tiny", ["model.vace_layers=()"])
    with pytest.raises(ValueError, match="no VACE branch"):
        write_export(build_model(no_vace), no_vace, tmp_path / "x")
    assert not list(tmp_path.iterdir())  # nothing half-written
    convert_dit.save_converted(build_model(no_vace), no_vace, tmp_path / "no_vace", {"loaded": ["base"]}, [])
    assert main(["export", "--checkpoint", str(tmp_path / "no_vace"), "--out", str(tmp_path / "z")]) == 2
    assert "has no VACE branch" in capsys.readouterr().err and not (tmp_path / "z").exists()
    assert main(["export", "--checkpoint", str(root / "run"), "--out", str(root / "base")]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
    assert "no such folder" in capsys.readouterr().err and not (tmp_path / "y").exists()
