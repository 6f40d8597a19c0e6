"""Bad input to every command gives one clear line, never a traceback or a silently wrong result.

Each case feeds one class of user error to ``mirage-jax <command>`` (in process, through the real argument
parsing and dispatch) and asserts: exit code 2, exactly one line on stderr of the form
``mirage-jax <command>: error: ...`` naming the file or field, no traceback, and nothing written where the
command would have written. The fault tests of training (concurrent runs on one workdir, kill during a save,
a damaged latest checkpoint, resuming with another config) are in ``tests/test_train_loop.py``; those of the
data and memory inputs in ``tests/test_data_npz.py`` and ``tests/test_memory_validation.py``.
"""

from __future__ import annotations

import errno
import subprocess
import sys
import types

import numpy as np
import pytest

from mirage_jax.cli import main
from mirage_jax.commands import TRACEBACK_ENV, dispatch
from mirage_jax.config import load_config
from mirage_jax.convert.safetensors_io import SafetensorsFile, write_safetensors


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A converted tiny model (a model source), its export (official safetensors names) and damaged copies."""
    from mirage_jax.convert.dit import save_converted
    from mirage_jax.convert.export import write_export
    from mirage_jax.models import build_model

    root = tmp_path_factory.mktemp("reliability")
    config = load_config("tiny")
    model = build_model(config, seed=0)
    save_converted(model, config, root / "converted", {"loaded": ["base", "vace", "lora"], "initialised": []}, [])
    write_export(model, config, root / "export")
    dit = root / "export" / "dit.safetensors"
    (root / "truncated.safetensors").write_bytes(dit.read_bytes()[: dit.stat().st_size - 100])
    st = SafetensorsFile(dit)
    first = st.keys()[0]

    def rewrite(name: str, change) -> None:
        entries = [(k, st.shape(k), change(st[k]).dtype if k == first else st[k].dtype,
                    (lambda k=k: change(st[k]) if k == first else st[k])) for k in st.keys()]
        write_safetensors(root / name, entries)

    rewrite("int64.safetensors", lambda a: a.astype(np.int64))
    rewrite("nan.safetensors", lambda a: np.full(a.shape, np.nan, np.float32))
    write_safetensors(root / "partial.safetensors", [(first, st.shape(first), st[first].dtype, lambda: st[first])])
    (root / "occupied").mkdir()
    (root / "occupied" / "chunk_001.mp4").write_bytes(b"an earlier run")
    (root / "a_file").write_text("not a folder")
    return {"root": root, "first": first}


def _error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mirage-jax {command}: error: ") and "Traceback" not in err
    return lines[0]


CONVERT = ["convert", "dit", "--config", "tiny", "--out", "{root}/converted_again"]
GENERATE = ["generate", "--checkpoint", "{root}/converted", "--procedural", "1", "--frames", "17"]
CASES = {
    # command: (argv, expected text of the one error line)
    "convert dit: truncated safetensors": (CONVERT + ["--input", "{root}/truncated.safetensors"], "truncated"),
    "convert dit: integer weight": (CONVERT + ["--input", "{root}/int64.safetensors"],
                                    "int64.safetensors: tensor '{first}': dtype int64, expected floating point"),
    "convert dit: NaN weight": (CONVERT + ["--input", "{root}/nan.safetensors"],
                                "nan.safetensors: tensor '{first}': "),
    "convert dit: missing keys": (CONVERT + ["--input", "{root}/partial.safetensors"], "missing keys"),
    "convert dit: pickle": (CONVERT + ["--input", "{root}/model.pth"], "pickled checkpoints are not loaded"),
    "convert dit: --out in use": (["convert", "dit", "--config", "tiny", "--input", "{root}/export/dit.safetensors",
                                   "--out", "{root}/occupied"], "--out '{root}/occupied' already exists"),
    "convert vae: truncated": (["convert", "vae", "--source", "{root}/truncated.safetensors", "--out",
                                "{root}/vae"], "truncated"),
    "convert umt5: missing source": (["convert", "umt5", "--source", "{root}/none.safetensors", "--out",
                                      "{root}/umt5"], "none.safetensors"),
    "generate: --out holds an earlier run": (GENERATE + ["--out", "{root}/occupied"],
                                             "--out '{root}/occupied' already exists and is not empty"),
    "generate: --out under a file": (GENERATE + ["--out", "{root}/a_file/gen"], "its parent is a file"),
    "generate: another head count than the checkpoint's": (
        GENERATE + ["--out", "{root}/gen", "--config.model.num_heads=4"], "model.num_heads: 2 (converted"),
    "generate: another LoRA alpha than the checkpoint's": (
        GENERATE + ["--out", "{root}/gen", "--config.model.lora_alpha=8"], "model.lora_alpha: 4.0 (converted"),
    "generate: frame count": (["generate", "--checkpoint", "{root}/converted", "--procedural", "1", "--frames", "30",
                               "--out", "{root}/gen"], "--frames"),
    "generate: not a model source": (["generate", "--checkpoint", "{root}/occupied", "--procedural", "1",
                                      "--frames", "17", "--out", "{root}/gen"], "not a model source"),
    "eval: --out holds an earlier run": (["eval", "--checkpoint", "{root}/converted", "--out", "{root}/occupied"],
                                         "already exists and is not empty"),
    "export: --out holds an earlier run": (["export", "--checkpoint", "{root}/converted", "--out",
                                            "{root}/occupied"], "already exists and is not empty"),
    "export: not a model source": (["export", "--checkpoint", "{root}/a_file", "--out", "{root}/exp"],
                                   "no such folder"),
    "train: workdir is a file": (["train", "--config", "tiny", "--workdir", "{root}/a_file"],
                                 "--workdir '{root}/a_file' is a file"),
    "train: init checkpoint is not a model source": (
        ["train", "--config", "tiny", "--workdir", "{root}/w", "--config.model.init_checkpoint={root}/occupied"],
        "config.model.init_checkpoint '{root}/occupied': not a model source"),
    "train: bad value": (["train", "--config", "tiny", "--workdir", "{root}/w", "--config.data.num_clips=0"],
                         "data.num_clips"),
    "plan: negative targets": (["plan", "--config", "tiny", "--mesh", "fsdp=1", "--targets", "-1"],
                               "--targets=-1: expected >= 1"),
    "plan: zero batch": (["plan", "--config", "tiny", "--mesh", "fsdp=1", "--batch-per-device", "0"],
                         "--batch-per-device=0: expected >= 1"),
    "demo: one chunk": (["demo", "--out", "{root}/demo", "--chunks", "1", "--config.train.num_steps=1"],
                        "--chunks"),
    "demo: --out is a file": (["demo", "--out", "{root}/a_file"], "is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_error_is_one_line_with_exit_code_2_and_writes_nothing(case, files, capsys):
    argv, expected = CASES[case]
    fill = {"root": files["root"], "first": files["first"]}
    argv = [a.format(**fill) for a in argv]
    before = sorted(p.relative_to(files["root"]) for p in files["root"].rglob("*"))
    assert main(argv) == 2
    assert expected.format(**fill) in _error_line(capsys, " ".join(argv[:2]) if argv[0] == "convert" else argv[0])
    assert sorted(p.relative_to(files["root"]) for p in files["root"].rglob("*")) == before


def test_usage_errors_of_the_command_line_itself_exit_2(capsys):
    assert main(["bogus"]) == 2
    assert "unknown command 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--procedural", "1"])  # argparse: a required flag missing
    assert exit_.value.code == 2


def test_a_failing_command_prints_one_line_and_no_background_noise(files):
    """In a fresh process: after a user error nothing else reaches stderr (no Orbax thread tracebacks, no
    warnings); the exit code is 2."""
    argv = [sys.executable, "-m", "mirage_jax", "generate", "--checkpoint", str(files["root"] / "converted"),
            "--procedural", "1", "--frames", "17", "--out", str(files["root"] / "gen"),
            "--config.model.num_heads=4"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "model.num_heads" in done.stderr


def _command_raising(error: Exception, monkeypatch) -> dict:
    module = types.ModuleType("failing_command")
    module.add_arguments = lambda parser: None
    module.run = lambda args: (_ for _ in ()).throw(error)
    monkeypatch.setitem(sys.modules, "failing_command", module)
    return {"fail": ("failing_command", "a command that fails")}


def test_an_os_error_is_one_line_naming_the_path_with_exit_code_1(monkeypatch, capsys):
    table = _command_raising(OSError(errno.ENOSPC, "No space left on device", "/data/out"), monkeypatch)
    assert dispatch("mirage-jax", table, ["fail"]) == 1
    assert capsys.readouterr().err == "mirage-jax fail: error: [Errno 28] No space left on device: '/data/out'\n"


def test_the_traceback_switch_reraises_user_errors(monkeypatch):
    table = _command_raising(ValueError("config.data.height=30: expected a multiple of 8"), monkeypatch)
    monkeypatch.setenv(TRACEBACK_ENV, "1")
    with pytest.raises(ValueError, match="data.height=30"):
        dispatch("mirage-jax", table, ["fail"])
