"""Multi-host training for real: 2 local JAX processes (CPU, gloo) with a local coordinator train 2 steps.

The processes are started by ``launch/local.sh`` exactly as a user would, so the launcher, the
``--coordinator/--num-processes/--process-id`` flags, ``jax.distributed.initialize``, the per-process data
sharding and the global-array assembly are all exercised.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_two_steps(tmp_path):
    workdir = tmp_path / "run"
    cmd = [
        "bash", str(REPO / "launch" / "local.sh"), "--num-processes", "2", "--port", str(free_port()), "--",
        sys.executable, "-m", "mirage_jax", "train", "--config", "configs/tiny.py", "--workdir", str(workdir),
        "--config.train.num_steps=2", "--config.train.log_every=1", "--config.train.eval_every=100",
        "--config.train.checkpoint_every=2", "--config.train.batch_size=2", "--config.data.num_clips=4",
        f"--config.data.data_dir={tmp_path / 'data'}", "--config.data.height=32", "--config.data.width=56",
    ]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device per process
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in logged if "loss" in m]
    assert steps == [1, 2], logged  # written once (by process 0), not once per process
    assert all(m["loss"] == m["loss"] and m["loss"] > 0 for m in logged if "loss" in m)
    assert out.stdout.count('"step": 2') == 1  # the summary is printed by process 0 only
    assert (workdir / "checkpoints" / "2").is_dir()
