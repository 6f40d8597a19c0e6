"""The demo end to end in its --quick form: same code path, fewer steps and frames; outputs, figures and table
exist, and a second run in a fresh folder prints the same quality numbers (the README's table is reproducible).
Also the demo's pieces on known answers: the depth metrics, the labelled sheet, the decoded memory reads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mirage_jax.world.depth_metrics import abs_rel, delta_accuracy, depth_errors
from mirage_jax.world.figures import column_labels, decoded_reads, sheet_frames
from mirage_jax.world.video import enlarge, labelled_sheet

REPO = Path(__file__).resolve().parent.parent
SHEET_ROWS = 6  # ground truth, latent, none, rgb, latent+head, memory read
QUICK_FRAMES = 65  # 2 chunks of 33


def test_depth_metrics_known_answers():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])  # the 0 is invalid ground truth: never scored
    pred = np.array([[1.1, 3.0], [4.0, 5.0]])
    # |1.1-1|/1 = 0.1, |3-2|/2 = 0.5, 0  -> 0.2; ratios 1.1, 1.5, 1.0 -> 2 of 3 under 1.25
    assert abs_rel(pred, gt) == pytest.approx(0.2)
    assert delta_accuracy(pred, gt) == pytest.approx(2 / 3)
    assert depth_errors(pred, gt) == pytest.approx({"abs_rel": 0.2, "delta_1.25": 2 / 3, "valid_fraction": 0.75})
    assert depth_errors(gt, gt)["abs_rel"] == 0.0 and depth_errors(gt, gt)["delta_1.25"] == 1.0
    # a mask and an invalid prediction drop cells too: only the 4.0 vs 4.0 cell is left
    mask = np.array([[True, False], [True, True]])
    bad = np.array([[np.nan, 3.0], [4.0, 5.0]])
    assert depth_errors(bad, gt, mask) == pytest.approx({"abs_rel": 0.0, "delta_1.25": 1.0, "valid_fraction": 0.25})
    # under-prediction counts like over-prediction: 1/1.3 and 1.3/1 are both outside 1.25
    assert delta_accuracy(np.array([1.0]), np.array([1.3])) == 0.0 == delta_accuracy(np.array([1.3]), np.array([1.0]))
    assert np.isnan(abs_rel(np.zeros(3), np.ones(3))) and np.isnan(delta_accuracy(np.ones(3), np.zeros(3)))
    with pytest.raises(ValueError, match="pred"):
        abs_rel(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="valid"):
        depth_errors(np.ones(3), np.ones(3), np.ones(2, bool))


def test_labelled_sheet_places_enlarged_tiles_under_their_labels():
    rng = np.random.default_rng(0)
    tiles = [[rng.integers(0, 256, (8, 10, 3), dtype=np.uint8) for _ in range(3)] for _ in range(2)]
    assert enlarge(tiles[0][0], 25).shape == (24, 30, 3)  # the smallest integer factor reaching 25: 3
    np.testing.assert_array_equal(enlarge(tiles[0][0], 25)[3:6, 6:9], np.broadcast_to(tiles[0][0][1, 2], (3, 3, 3)))
    gap = 4
    sheet = labelled_sheet(tiles, ["first", "second"], ["a", "b", "c"], min_width=25, gap=gap)
    grid_h, grid_w = 2 * 24 + gap, 3 * 30 + 2 * gap
    assert sheet.dtype == np.uint8 and sheet.shape[0] > grid_h and sheet.shape[1] > grid_w
    top, left = sheet.shape[0] - grid_h, sheet.shape[1] - grid_w
    for r in range(2):
        for c in range(3):
            y, x = top + r * (24 + gap), left + c * (30 + gap)
            np.testing.assert_array_equal(sheet[y: y + 24, x: x + 30], enlarge(tiles[r][c], 25))
            assert (sheet[y: y + 24, :left] < 128).any(), f"no label left of row {r}"
        assert (sheet[:top, left + c * (30 + gap): left + c * (30 + gap) + 30] < 128).any(), f"no label on column {c}"
    with pytest.raises(ValueError, match="row_labels"):
        labelled_sheet(tiles, ["one"], ["a", "b", "c"])
    with pytest.raises(ValueError, match="col_labels"):
        labelled_sheet(tiles, ["first", "second"], ["a"])


def test_sheet_columns_are_key_frames_from_the_input_to_the_revisit():
    assert sheet_frames(97, 5) == [0, 24, 48, 72, 96]
    assert sheet_frames(QUICK_FRAMES, 5) == [0, 16, 32, 48, 64]
    assert sheet_frames(9, 5) == [0, 4, 8]  # never more columns than latents
    assert column_labels([0, 48, 96], [93, 96]) == ["frame 0 (input)", "frame 48", "frame 96 (revisit)"]


def test_decoded_reads_show_the_scene_where_the_memory_hit_and_black_elsewhere():
    from mirage_jax.models.latent_space import PatchifyLatentSpace

    space = PatchifyLatentSpace(4)
    frames = np.random.default_rng(1).integers(0, 256, (5, 8, 12, 3), dtype=np.uint8)  # 2 latents (frames 0, 4)
    scenes = np.asarray(space.encode(frames[None].astype(np.float32) / 127.5 - 1))[0]  # [2, 2, 3, 48]
    hits = np.zeros((2, 2, 3), bool)
    hits[1, 0, 2] = True
    reads = decoded_reads(scenes, hits, space)
    assert reads.shape == (2, 8, 12, 3) and reads.dtype == np.uint8
    np.testing.assert_array_equal(reads[1, 0:4, 8:12], frames[4, 0:4, 8:12])
    assert reads[0].max() == 0 and reads[1, 4:].max() == 0 and reads[1, :, :8].max() == 0


@pytest.mark.slow
def test_quick_demo_writes_everything_and_compares_four_variants(tmp_path):
    import imageio.v3 as iio

    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "-m", "mirage_jax", "demo", "--quick", "--quiet", "--out", str(out)]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-4000:]
    table = run.stdout[run.stdout.index("variant"):].splitlines()
    assert "depth AbsRel" in table[0] and "depth δ<1.25" in table[0]
    rows = {line.split()[0]: line.split() for line in table[2:6]}
    assert list(rows) == ["latent", "none", "rgb", "latent+head"], table
    abs_rel_cell, delta_cell = rows["latent+head"][4:6]
    assert float(abs_rel_cell) >= 0 and 0 <= float(delta_cell) <= 1
    assert rows["latent"][4:6] == ["GT", "GT"] and rows["none"][4:6] == ["-", "-"]
    for name in ("videos/latent.mp4", "videos/none.mp4", "videos/rgb.mp4", "videos/latent+head.mp4",
                 "revisit_contact_sheet.png", "memory_map.png", "plots/revisit.png", "plots/chunk_psnr.png",
                 "plots/hit_fraction.png", "eval/eval.json", "eval/latent+head/eval.json", "demo.json",
                 "checkpoint/metrics.jsonl"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert list((out / "eval" / "plots").glob("*.png")), "no per-chunk metric plots"

    # the sheet: 5 columns of frames enlarged to >= 256 px (32x56 -> 160x280) and 6 rows, plus labels
    sheet = iio.imread(out / "revisit_contact_sheet.png")
    tile_h, tile_w = 160, 280
    assert 5 * tile_w < sheet.shape[1] < 5 * tile_w + 400 and SHEET_ROWS * tile_h < sheet.shape[0] < 7 * tile_h
    memory_map = iio.imread(out / "memory_map.png")  # 2 memories x 2 chunks of 256 px maps
    assert 2 * 256 < memory_map.shape[0] < 3 * 256 and 2 * 256 < memory_map.shape[1] < 3 * 256 + 400

    report = json.loads((out / "demo.json").read_text())
    metrics = report["eval"]
    assert list(metrics) == ["latent", "none", "rgb", "latent+head"]
    assert set(report["head_depth"]) == {"abs_rel", "delta_1.25", "valid_fraction"}
    assert report["head_depth"]["abs_rel"] == pytest.approx(float(abs_rel_cell), abs=1e-3)
    for m in metrics.values():
        assert len(m["cache_bytes"]) == 2 and m["seconds_per_frame"] > 0
    assert metrics["none"]["cache_bytes"] == [0, 0]
    assert metrics["rgb"]["cache_bytes"][-1] > metrics["latent"]["cache_bytes"][-1] > 0
    assert metrics["latent+head"]["cache_bytes"][-1] > 0
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
    second = json.loads((fresh / "demo.json").read_text())
    assert second["head_depth"] == report["head_depth"]
    timings = ("cache_read_s", "seconds_per_frame_per_chunk")
    for variant, m in metrics.items():
        for trajectory, scores in m["trajectories"].items():
            again_scores = second["eval"][variant]["trajectories"][trajectory]
            for key, value in scores.items():
                if key not in timings and not (isinstance(value, float) and np.isnan(value)):
                    assert again_scores[key] == value, (variant, trajectory, key)
