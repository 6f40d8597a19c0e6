"""The training loop end to end on procedural worlds (with the latent depth head): loss falls, metrics, exact
resume after SIGTERM and SIGKILL of a real subprocess, restore for inference, CLI errors before compiling.

All runs share one config (so one compiled step) and a persistent JAX compilation cache (subprocesses too).
"""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from mirage_jax.checkpoints import load_depth_head, load_model, open_source
from mirage_jax.cli import main as cli_main
from mirage_jax.config import load_config
from mirage_jax.train.loop import train
from mirage_jax.train.metrics import read_metrics

STEPS = 30  # loss-falls run length (also the resume runs' total)
LOSS_FACTOR = 0.8  # evaluation loss after STEPS steps < LOSS_FACTOR × initial evaluation loss
ARRAY_ITEMS = ("model", "opt", "train", "depth_head")


def overrides(data_dir):
    return ["--config.data.height=32", "--config.data.width=56", "--config.train.batch_size=2",
            "--config.data.num_clips=4", f"--config.data.data_dir={data_dir}", f"--config.train.num_steps={STEPS}",
            "--config.train.log_every=5", f"--config.train.eval_every={STEPS}", "--config.train.eval_batches=1",
            "--config.train.checkpoint_every=4", "--config.train.keep_checkpoints=20", "--config.train.lr=2e-3",
            "--config.train.warmup_steps=5", "--config.mesh.fsdp=1", "--config.train.depth_head=true"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, compile_cache):
    """The persistent compilation cache (this process and subprocesses) and a shared procedural dataset folder."""
    root = tmp_path_factory.mktemp("train_loop")
    return {"root": root, "data": str(root / "data"), "sub_env": compile_cache}


@pytest.fixture(scope="module")
def straight(env):
    workdir = env["root"] / "straight"
    summary = train(load_config("tiny", overrides(env["data"])), workdir)
    return workdir, summary


def restore_items(workdir: Path, step: int) -> dict:
    """Every array of a checkpoint (model, opt, train, depth head) as numpy, plus the data-iterator state JSON."""
    ck = workdir / "checkpoints" / str(step)
    items = {name: ocp.StandardCheckpointer().restore(ck / name) for name in ARRAY_ITEMS}
    items["data"] = json.loads(next((ck / "data").glob("process_0-of-1.json")).read_text())
    return items


@pytest.mark.slow
def test_tiny_loss_falls_and_metrics_are_written(straight):
    workdir, summary = straight
    rows = read_metrics(workdir)
    evals = [r for r in rows if "eval_loss" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == STEPS
    assert evals[-1]["eval_loss"] < LOSS_FACTOR * evals[0]["eval_loss"], evals
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == list(range(5, STEPS + 1, 5))
    assert all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 and r["lr"] > 0 for r in logged)
    assert summary["step"] == STEPS and summary["eval_loss"] == evals[-1]["eval_loss"]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((workdir / "config.json").read_text())["train"]["num_steps"] == STEPS


def _wait_for(predicate, proc, timeout=240.0):
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training subprocess exited early with {proc.returncode}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the training subprocess")
        time.sleep(0.05)


def _steps(workdir: Path) -> list[int]:
    folder = workdir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _start(env, workdir, log):
    cmd = [sys.executable, "-m", "mirage_jax", "train", "--config", "tiny", "--workdir", str(workdir),
           *overrides(env["data"])]
    return subprocess.Popen(cmd, env=env["sub_env"], stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_resume_after_sigterm_and_sigkill_equals_the_straight_run(env, straight):
    """SIGTERM → saves and exits 143; restart → SIGKILL during/after a save; restart → finishes. The final
    parameters, optimizer state, step, RNG and data-iterator position equal the uninterrupted run bit for bit,
    and metrics.jsonl has each logged step once. A second run on the workdir while one runs is refused."""
    workdir = env["root"] / "interrupted"
    with open(env["root"] / "sub.log", "w") as log:
        proc = _start(env, workdir, log)
        _wait_for(lambda: 4 in _steps(workdir), proc)
        assert cli_main(["train", "--config", "tiny", "--workdir", str(workdir), *overrides(env["data"])]) == 2
        assert proc.poll() is None  # the refused second run left the first one alone
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143
        stopped = max(_steps(workdir))
        assert 4 <= stopped < STEPS
        proc = _start(env, workdir, log)
        # kill as soon as a newer save starts (its temporary folder appears) or completes
        _wait_for(lambda: any(p.name.split(".")[0].isdigit() and int(p.name.split(".")[0]) > stopped
                              for p in (workdir / "checkpoints").iterdir()), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    summary = train(load_config("tiny", overrides(env["data"])), workdir)
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= stopped and summary["step"] == STEPS
    assert_same_checkpoint(straight[0], workdir, STEPS)
    # every row of the straight run once (a killed run's rows after its last checkpoint are dropped on resume),
    # plus the partial window the SIGTERM step logged
    extra = [] if stopped % 5 == 0 else [stopped]
    assert sorted(r["step"] for r in read_metrics(workdir)) == sorted([r["step"] for r in read_metrics(straight[0])]
                                                                      + extra)


def assert_same_checkpoint(want_dir: Path, got_dir: Path, step: int) -> None:
    want, got = restore_items(want_dir, step), restore_items(got_dir, step)
    assert got["data"] == want["data"]
    for name in ARRAY_ITEMS:
        for a, b in zip(jax.tree.leaves(want[name]), jax.tree.leaves(got[name]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def _truncate_an_array_file(step_dir: Path) -> None:
    data_file = max((p for p in (step_dir / "model").rglob("*") if p.is_file() and "d" in p.parent.name),
                    key=lambda p: p.stat().st_size)
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])


DAMAGE = {  # name: (damage, whether the model item is damaged: generation from the run fails too)
    "truncated array file": (_truncate_an_array_file, True),
    "deleted _METADATA": (lambda step_dir: (step_dir / "model" / "_METADATA").unlink(), True),
    "empty data json": (lambda step_dir: next((step_dir / "data").glob("*.json")).write_text(""), False),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_resumes_from_the_step_before(env, straight, damage,
                                                                                             tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(straight[0], workdir)
    damage_fn, model_damaged = DAMAGE[damage]
    damage_fn(workdir / "checkpoints" / str(STEPS))
    if model_damaged:
        assert cli_main(["generate", "--checkpoint", str(workdir), "--procedural", "1", "--frames", "17",
                         "--out", str(tmp_path / "gen")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"checkpoints/{STEPS} cannot be read" in err and "--step" in err
    summary = train(load_config("tiny", overrides(env["data"])), workdir)
    assert summary["resumed_from"] == STEPS - 2 and summary["step"] == STEPS  # checkpoints every 4: 28, then 30
    assert f"checkpoints/{STEPS} cannot be read" in capsys.readouterr().err
    assert (workdir / "damaged_checkpoints" / f"{STEPS}-0").is_dir()
    assert_same_checkpoint(straight[0], workdir, STEPS)
    assert [r["step"] for r in read_metrics(workdir)] == [r["step"] for r in read_metrics(straight[0])]


def test_a_run_whose_checkpoints_are_all_damaged_is_an_error_that_moves_nothing(env, straight, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(straight[0], workdir)
    for step in _steps(workdir):
        (workdir / "checkpoints" / str(step) / "meta" / "metadata").write_text("{")
    assert cli_main(["train", "--config", "tiny", "--workdir", str(workdir), *overrides(env["data"])]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint can be read" in err and "Traceback" not in err
    assert _steps(workdir) == _steps(straight[0]) and not (workdir / "damaged_checkpoints").exists()


def test_resuming_with_another_config_is_refused_and_leaves_the_run_untouched(env, straight, capsys):
    workdir, _ = straight
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (workdir / "checkpoints").iterdir())
    args = ["train", "--config", "tiny", "--workdir", str(workdir), *overrides(env["data"])]
    assert cli_main(args + ["--config.seed=7", f"--config.train.num_steps={STEPS + 4}"]) == 2
    assert "seed: 0 (run) vs 7 (config)" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (workdir / "checkpoints").iterdir()) == before


@pytest.mark.slow
def test_restore_model_and_depth_head_load_the_trained_parameters(env, straight):
    workdir, _ = straight
    config = load_config("tiny", overrides(env["data"]))
    saved = restore_items(workdir, STEPS)
    source = open_source(workdir)
    modules = ((load_model(source, config), "model"), (load_depth_head(source, config), "depth_head"))
    for module, item in modules:
        for a, b in zip(jax.tree.leaves(saved[item]), jax.tree.leaves(nnx.state(module)), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rows = [r for r in read_metrics(workdir) if "depth_loss" in r]
    assert rows[-1]["depth_loss"] < rows[0]["depth_loss"]  # the head learns alongside


def test_cli_rejects_bad_values_and_unknown_fields_before_compiling(tmp_path, capsys):
    base = ["train", "--config", "tiny", "--workdir", str(tmp_path / "w")]
    assert cli_main(base + ["--config.train.lr=-1"]) == 2
    assert "config.train.lr" in capsys.readouterr().err
    assert cli_main(base + ["--config.train.lrr=1"]) == 2
    assert "unknown field config.train.lrr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(base + ["--bogus"])
    assert not (tmp_path / "w").exists()
