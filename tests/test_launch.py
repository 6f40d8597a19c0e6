"""Launchers print exactly what they would run with --dry-run, answer --help, refuse incomplete command lines
and pass on signals and exit statuses; the README's command lines run as written (venv, extras, .gitignore)."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch"
TRAIN = ["mirage-jax", "train", "--config", "configs/tiny.py", "--workdir", "runs/x"]
TRAIN_MULTIHOST = ["mirage-jax", "train", "--multihost", "--config", "configs/tiny.py", "--workdir", "runs/x"]


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
                    "v5p-32", "--", *TRAIN_MULTIHOST)
    assert lines[0] == "gcloud compute tpus tpu-vm create pod --zone z1 --accelerator-type v5p-32 --version " \
                       "tpu-ubuntu2204-base"
    assert lines[1].startswith("tar -czf ")
    archive = lines[1].split()[2]
    assert lines[2] == f"gcloud compute tpus tpu-vm scp {archive} pod:~/mirage_jax.tar.gz --zone z1 --worker=all"
    assert lines[3].startswith("gcloud compute tpus tpu-vm ssh pod --zone z1 --worker=all --command ")
    assert "tar -xzf ~/mirage_jax.tar.gz -C ~/mirage_jax" in lines[3]
    assert "pip install -q -e '.[tpu]'" in lines[3] and lines[3].endswith(".venv/bin/" + " ".join(TRAIN_MULTIHOST))


def test_tpu_pod_copies_the_source_without_venv_or_outputs():
    """The archive holds exactly the files git tracks: no .venv, outputs or caches."""
    tar = dry_run("tpu_pod.sh", "--dry-run", "--name", "pod", "--zone", "z1", "--", *TRAIN_MULTIHOST)[0]
    files = set(tar.split(" -- ", 1)[1].split())
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True)
    tracked = {f for f in listed.stdout.split() if (REPO / f).exists()}
    assert files == tracked and "launch/tpu_pod.sh" in files
    assert not [f for f in files if f.startswith((".venv/", "mirage_demo/", "runs/")) or "__pycache__" in f]


def test_tpu_pod_quotes_the_command_for_the_remote_shell():
    ssh = dry_run("tpu_pod.sh", "--dry-run", "--name", "pod", "--zone", "z1", "--", *TRAIN_MULTIHOST,
                  "--config.train.stage_steps=(10,20)")[-1]
    assert ssh.endswith(r"--config.train.stage_steps=\(10\,20\)")


def test_tpu_pod_without_create_only_copies_and_runs():
    lines = dry_run("tpu_pod.sh", "--dry-run", "--name", "pod", "--zone", "z1", "--", *TRAIN_MULTIHOST)
    assert len(lines) == 3 and not any("create" in line for line in lines)


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
        ("local.sh", ["--", "no-such-mirage-jax", "train"],
         "no-such-mirage-jax not found: activate the venv (source .venv/bin/activate) or pass "
         ".venv/bin/no-such-mirage-jax"),
        ("tpu_pod.sh", ["--dry-run", "--name", "pod", "--zone", "z1", "--", *TRAIN],
         "add --multihost to the train command"),
    ],
)
def test_launchers_refuse_incomplete_command_lines(script, args, message):
    out = subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr


@pytest.mark.parametrize("script", ["local.sh", "tpu_pod.sh", "gpu_slurm.sbatch"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_launchers_print_their_usage_on_help(script, flag):
    out = subprocess.run(["bash", str(LAUNCH / script), flag], capture_output=True, text=True)
    assert out.returncode == 0 and out.stderr == ""
    assert f"launch/{script}" in out.stdout and "143" in out.stdout and not out.stdout.startswith("#")


def test_slurm_hands_the_job_to_srun_so_its_status_is_the_tasks():
    sbatch = (LAUNCH / "gpu_slurm.sbatch").read_text()
    assert 'exec "${cmd[@]}"' in sbatch and "#SBATCH --signal=TERM@" in sbatch


CHILD = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # as mirage-jax train: save, then exit 143
sys.stdout.write("ready\\n")
sys.stdout.flush()
time.sleep(60)
"""


def test_local_passes_sigterm_on_and_exits_with_the_processes_status(tmp_path):
    """A scheduler's SIGTERM reaches every process, and local.sh exits 143 (preempted), not 0, after them."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(["bash", str(LAUNCH / "local.sh"), "--num-processes", "2", "--", sys.executable,
                             str(script)], stdout=subprocess.PIPE, text=True)
    seen = ""
    while seen.count("ready") < 2:  # both processes have installed their handler
        line = proc.stdout.readline()
        assert line, f"local.sh ended early: {proc.wait()}"
        seen += line
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 143


README = (REPO / "README.md").read_text(encoding="utf-8")
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)
ACTIVATE = "source .venv/bin/activate"


def test_readme_commands_before_the_activation_call_the_venv_and_later_ones_follow_it():
    first = next(i for i, block in enumerate(BASH_BLOCKS) if block.strip() == ACTIVATE)
    demo, tests = BASH_BLOCKS[:first]
    assert ".venv/bin/pip install -e . &&" in demo and "[test]" not in demo  # the demo needs no test stack
    assert '.venv/bin/pip install -e ".[test]"' in tests
    program = re.compile(r"(?:^|&&|\|\||;)\s*(?:\w+=\S+\s+)*(mirage-jax|pytest|pip|python)\b")  # python3: makes it
    bare = [line for block in BASH_BLOCKS[:first] for line in block.splitlines() if program.search(line)]
    assert not bare, f"commands run before the venv is activated, without .venv/bin/: {bare}"
    assert any("mirage-jax " in block for block in BASH_BLOCKS[first + 1:])


def test_readme_command_outputs_are_ignored_by_git():
    outputs = {path.rstrip("/") for block in BASH_BLOCKS for path in re.findall(r"--(?:out|workdir)[ =](\S+)", block)
               if not path.startswith(("/", "gs://"))}
    assert {"mirage_demo", "data", "ckpt/dit", "runs/tiny", "gen", "gen_tiny_wan", "eval", "export"} <= outputs
    probes = sorted(f"{path}/file" for path in outputs)
    checked = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", "--stdin"], input="\n".join(probes),
                             capture_output=True, text=True)
    assert sorted(checked.stdout.split()) == probes


BLOCK_TEST_STACK = """
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "diffusers", "transformers", "sentencepiece", "pytest"}:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
for module in sys.argv[1:]:
    importlib.import_module(module)
"""


def test_the_demo_imports_nothing_of_the_test_extras():
    """What the demo runs imports without torch, diffusers, transformers, sentencepiece or pytest (the whole
    demo was run so once; this keeps the module-level imports honest)."""
    modules = ["mirage_jax.demo", "mirage_jax.train.loop", "mirage_jax.world.evaluate", "mirage_jax.checkpoints",
               "mirage_jax.data.pipeline", "mirage_jax.data.tfds_io", "mirage_jax.world.video"]
    done = subprocess.run([sys.executable, "-c", BLOCK_TEST_STACK, *modules], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
