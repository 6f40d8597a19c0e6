"""One way to load a model: a run carries its config (generate/eval/plan need no --config), the model-defining
fields stay the checkpoint's (file differences named as notes, override differences refused), ``--step``,
training from pretrained weights (``model.init_checkpoint``) with frozen groups bitwise equal to the loaded
ones, and clear one-line errors for every bad source."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from flax import nnx

from mirage_jax.checkpoints import load_model, open_source, resolve_config
from mirage_jax.cli import main
from mirage_jax.config import config_from_json, flat_fields, layered_config, load_config

# a tiny run sized like the demo's (model.dim 96 instead of tiny.py's 64): tiny.py cannot load it by itself
RUN = ["--config.data.height=32", "--config.data.width=56", "--config.train.batch_size=2",
       "--config.data.num_clips=2", "--config.train.eval_every=0", "--config.model.dim=96",
       "--config.train.checkpoint_every=1", "--config.train.keep_checkpoints=3", "--config.train.log_every=1",
       "--config.model.lora_alpha=8.0", "--config.train.warmup_steps=0"]


def _flat(model) -> dict:
    return {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model))}


@pytest.fixture(scope="module")
def run(tmp_path_factory, compile_cache):
    """A 2-step tiny run (checkpoints at steps 1 and 2)."""
    root = tmp_path_factory.mktemp("sources")
    argv = ["train", "--config", "tiny", "--workdir", str(root / "run"), f"--config.data.data_dir={root / 'data'}",
            "--config.train.num_steps=2", *RUN]
    assert main(argv) == 0
    return root


def test_stored_config_round_trips_with_types():
    config = load_config("tiny_wan", ["model.vace_layers=(0,1)"])
    text = config.to_json_best_effort()
    restored, unknown = config_from_json(text)
    assert unknown == [] and flat_fields(restored) == flat_fields(config)
    assert isinstance(restored.model.patch_size, tuple) and isinstance(restored.mesh.rules[0][1], tuple)
    extra, unknown = config_from_json(json.dumps({**json.loads(text), "gone": {"field": 1}}))
    assert unknown == ["gone.field"] and flat_fields(extra) == flat_fields(config)


def test_layering_keeps_model_fields_and_names_every_difference():
    stored = load_config("tiny", ["model.dim=96", "model.num_heads=3", "data.height=32"])
    config, notes = layered_config(stored, "run R", "configs/tiny.py", ["--config.sample.steps=3"])
    assert config.model.dim == 96 and config.model.num_heads == 3  # the run's model
    assert config.data.height == 64 and config.sample.steps == 3  # the file and the overrides on top
    assert sorted(n.split(":")[0] for n in notes) == ["config.model.dim", "config.model.num_heads"]
    assert "run R has 96, kept (configs/tiny.py says 64)" in notes[0]
    with pytest.raises(ValueError, match=r"model.num_heads: 3 \(run R\) vs 4 \(override\)"):
        layered_config(stored, "run R", None, ["--config.model.num_heads=4"])
    with pytest.raises(ValueError, match=r"model.lora_alpha: 4.0 \(run R\) vs 2.0"):
        layered_config(stored, "run R", None, ["--config.model.lora_alpha=2"])
    same, notes = layered_config(stored, "run R", None, ["--config.model.dim=96"])  # restating is fine
    assert notes == [] and same.model.dim == 96


def test_bad_sources_are_one_line_errors(run, tmp_path, capsys):
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "plain").mkdir()
    cases = [(tmp_path / "missing", "no such folder"), (tmp_path / "plain", "not a model source; expected a "
             "training workdir"), (tmp_path / "empty_run", "holds no checkpoint yet")]
    for path, message in cases:
        with pytest.raises(ValueError, match=message):
            open_source(path)
    with pytest.raises(ValueError, match=r"--step 7: not a checkpoint of .*; it has steps \[1, 2\]"):
        open_source(run / "run", step=7)
    argv = ["generate", "--checkpoint", str(tmp_path / "plain"), "--procedural", "1", "--frames", "5", "--out",
            str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a model source" in err and not (tmp_path / "out").exists()


def test_a_run_is_its_own_config(run, tmp_path, capsys):
    source = open_source(run / "run")
    assert (source.kind, source.step, source.groups) == ("run", 2, ("base", "vace", "lora"))
    assert source.config.model.dim == 96 and not source.has_depth_head
    common = ["--procedural", "1", "--frames", "5", "--quiet"]
    assert main(["generate", "--checkpoint", str(run / "run"), "--out", str(tmp_path / "a"), *common]) == 0
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert meta["config"]["model"]["dim"] == 96 and meta["settings"]["height"] == 32
    capsys.readouterr()
    # the demo's situation: the generic config file; the run's model is kept and the differences named
    argv = ["generate", "--checkpoint", str(run / "run"), "--config", "configs/tiny.py", "--out", str(tmp_path / "b")]
    assert main([*argv, *common]) == 0
    err = capsys.readouterr().err
    assert "note: config.model.dim: run" in err and "kept (configs/tiny.py says 64)" in err
    assert json.loads((tmp_path / "b" / "metadata.json").read_text())["settings"]["height"] == 64  # file on top
    argv = ["generate", "--checkpoint", str(run / "run"), "--config.model.num_heads=4", "--out", str(tmp_path / "c")]
    assert main([*argv, *common]) == 2
    assert "model.num_heads: 2" in capsys.readouterr().err and not (tmp_path / "c").exists()
    argv = ["generate", "--checkpoint", str(run / "run"), "--depth-source", "head", "--out", str(tmp_path / "d")]
    assert main([*argv, *common]) == 2
    assert "needs a trained checkpoint with a depth head" in capsys.readouterr().err


def test_a_runs_config_json_is_a_config_file(run):
    stored = load_config(run / "run" / "config.json", ["--config.sample.steps=3"])
    assert stored.model.dim == 96 and stored.sample.steps == 3
    assert flat_fields(resolve_config(open_source(run / "run"), run / "run" / "config.json")[0]) == flat_fields(
        load_config(run / "run" / "config.json"))


def test_step_picks_a_checkpoint(run):
    config, _ = resolve_config(open_source(run / "run"))
    first, last = (_flat(load_model(open_source(run / "run", step), config)) for step in (1, 2))
    changed = [k for k in first if not np.array_equal(first[k], last[k])]
    assert changed and all("lora" not in k for k in changed)  # the "full" stage of tiny trains all but LoRA


def test_train_from_a_run_freezes_what_the_stage_does_not_train(run, tmp_path):
    """``model.init_checkpoint`` = the run; stage ``vace``: the base DiT and LoRA stay bitwise the run's."""
    workdir = tmp_path / "init"
    argv = ["train", "--config", "tiny", "--workdir", str(workdir), f"--config.data.data_dir={run / 'data'}",
            f"--config.model.init_checkpoint={run / 'run'}", "--config.train.stages=vace",
            "--config.train.num_steps=2", *RUN]
    assert main(argv) == 0
    record = json.loads((workdir / "init_checkpoint.json").read_text())
    assert record == {"source": str(run / "run"), "kind": "run", "step": 2, "loaded": ["base", "vace", "lora"],
                      "fresh": []}
    config, _ = resolve_config(open_source(workdir))
    assert config.model.init_checkpoint == str(run / "run")
    loaded, trained = _flat(load_model(open_source(run / "run"), config)), _flat(load_model(open_source(workdir),
                                                                                             config))
    changed = {key for key in loaded if not np.array_equal(loaded[key], trained[key])}
    assert changed and all(key.startswith("vace/") for key in changed), changed  # base and LoRA: bitwise the run's
    assert {"vace/blocks/after_proj/kernel", "vace/patch_embedding/kernel"} <= changed
    # resuming never reads the init checkpoint again (it may be gone by then)
    argv[argv.index(f"--config.model.init_checkpoint={run / 'run'}")] = "--config.model.init_checkpoint=/gone"
    assert main([*argv, "--config.train.num_steps=3"]) == 0
    assert open_source(workdir).step == 3


@pytest.mark.parametrize("overrides, message", [
    (["--config.model.init_checkpoint=/nonexistent"], "config.model.init_checkpoint '/nonexistent': no such folder"),
    (["--config.model.init_checkpoint={run}", "--config.model.dim=64"], r"model.dim: 96 \(source\) vs 64 \(config\)"),
    (["--config.train.stages=lora", "--config.model.lora_rank=0"], r"config.model.lora_rank=0: expected > 0"),
])
def test_train_refuses_bad_starts_before_building(run, tmp_path, capsys, overrides, message):
    argv = ["train", "--config", "tiny", "--workdir", str(tmp_path / "w"), *RUN,
            *(o.format(run=run / "run") for o in overrides)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "w").exists()


def test_plan_reads_the_run(run, capsys):
    argv = ["plan", "--checkpoint", str(run / "run"), "--mesh", "fsdp=1", "--height", "8", "--width", "14"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "config tiny" in out and "tokens/sample 420" in out  # 15 frames of 4x7 tokens
