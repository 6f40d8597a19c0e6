"""Package foundation: config loading/overrides, mesh construction, CLI dispatch, safetensors reading."""

import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from mirage_jax import cli, config, sharding
from mirage_jax.convert import safetensors_io


@pytest.mark.parametrize("name", ["tiny", "tiny_wan", "small", "wan22_ti2v_5b"])
def test_configs_load_and_validate(name):
    from mirage_jax.config_checks import validate_config

    c = config.load_config(f"configs/{name}.py")
    assert c.name == name
    assert c.model.dim % c.model.num_heads == 0
    validate_config(c, training=True, device_count=8, process_count=1)


def test_default_config_path_works_outside_the_repo(tmp_path, monkeypatch):
    """``configs/tiny.py`` (the commands' default) resolves from the project root in any working directory."""
    monkeypatch.chdir(tmp_path)
    assert config.load_config("configs/tiny.py").name == "tiny"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.py").write_text(
        "from mirage_jax.config import base_config\n\n\ndef get_config():\n    c = base_config()\n"
        "    c.name = 'local'\n    return c\n"
    )
    assert config.load_config("configs/tiny.py").name == "local"  # a file in the working directory wins


def test_overrides_are_typed_and_checked():
    c = config.load_config("tiny", ["--config.train.num_steps=7", "config.train.lr=3e-4", "model.vace_layers=(0,)"])
    assert c.train.num_steps == 7 and c.train.lr == pytest.approx(3e-4) and c.model.vace_layers == (0,)
    with pytest.raises(ValueError, match=r"unknown field config.train.lrr"):
        config.load_config("tiny", ["--config.train.lrr=1"])
    with pytest.raises(ValueError, match=r"cannot parse for config.train.num_steps"):
        config.load_config("tiny", ["--config.train.num_steps=many"])
    with pytest.raises(ValueError, match="does not exist"):
        config.load_config("configs/nope.py")
    # a removed duplicate names where its value lives now
    with pytest.raises(ValueError, match=r"config.model.text_dim was removed; the DiT's text width is config.text.dim"):
        config.load_config("tiny", ["--config.model.text_dim=64"])
    with pytest.raises(ValueError, match="config.latent.temporal_factor was removed"):
        config.load_config("tiny", ["latent.temporal_factor=8"])


def test_mesh_shapes_and_errors():
    import jax

    n = len(jax.devices())
    mesh = sharding.make_mesh(data=1, fsdp=-1, tensor=1)
    assert mesh.shape == {"data": 1, "fsdp": n, "context": 1, "tensor": 1}
    with pytest.raises(ValueError, match="need"):
        sharding.make_mesh(data=n + 1, fsdp=1, tensor=1)
    with pytest.raises(ValueError, match=r"mesh.fsdp=-1: the other sizes \(3\) do not divide 8 devices"):
        sharding.make_mesh(data=1, fsdp=-1, tensor=3, devices=jax.devices()[:8])
    c = config.load_config("tiny", ["mesh.fsdp=-1", "mesh.tensor=2"])
    assert sharding.mesh_sizes(c, 8) == {"data": 1, "fsdp": 4, "context": 1, "tensor": 2}
    c = config.load_config("tiny", ["mesh.fsdp=-1", "mesh.context=2"])
    assert sharding.make_mesh(**sharding.mesh_sizes(c, 8)).shape == {"data": 1, "fsdp": 4, "context": 2, "tensor": 1}
    c = config.load_config("tiny")  # 1 device per process, 2 processes of 1 device: data-parallel over both
    assert sharding.mesh_sizes(c, 2, process_count=2) == {"data": 2, "fsdp": 1, "context": 1, "tensor": 1}
    assert sharding.parse_mesh_spec("fsdp=4,context=2") == {"fsdp": 4, "context": 2}
    with pytest.raises(ValueError, match="expected comma-separated"):
        sharding.parse_mesh_spec("model=2")


def test_logical_rules_do_not_reuse_mesh_axes():
    rules = (("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"))
    spec = sharding.logical_to_spec(("batch", "embed", "mlp"), rules)
    assert tuple(spec) == (("data", "fsdp"), None, "tensor")
    assert tuple(sharding.logical_to_spec(("embed", "mlp"), rules)) == ("fsdp", "tensor")


def test_cli_lists_commands_and_rejects_unknown(capsys):
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "mirage_jax", "--help"], capture_output=True, text=True, check=True)
    assert "convert" in out.stdout and "demo" in out.stdout


def write_safetensors(path, tensors):
    """A writer independent of the reader under test: the format spelled out by hand."""
    header, blobs, offset = {}, [], 0
    names = {np.dtype(np.float32): "F32", np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.int64): "I64"}
    for key, arr in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[key] = {"dtype": names[arr.dtype], "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def test_safetensors_reader_handles_bf16_and_shards(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4)).astype(np.float32)
    b = rng.normal(size=(5,)).astype(ml_dtypes.bfloat16)
    c = np.arange(6, dtype=np.int64).reshape(2, 3)
    (tmp_path / "ckpt").mkdir()
    write_safetensors(tmp_path / "ckpt" / "part-1.safetensors", {"a": a, "b": b})
    write_safetensors(tmp_path / "ckpt" / "part-2.safetensors", {"c": c})
    tensors = dict(safetensors_io.iter_tensors(tmp_path / "ckpt"))
    assert sorted(tensors) == ["a", "b", "c"]
    np.testing.assert_array_equal(tensors["a"], a)
    assert tensors["b"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(tensors["b"].astype(np.float32), b.astype(np.float32))
    np.testing.assert_array_equal(tensors["c"], c)


def test_safetensors_reader_refuses_pickles_and_duplicates(tmp_path):
    with pytest.raises(ValueError, match="pickled checkpoints are not loaded"):
        safetensors_io.open_checkpoint(tmp_path / "model.pth")
    write_safetensors(tmp_path / "x.safetensors", {"w": np.zeros(2, np.float32)})
    write_safetensors(tmp_path / "y.safetensors", {"w": np.ones(2, np.float32)})
    with pytest.raises(ValueError, match="'w' is defined in both"):
        safetensors_io.open_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        safetensors_io.open_checkpoint(tmp_path / "missing.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        safetensors_io.open_checkpoint(tmp_path / "empty")
