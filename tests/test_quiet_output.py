"""Commands say what they did and nothing else when their output goes to a pipe or file: no absl warnings, no
TFDS "Downloading ... Unknown size" lines, no ``os.fork()`` warning, no progress bar redraws (``\\r``); the
training run writes one line per logged step instead, ``--quiet`` writes none, and the summary reports the
last loss also when a resumed run has nothing left to do.

Each command runs in a subprocess with its output captured (a pipe: never a terminal), at tiny sizes; the
training runs share a persistent compilation cache.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOISE = ("absl", "Using custom data configuration", "Downloading", "Unknown size", "Subsequent calls",
         "os.fork()", "\r")
TRAIN = ["--config", "configs/tiny.py", "--config.data.height=32", "--config.data.width=56",
         "--config.data.num_clips=1", "--config.data.clip_frames=33", "--config.train.batch_size=1",
         "--config.train.log_every=1", "--config.train.eval_every=0", "--config.mesh.fsdp=1"]


def mirage_jax(env: dict, *args: str) -> subprocess.CompletedProcess:
    """``python -m mirage_jax ARGS`` with stdout and stderr captured as they were written (decoded here, not
    in text mode, which would turn each ``\r`` into a newline); fails the test on a non-zero exit."""
    done = subprocess.run([sys.executable, "-m", "mirage_jax", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, timeout=300)
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_no_noise(output: str) -> None:
    found = [word for word in NOISE if word in output]
    assert not found, f"{found} in:\n{output[-3000:]}"


@pytest.fixture(scope="module")
def env(compile_cache):
    """One CPU device per process (the default of a user's machine) and the module's compilation cache."""
    return {k: v for k, v in compile_cache.items() if k != "XLA_FLAGS"}


@pytest.fixture(scope="module")
def trained(env, tmp_path_factory):
    """A 2-step run whose output went to a pipe: (workdir, its dataset folder, the completed process)."""
    root = tmp_path_factory.mktemp("quiet")
    workdir, data = root / "run", root / "data"
    done = mirage_jax(env, "train", "--workdir", workdir, *TRAIN, f"--config.data.data_dir={data}",
                      "--config.train.num_steps=2")
    return workdir, data, done


def test_data_build_prints_only_the_dataset_folder(env, tmp_path):
    done = mirage_jax(env, "data", "build", "--out", tmp_path, "--num-clips", "1", "--num-test-clips", "1",
                      "--frames", "1", "--height", "6", "--width", "8")
    assert done.stdout.splitlines() == [next(tmp_path.glob("pose_clips/*/1.0.0")).as_posix()]
    assert_no_noise(done.stdout + done.stderr.replace("\r", ""))  # (its clip bar is data/cli.py's: not checked)


@pytest.mark.slow  # with the 2-step training run they share: ~30 s
def test_piped_training_writes_a_line_per_logged_step_and_no_noise(trained):
    _, _, done = trained
    assert_no_noise(done.stdout + done.stderr)
    lines = done.stderr.splitlines()
    assert [re.sub(r"loss=\S+", "loss=L", line) for line in lines] == [
        "train step 1/2: loss=L stage=full", "train step 2/2: loss=L stage=full"], done.stderr
    summary = json.loads(done.stdout)
    assert summary["loss"] == pytest.approx(float(lines[-1].split("loss=")[1].split()[0]), abs=1e-4)


@pytest.mark.slow  # with the 2-step training run they share: ~30 s
def test_quiet_training_prints_only_the_summary_and_a_finished_run_keeps_its_loss(env, trained):
    workdir, data, _ = trained
    more = mirage_jax(env, "train", "--workdir", workdir, *TRAIN, f"--config.data.data_dir={data}",
                      "--config.train.num_steps=3", "--quiet")
    assert more.stderr == ""
    summary = json.loads(more.stdout)
    assert summary["step"] == 3 and summary["resumed_from"] == 2 and summary["loss"] is not None
    again = mirage_jax(env, "train", "--workdir", workdir, *TRAIN, f"--config.data.data_dir={data}",
                       "--config.train.num_steps=3", "--quiet")
    assert again.stderr == ""
    resumed = json.loads(again.stdout)
    assert resumed["resumed_from"] == 3 and resumed["loss"] == summary["loss"]  # was None: no step ran


@pytest.mark.slow  # with the 2-step training run they share: ~30 s
def test_piped_generation_writes_no_bars_and_no_fork_warning(env, trained, tmp_path):
    workdir, _, _ = trained
    done = mirage_jax(env, "generate", "--checkpoint", workdir, "--procedural", "1", "--frames", "5",
                      "--config.sample.steps=1", "--out", tmp_path / "gen")
    assert_no_noise(done.stdout + done.stderr)
    assert (tmp_path / "gen" / "generated.mp4").is_file()
