"""The demo end to end in its --quick form: same code path, fewer steps and frames; outputs and table exist,
and a second run in a fresh folder prints the same quality numbers (the README's table is reproducible)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_demo_writes_everything_and_compares_three_variants(tmp_path):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "-m", "mirage_jax", "demo", "--quick", "--quiet", "--out", str(out)]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    table = run.stdout[run.stdout.index("variant"):]
    for variant in ("latent", "none", "rgb"):
        assert any(line.startswith(variant + " ") for line in table.splitlines()), table
    for name in ("videos/latent.mp4", "videos/none.mp4", "videos/rgb.mp4", "revisit_contact_sheet.png",
                 "eval/eval.json", "demo.json", "checkpoint/metrics.jsonl"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert list((out / "eval" / "plots").glob("*.png")), "no per-chunk metric plots"
    metrics = json.loads((out / "eval" / "eval.json").read_text())
    assert set(metrics) == {"latent", "none", "rgb"}
    for m in metrics.values():
        assert len(m["cache_bytes"]) == 2 and m["seconds_per_frame"] > 0
    assert metrics["none"]["cache_bytes"] == [0, 0]
    assert metrics["rgb"]["cache_bytes"][-1] > metrics["latent"]["cache_bytes"][-1] > 0
    assert str(out) in run.stdout.splitlines()[-1]  # the output folder is named at the end

    # Re-running reuses the trained checkpoint: no training steps are repeated.
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stderr[-4000:]
    report = json.loads((out / "demo.json").read_text())
    assert report["train"]["resumed_from"] == report["train"]["step"]

    # A fresh run elsewhere gives the same numbers: every quality metric equal, only timings differ.
    fresh = tmp_path / "fresh"
    run2 = subprocess.run([*cmd[:-1], str(fresh)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert run2.returncode == 0, run2.stderr[-4000:]
    second = json.loads((fresh / "eval" / "eval.json").read_text())
    timings = ("cache_read_s", "seconds_per_frame_per_chunk")
    for variant, m in metrics.items():
        for trajectory, scores in m["trajectories"].items():
            again_scores = second[variant]["trajectories"][trajectory]
            for key, value in scores.items():
                if key not in timings and not (isinstance(value, float) and np.isnan(value)):
                    assert again_scores[key] == value, (variant, trajectory, key)
