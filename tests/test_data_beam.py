"""The pose_clips builder on Apache Beam (DirectRunner) writes the same records as the plain build."""

import sys

import numpy as np
import pytest

from mirage_jax.cli import main
from mirage_jax.data import tfds_io

BUILD = ["data", "build", "--source", "procedural", "--num-clips", "3", "--num-test-clips", "1", "--frames", "5",
         "--height", "16", "--width", "24", "--dynamic-objects", "1", "--seed", "3"]


def _build(capsys, *args) -> tuple[str, str]:
    """The dataset folder the command prints, and its stderr."""
    assert main([*BUILD, *args]) == 0
    out, err = capsys.readouterr()
    return out.strip().splitlines()[-1], err


def _records(folder: str, split: str) -> dict[int, dict]:
    source = tfds_io.folder_source(folder, split)
    return {int(r["clip_id"]): tfds_io.record_to_clip(r) for r in (source[i] for i in range(len(source)))}


def test_beam_build_equals_plain_build(tmp_path, capsys):
    pytest.importorskip("apache_beam", reason="Apache Beam (the optional beam extra) is not installed")
    plain, plain_log = _build(capsys, "--out", str(tmp_path / "plain"))
    beam, beam_log = _build(capsys, "--out", str(tmp_path / "beam"), "--beam-runner", "DirectRunner",
                            "--beam-options=--direct_num_workers=2 --direct_running_mode=multi_threading")
    assert beam == plain.replace(str(tmp_path / "plain"), str(tmp_path / "beam"))  # same dataset name
    assert "train clips: 3/3" in plain_log and "train clips" not in beam_log  # Beam made the clips, not the loop
    for split, ids in (("train", [0, 1, 2]), ("test", [0])):
        want, got = _records(plain, split), _records(beam, split)
        assert sorted(want) == sorted(got) == ids, split
        for clip_id, clip in want.items():
            for key, value in clip.items():
                np.testing.assert_array_equal(got[clip_id][key], value, err_msg=f"{split} {clip_id} {key}")


def test_beam_build_without_beam_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # as if not installed
    assert main([*BUILD, "--out", str(tmp_path), "--beam-runner", "DirectRunner"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith('Apache Beam is not installed; pip install -e ".[beam]"') and "\n" not in err, err
    assert not (tmp_path / "pose_clips").exists()  # refused before anything was written
