"""Evaluation and the generate / eval commands on a 32x56 procedural world (oracle model, 3 chunks of 17)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mirage_jax.cli import main as cli_main
from mirage_jax.config import load_config
from mirage_jax.data.synthetic import render_clip, save_geometry_npz
from mirage_jax.world import eval_cli, generate_cli, loading
from mirage_jax.world import evaluate as evaluation
from mirage_jax.world.oracle import oracle_model
from mirage_jax.world.video import read_mp4

H, W, FRAMES = 32, 56, 49
LONG_CHUNKS = 8  # the drift rollout: 129 frames
OVERRIDES = [f"--config.data.height={H}", f"--config.data.width={W}", "--config.sample.steps=3",
             "--config.sample.chunk_frames=17", "--config.memory.capacity=4096"]


def _config():
    return load_config("tiny", OVERRIDES)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    metrics = evaluation.evaluate(_config(), oracle_model(48), out, trajectories=("revisit",), num_frames=FRAMES,
                                  seed=0, progress=False, long_chunks=LONG_CHUNKS)
    return out, metrics


def test_eval_json_has_every_variant_and_metric(results):
    out, metrics = results
    saved = json.loads((out / "eval.json").read_text())
    assert set(saved) == {"latent", "none", "rgb"}
    for variant, r in saved.items():
        for key in ("revisit_psnr", "revisit_ssim", "revisit_psnr_gt", "follow_psnr", "seconds_per_frame"):
            assert isinstance(r[key], float), (variant, key)
        assert len(r["cache_bytes"]) == 3 and all(isinstance(b, int) for b in r["cache_bytes"])
        assert len(r["seconds_per_frame_per_chunk"]) == 3
        for key in ("closed_loop_psnr", "closed_loop_ssim", "reprojection_error", "reprojection_error_gt",
                    "reprojection_coverage"):
            assert np.isfinite(r[key]), (variant, key)
        assert len(r["chunk_reprojection_error"]) == 3
        assert len(r["drift_psnr"]) == len(r["drift_cache_bytes"]) == LONG_CHUNKS
        assert all(isinstance(b, int) for b in r["drift_cache_bytes"])
        assert any("LPIPS: not computed" in note for note in r["notes"])
    assert saved["none"]["cache_bytes"] == [0, 0, 0]
    # The RGB cache stores pixels (3 floats + 25 B bookkeeping each): 16x the cells of the latent memory.
    assert saved["rgb"]["cache_bytes"][-1] > saved["latent"]["cache_bytes"][-1]
    # With the oracle, the latent memory reproduces the start view when the camera returns; no memory cannot.
    print({v: (r["revisit_psnr"], r["revisit_psnr_gt"]) for v, r in saved.items()})
    assert saved["latent"]["revisit_psnr"] > saved["none"]["revisit_psnr"] + 8
    assert saved["latent"]["revisit_ssim"] > saved["none"]["revisit_ssim"] + 0.2
    assert saved["latent"]["revisit_psnr_gt"] > saved["none"]["revisit_psnr_gt"] + 8
    assert saved["latent"]["read_psnr"] > 10 and np.isnan(saved["none"]["read_psnr"])
    assert saved["latent"]["closed_loop_psnr"] > saved["none"]["closed_loop_psnr"] + 8
    assert saved["none"]["drift_cache_bytes"] == [0] * LONG_CHUNKS
    for name in evaluation.PER_CHUNK + evaluation.DRIFT:
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    assert (out / "revisit_revisit.png").exists()
    assert read_mp4(out / "revisit" / "latent" / "generated.mp4").shape == (FRAMES, H, W, 3)
    table = evaluation.format_table(metrics)
    assert all(v in table for v in ("latent", "none", "rgb"))


def test_revisit_pairs():
    poses = np.tile(np.eye(4, dtype=np.float32), (10, 1, 1))
    poses[:, 0, 3] = [0, 0.1, 2, 3, 4, 5, 4, 0.1, 0.2, 0.05]
    assert evaluation.revisit_pairs(poses, min_gap=4) == [(7, 0), (9, 0)]
    assert evaluation.revisit_pairs(poses, min_gap=8) == [(9, 0)]
    turned = poses.copy()
    turned[9, :3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]  # looking sideways: not a revisit
    assert evaluation.revisit_pairs(turned, min_gap=8) == []


def _args(parser_module, argv):
    import argparse

    parser = argparse.ArgumentParser()
    parser_module.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def oracle_loader(monkeypatch):
    """The commands with the oracle in place of a checkpoint (the CLI plumbing is what is tested here)."""
    monkeypatch.setattr(loading, "load_model", lambda config, source, depth_source, mesh=None: (oracle_model(48), None))
    monkeypatch.setattr(generate_cli, "load_model", loading.load_model)
    monkeypatch.setattr(eval_cli, "load_model", loading.load_model)


def test_generate_command_from_geometry_npz(tmp_path, oracle_loader):
    clip = render_clip(0, FRAMES, H, W, "revisit")
    save_geometry_npz(tmp_path / "geometry.npz", clip)
    out = tmp_path / "gen"
    argv = ["--config", "tiny", "--checkpoint", "random", "--geometry", str(tmp_path / "geometry.npz"),
            "--frames", str(FRAMES), "--out", str(out), "--quiet", "--save-memory", *OVERRIDES]
    assert generate_cli.run(_args(generate_cli, argv)) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["settings"]["cache"] == "latent" and len(meta["chunks"]) == 3
    assert (out / "memory.npz").exists() and read_mp4(out / "generated.mp4").shape[0] == FRAMES


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint", "/nonexistent/run"], "no such folder"),
        (["--frames", "50"], "--frames=50 is not of the form 4N"),
        (["--frames", "97"], "has 49 poses"),
        (["--config.data.height=64"], "config.data.height=32"),
        (["--cache", "rgb", "--depth-source", "head"], "needs a trained checkpoint"),
    ],
)
def test_generate_command_bad_inputs(tmp_path, capsys, argv, message):
    save_geometry_npz(tmp_path / "geometry.npz", render_clip(0, FRAMES, H, W, "revisit"))
    base = {"--checkpoint": "random", "--frames": str(FRAMES)}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    flags = [x for kv in base.items() for x in kv] + [a for a in argv if a.startswith("--config.")]
    full = ["--config", "tiny", "--geometry", str(tmp_path / "geometry.npz"), "--out", str(tmp_path / "o"),
            *OVERRIDES, *flags]
    assert cli_main(["generate", *full]) == 2  # through the dispatch that prints the one-line error
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, message", [(["--variants", "latent,voxel"], "variants: unknown ['voxel']"),
                                            (["--long-chunks", "-1"], "--long-chunks: expected a chunk count >= 0"),
                                            (["--reprojection-gap", "0"], "--reprojection-gap: expected 1 <= gap"),
                                            (["--frames", "9", "--reprojection-gap", "9"],
                                             "--reprojection-gap: expected 1 <= gap < num_frames=9, got 9")])
def test_eval_command_rejects_bad_options(tmp_path, capsys, flags, message):
    argv = ["--config", "tiny", "--checkpoint", "random", "--out", str(tmp_path), *flags]
    assert cli_main(["eval", *argv]) == 2
    assert message in capsys.readouterr().err


def test_eval_command_runs(tmp_path, oracle_loader, capsys):
    argv = ["--config", "tiny", "--checkpoint", "random", "--out", str(tmp_path), "--variants", "latent,none",
            "--trajectories", "loop", "--frames", str(FRAMES), "--quiet", "--no-videos", "--long-chunks", "2",
            "--reprojection-gap", "8", *OVERRIDES]
    assert eval_cli.run(_args(eval_cli, argv)) == 0
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert set(saved) == {"latent", "none"} and len(saved["latent"]["drift_psnr"]) == 2
    assert any("frame i+8" in note for note in saved["latent"]["notes"])  # the gap reached the protocol
    assert "latent" in capsys.readouterr().out


def test_namespace_defaults():
    args = _args(eval_cli, ["--config", "tiny", "--checkpoint", "random", "--out", "x"])
    assert args.variants == ("latent", "none", "rgb") and args.trajectories == ("revisit", "loop")
    assert args.long_chunks == 0 and args.reprojection_gap == 4


@pytest.mark.parametrize("tiled", [True, False])
def test_generate_and_eval_honour_vae_tiling(tmp_path, monkeypatch, tiled):
    """``latent.vae.tiled`` reaches every VAE call of ``generate`` and ``eval`` (first-frame and ground-truth
    encodes, chunk decodes): with it, each goes through the tiled path; without it, none does."""
    from mirage_jax.cli import main
    from mirage_jax.models.vae import tiling

    calls = {"encode_tiled": 0, "decode_tiled": 0}

    def counting(name):
        original = getattr(tiling, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return original(*args, **kwargs)

        return counted

    for name in calls:
        monkeypatch.setattr(tiling, name, counting(name))
    overrides = ["--config.latent.vae.tile_hw=(2,4)", "--config.latent.vae.tile_stride_hw=(1,2)",
                 f"--config.latent.vae.tiled={str(tiled).lower()}", "--config.sample.steps=1",
                 "--config.sample.chunk_frames=17", "--quiet"]
    common = ["--config", "tiny_wan", "--checkpoint", "random", *overrides]
    assert main(["generate", *common, "--procedural", "0", "--frames", "33", "--out", str(tmp_path / "g")]) == 0
    generated = dict(calls)
    assert main(["eval", *common, "--frames", "33", "--trajectories", "revisit", "--variants", "latent",
                 "--out", str(tmp_path / "e"), "--no-videos"]) == 0
    if tiled:  # generate: frame 0 and the constant score latent encoded, 2 chunks decoded; eval: the same plus
        assert generated == {"encode_tiled": 2, "decode_tiled": 2}  # the ground-truth encode
        assert calls == {"encode_tiled": 5, "decode_tiled": 4}
    else:
        assert calls == {"encode_tiled": 0, "decode_tiled": 0}
