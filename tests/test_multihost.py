"""Multi-host for real: 2 local JAX processes (CPU, gloo) with a local coordinator train 3 steps, and equal one
process training the same data-parallel mesh over 2 devices; 2 processes encode a latent dataset (data encode)
byte for byte as one does.

The processes are started by ``launch/local.sh`` exactly as a user would, so the launcher, the
``--coordinator/--num-processes/--process-id`` flags, ``jax.distributed.initialize``, the per-process data
sharding and the global-array assembly are all exercised. Equal: the same losses and the same parameters (to
the float32 rounding of the gradient all-reduce, whose order differs between gloo and one process).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRAIN = ["--config", "configs/tiny.py", "--config.train.num_steps=3", "--config.train.log_every=1",
         "--config.train.eval_every=100", "--config.train.checkpoint_every=3", "--config.train.batch_size=2",
         "--config.data.num_clips=4", "--config.data.height=32", "--config.data.width=56",
         "--config.train.warmup_steps=0"]


def _losses(workdir: Path) -> list[float]:
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [m["loss"] for m in logged if "loss" in m]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path):
    from flax import nnx

    from mirage_jax.checkpoints import load_model, open_source, resolve_config

    workdir, data = tmp_path / "run", f"--config.data.data_dir={tmp_path / 'data'}"
    cmd = ["bash", str(REPO / "launch" / "local.sh"), "--num-processes", "2", "--port", str(free_port()), "--",
           sys.executable, "-m", "mirage_jax", "train", "--workdir", str(workdir), data, *TRAIN]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device per process
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "loss" in m] == [1, 2, 3], logged  # written once, by process 0
    assert out.stdout.count('"step": 3') == 1  # the summary is printed by process 0 only
    assert (workdir / "checkpoints" / "3").is_dir()
    # one process, 2 devices, the same data-parallel mesh (data=2: what two 1-device processes make)
    single = tmp_path / "single"
    env_single = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    cmd = [sys.executable, "-m", "mirage_jax", "train", "--workdir", str(single), data, *TRAIN, "--config.mesh.data=2"]
    out = subprocess.run(cmd, cwd=REPO, env=env_single, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    np.testing.assert_allclose(_losses(workdir), _losses(single), rtol=1e-5)
    config, _ = resolve_config(open_source(single))
    flat = [{"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(load_model(
        open_source(w), config)))} for w in (workdir, single)]
    assert flat[0].keys() == flat[1].keys()
    for key, value in flat[1].items():  # (observed: bitwise equal)
        np.testing.assert_allclose(flat[0][key], value, rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_two_processes_encode_the_same_bytes_as_one(tmp_path):
    """``data encode`` by 2 processes (each its own shards, process 0 the metadata) into one folder writes
    every file byte for byte as one process does (in-process determinism is tested in test_data_encode)."""
    from mirage_jax.data import tfds_io
    from mirage_jax.data.pose_clips import pose_clips_dataset_builder as pcb

    source = tfds_io.build(pcb.make_config("procedural", height=32, width=56, num_frames=13, num_clips=5,
                                           num_test_clips=1), tmp_path / "tfds")
    encode = ["data", "encode", "--config", "configs/tiny.py", "--source", str(source), "--clips-per-shard", "2",
              "--quiet", "--config.data.height=32", "--config.data.width=56", "--config.data.target_frames=9",
              "--config.data.windows_per_clip=2"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = ["bash", str(REPO / "launch" / "local.sh"), "--num-processes", "2", "--port", str(free_port()), "--",
           sys.executable, "-m", "mirage_jax", *encode, "--out", str(tmp_path / "two")]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    cmd = [sys.executable, "-m", "mirage_jax", *encode, "--out", str(tmp_path / "one")]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    files = sorted(p.name for p in (tmp_path / "one").iterdir() if not p.name.startswith("."))
    assert len([f for f in files if ".array_record-" in f and f.count(".") == 1]) == 4  # 3 train + 1 test shards
    assert files == sorted(p.name for p in (tmp_path / "two").iterdir() if not p.name.startswith("."))
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
