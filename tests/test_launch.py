"""Launchers print exactly what they would run with --dry-run, and refuse incomplete command lines."""

import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parent.parent / "launch"
TRAIN = ["mirage-jax", "train", "--config", "configs/tiny.py", "--workdir", "runs/x"]


def dry_run(script, *args):
    out = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True, check=True)
    return [line.removeprefix("+ ") for line in out.stdout.splitlines()]


def test_local_starts_one_process_per_rank_with_a_shared_coordinator():
    lines = dry_run("local.sh", "--dry-run", "--num-processes", "3", "--port", "4321", "--", *TRAIN)
    assert lines == [
        " ".join(TRAIN + ["--coordinator", "127.0.0.1:4321", "--num-processes", "3", "--process-id", str(i)])
        for i in range(3)
    ]


def test_tpu_pod_creates_copies_and_runs_on_all_workers():
    lines = dry_run("tpu_pod.sh", "--dry-run", "--create", "--name", "pod", "--zone", "z1", "--accelerator",
                    "v5p-32", "--", *TRAIN)
    assert lines[0] == "gcloud compute tpus tpu-vm create pod --zone z1 --accelerator-type v5p-32 --version " \
                       "tpu-ubuntu2204-base"
    assert lines[1].startswith("gcloud compute tpus tpu-vm scp --recurse ") and "--worker=all" in lines[1]
    assert lines[2].startswith("gcloud compute tpus tpu-vm ssh pod --zone z1 --worker=all --command ")
    assert "pip install -q -e '.[tpu]'" in lines[2] and lines[2].endswith(".venv/bin/" + " ".join(TRAIN))


def test_tpu_pod_without_create_only_copies_and_runs():
    lines = dry_run("tpu_pod.sh", "--dry-run", "--name", "pod", "--zone", "z1", "--", *TRAIN)
    assert len(lines) == 2 and "create" not in lines[0]


def test_slurm_sets_up_once_then_one_task_per_gpu():
    lines = dry_run("gpu_slurm.sbatch", "--dry-run", *TRAIN)
    assert "pip install -q -e '.[gpu]'" in lines[0]
    assert lines[1].startswith("srun --kill-on-bad-exit=1 --chdir ")
    assert lines[1].endswith(".venv/bin/mirage-jax train --config configs/tiny.py --workdir runs/x")
    sbatch = (LAUNCH / "gpu_slurm.sbatch").read_text()
    assert "#SBATCH --gpus-per-task=1" in sbatch and "#SBATCH --ntasks-per-node=8" in sbatch


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("local.sh", ["--dry-run"], "no command given"),
        ("tpu_pod.sh", ["--dry-run", "--", "x"], "--name and --zone are required"),
        ("local.sh", ["--bogus"], "unknown option --bogus"),
    ],
)
def test_launchers_refuse_incomplete_command_lines(script, args, message):
    out = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr
