"""Checkpoint conversion: original/DiffSynth names (+ official Mirage VACE in bf16, + LoRA) via the CLI to Orbax,
compared with the diffusers-folder conversion; strict errors for unexpected, missing and mis-shaped keys."""

from __future__ import annotations

import argparse
import re

import jax
import numpy as np
import pytest
from flax import nnx

from mirage_jax.checkpoints import load_model, open_source
from mirage_jax.config import load_config
from mirage_jax.convert import dit as convert_dit
from tests.conftest import require_torch_stack

KW = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=48, out_channels=48,
          text_dim=32, freq_dim=256, ffn_dim=128, num_layers=2, cross_attn_norm=True, eps=1e-6,
          vace_layers=[0, 1], vace_in_channels=96)  # = configs/tiny.py sizes

# diffusers -> original names, written independently of the converter from docs/design.md §9 (plain string edits)
_EDITS = [("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
          ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
          ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
          ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
          ("condition_embedder.time_proj", "time_projection.1"), ("attn1.to_out.0", "self_attn.o"),
          ("attn2.to_out.0", "cross_attn.o"), ("attn1.to_", "self_attn."), ("attn2.to_", "cross_attn."),
          ("attn1.", "self_attn."), ("attn2.", "cross_attn."), (".norm2.", ".norm3."), ("ffn.net.0.proj", "ffn.0"),
          ("ffn.net.2", "ffn.2"), ("vace_blocks.0.proj_in", "vace_blocks.0.before_proj")]


def _original_name(key: str) -> str:
    for a, b in _EDITS:
        key = key.replace(a, b)
    if key.startswith("proj_out."):
        return "head.head." + key[len("proj_out."):]
    if key == "scale_shift_table":
        return "head.modulation"
    key = re.sub(r"^(vace_blocks\.\d+)\.proj_out\.", r"\1.after_proj.", key)
    return key.replace(".scale_shift_table", ".modulation")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch, diffusers = require_torch_stack("diffusers")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = diffusers.WanVACETransformer3DModel(**KW)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.2 * torch.randn(p.shape))
    root = tmp_path_factory.mktemp("dit_ckpt")
    ref.save_pretrained(root / "diffusers")
    sd = {_original_name(k): v.contiguous() for k, v in ref.state_dict().items()}
    assert len(sd) == len(ref.state_dict())
    base = {f"model.diffusion_model.{k}": v for k, v in sd.items() if not k.startswith("vace_")}
    vace = {k: v.to(torch.bfloat16) for k, v in sd.items() if k.startswith("vace_")}
    rank, lora = 4, {}
    for j in range(2):
        for mod, (din, dout) in [(f"{a}.{p}", (64, 64)) for a in ("self_attn", "cross_attn") for p in "qkvo"] + [
                ("ffn.0", (64, 128)), ("ffn.2", (128, 64))]:
            lora[f"pipe.dit.blocks.{j}.{mod}.lora_A.weight"] = torch.randn(rank, din)
            lora[f"pipe.dit.blocks.{j}.{mod}.lora_B.weight"] = torch.randn(dout, rank)
    for name, tensors in (("base", base), ("vace", vace), ("lora", lora)):
        save_file(tensors, root / f"{name}.safetensors")
    return root, sd, lora


def _params(model):
    return {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model))}


def test_original_names_vace_bf16_lora_via_cli_match_diffusers_folder(files):
    root, sd, lora = files
    out = root / "orbax"
    parser = argparse.ArgumentParser()
    convert_dit.add_arguments(parser)
    inputs = [arg for n in ("base", "vace", "lora") for arg in ("--input", str(root / f"{n}.safetensors"))]
    args = parser.parse_args([*inputs, "--config", "configs/tiny.py", "--out", str(out), "--seed", "0"])
    assert convert_dit.run(args) == 0
    config = load_config("configs/tiny.py")
    source = open_source(out)
    assert source.kind == "converted" and source.groups == ("base", "lora", "vace")
    ours = _params(load_model(source, config))
    theirs = _params(convert_dit.from_diffusers(root / "diffusers")[0])
    assert set(theirs) == {k for k in ours if "lora" not in k}
    for key, value in theirs.items():
        tol = 1e-2 * np.abs(value).max() if key.startswith("vace") else 0.0  # VACE was written in bf16
        np.testing.assert_allclose(ours[key], value, atol=tol, err_msg=key)
    a = lora["pipe.dit.blocks.1.ffn.2.lora_A.weight"].numpy()
    b = lora["pipe.dit.blocks.1.ffn.2.lora_B.weight"].numpy()
    np.testing.assert_array_equal(ours["blocks/ffn_out/lora_a"][1], a.T)
    np.testing.assert_array_equal(ours["blocks/ffn_out/lora_b"][1], b.T)
    # the mesh-aware loader restores into sharded arrays
    from mirage_jax.sharding import make_mesh

    mesh = make_mesh(1, 2, 1, jax.devices()[:2])
    sharded = load_model(source, config, mesh=mesh)
    assert sharded.blocks.ffn_in.kernel[...].sharding.spec[1] == "fsdp"
    with pytest.raises(ValueError, match=r"model.ffn_dim: 128 \(source\) vs 96 \(config\)"):
        load_model(source, load_config("configs/tiny.py", ["model.ffn_dim=96"]))


def test_strict_errors_list_the_keys(files, tmp_path):
    torch = require_torch_stack()
    from safetensors.torch import save_file

    root, sd, _ = files
    config = load_config("configs/tiny.py", ["model.lora_rank=0"])  # all groups given: nothing to initialise
    extra = dict(sd, **{"blocks.0.extra.weight": torch.zeros(2)})
    save_file(extra, tmp_path / "extra.safetensors")
    with pytest.raises(ValueError, match=r"unexpected keys.*blocks\.0\.extra\.weight"):
        convert_dit.load_model(config, [tmp_path / "extra.safetensors"])
    partial = {k: v for k, v in sd.items() if k not in ("blocks.1.ffn.0.bias", "vace_blocks.1.after_proj.weight")}
    save_file(partial, tmp_path / "partial.safetensors")
    with pytest.raises(ValueError, match=r"missing keys.*blocks\.1\.ffn\.0\.bias.*vace_blocks\.1\.after_proj"):
        convert_dit.load_model(config, [tmp_path / "partial.safetensors"])
    wrong = dict(sd, **{"blocks.0.ffn.0.weight": torch.zeros(96, 64)})
    save_file(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match=r"shape mismatch for blocks\.0\.ffn\.0\.weight"):
        convert_dit.load_model(config, [tmp_path / "wrong.safetensors"])
    with pytest.raises(ValueError, match="also in"):
        convert_dit.load_model(config, [root / "base.safetensors", root / "diffusers"])
