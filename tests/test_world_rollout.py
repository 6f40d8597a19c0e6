"""Rollout end to end on CPU at 32x56 px (8x14 latents), 49 frames = 3 chunks of 17 frames, 3 sampler steps.

The oracle model (``world.oracle``) denoises toward the memory read, so the revisit consistency of a cache is
measured without training: the latent memory must beat no memory by a wide margin.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mirage_jax.data.synthetic import render_clip
from mirage_jax.world import iteration_plan, rollout, save_rollout
from mirage_jax.world.image_metrics import psnr
from mirage_jax.world.oracle import oracle_model
from mirage_jax.world.video import read_mp4
from tests.world_config import H, W, tiny_world_config

FRAMES = 49
# Oracle + latent memory vs no memory on the last frame (the camera is back within 3 cm / 1.5 deg of the start),
# world 0: against the first visit measured 24.7 vs 11.3 dB, against the ground-truth render 22.4 vs 11.3 dB.
REVISIT_MARGIN_DB = 8.0
GT_MARGIN_DB = 8.0


@pytest.fixture(scope="module")
def config():
    return tiny_world_config()


@pytest.fixture(scope="module")
def clip():
    return render_clip(0, FRAMES, H, W, "revisit")


@pytest.fixture(scope="module")
def oracle_runs(config, clip):
    model = oracle_model(config.latent.channels)
    return {cache: rollout(config, model, clip, FRAMES, cache=cache, progress=False) for cache in ("latent", "none")}


def test_plan_matches_official_examples():
    assert [(c.output_start, c.output_end, c.model_frames) for c in iteration_plan(65)] == [(0, 33, 33), (33, 65, 33)]
    assert [(c.output_start, c.output_end, c.model_frames) for c in iteration_plan(49)] == [(0, 33, 33), (33, 49, 17)]
    plan = iteration_plan(97)
    assert plan[2].pose_indices == tuple(range(64, 97, 4)) and plan[2].latent_start == 16
    assert plan[1].pixel_pose_indices == tuple(range(32, 65))


@pytest.mark.slow
def test_random_model_rollout_writes_files_and_metadata(config, clip, tmp_path):
    from mirage_jax.models import build_model

    model = build_model(config, seed=0)
    result = rollout(config, model, clip, FRAMES, cache="latent", progress=True)
    assert result.video.shape == (FRAMES, H, W, 3) and result.video.dtype == np.uint8
    assert len(result.chunks) == 3 and result.latents.shape == (13, H // 4, W // 4, 48)
    paths = save_rollout(result, tmp_path, config, fps=8, save_memory=True)
    assert paths["video"] == "generated.mp4"  # names relative to the folder, as metadata.json records them
    assert read_mp4(tmp_path / paths["video"]).shape == (FRAMES, H, W, 3)
    assert [read_mp4(tmp_path / p).shape[0] for p in paths["chunks"]] == [17, 17, 17]
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["config"]["sample"]["chunk_frames"] == 17
    assert [c["pose_indices"] for c in meta["chunks"]] == [[0, 4, 8, 12, 16], [16, 20, 24, 28, 32],
                                                           [32, 36, 40, 44, 48]]
    assert [c["preceding"] for c in meta["chunks"]] == [[], [2, 3], [6, 7]]
    sizes = [c["cache_bytes"] for c in meta["chunks"]]
    assert 0 < sizes[0] <= sizes[1] <= sizes[2] <= meta["chunks"][0]["cache_capacity_bytes"]
    assert all(c["timings_s"]["total"] > 0 for c in meta["chunks"])
    assert meta["files"]["memory"] == "memory.npz"
    assert np.load(tmp_path / paths["memory"])["valid"].sum() == meta["chunks"][-1]["cache_points"]
    # Frame 0 is the input image (patchify latents are exact up to uint8 rounding).
    np.testing.assert_allclose(result.video[0].astype(int), clip["frames"][0].astype(int), atol=1)


def test_oracle_latent_memory_beats_no_memory_on_revisit(oracle_runs, clip):
    last = {k: float(psnr(r.video[-1], r.video[0])) for k, r in oracle_runs.items()}
    gt = {k: float(psnr(r.video[-1], clip["frames"][FRAMES - 1])) for k, r in oracle_runs.items()}
    print(f"revisit PSNR vs first visit: {last}; vs ground truth: {gt}")
    assert last["latent"] > last["none"] + REVISIT_MARGIN_DB
    assert gt["latent"] > gt["none"] + GT_MARGIN_DB
    assert oracle_runs["latent"].chunks[-1]["hit_fraction"] > 0.9
    assert oracle_runs["none"].chunks[-1]["hit_fraction"] == 0.0


def test_same_seed_same_video(config, clip, oracle_runs):
    model = oracle_model(config.latent.channels)
    again = rollout(config, model, clip, FRAMES, cache="latent", progress=False)
    np.testing.assert_array_equal(again.video, oracle_runs["latent"].video)
    other = rollout(config, model, clip, FRAMES, cache="latent", seed=7, progress=False)
    assert np.abs(other.latents - oracle_runs["latent"].latents).max() > 0


def _bad(config, clip, match, **kwargs):
    args = dict(num_frames=FRAMES, cache="latent", progress=False)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        rollout(config, oracle_model(48), clip, **args)


def test_bad_inputs_fail_before_compute(config, clip):
    _bad(config, clip, r"4N\+1; use 45 or 49", num_frames=47)
    _bad(config, clip, "needs 53; pass --frames 49", num_frames=53)
    short = {k: (v[:33] if isinstance(v, np.ndarray) else v) for k, v in clip.items()}
    _bad(config, short, "has 33 poses", num_frames=FRAMES)
    other = config.copy_and_resolve_references()
    other.data.height = 64
    _bad(other, clip, "config.data.height=32", num_frames=FRAMES)
    odd = {**clip, "frames": clip["frames"][:, :28], "depths": clip["depths"][:, :28]}
    other.data.height = 28
    _bad(other, odd, "multiples of 8", num_frames=FRAMES)
    _bad(config, clip, "cache: expected one of", cache="voxels")
    _bad(config, clip, "LatentDepthHead", depth_source="head")
    bad_chunk = config.copy_and_resolve_references()
    bad_chunk.sample.chunk_frames = 16
    _bad(bad_chunk, clip, "sample.chunk_frames=16")


def test_batched_cfg_runs_and_is_exact_for_a_context_free_model(config, clip, oracle_runs):
    """The oracle ignores the text, so cond == uncond and ``u + g (c - u)`` must reproduce the unguided video."""
    guided = config.copy_and_resolve_references()
    guided.sample.guidance_scale = 3.0
    result = rollout(guided, oracle_model(guided.latent.channels), clip, FRAMES, cache="latent", progress=False)
    np.testing.assert_allclose(result.latents, oracle_runs["latent"].latents, atol=1e-5)



def test_generator_steps_keep_arrays_on_the_device(config, clip, oracle_runs):
    """One generator runs several camera paths; its named steps hand each other device arrays (never numpy), and
    under a device→host transfer guard (effective on accelerators; CPU arrays already live in host memory) only
    the explicit transfers of outputs and metadata happen. The videos equal the one-call ``rollout``'s."""
    import jax

    from mirage_jax.world import WorldGenerator

    generator = WorldGenerator(config, oracle_model(config.latent.channels))
    with jax.transfer_guard_device_to_host("disallow"):
        results = {cache: generator.generate(clip, FRAMES, cache=cache, progress=False)
                   for cache in ("latent", "rgb", "none")}
    for cache in ("latent", "none"):
        np.testing.assert_array_equal(results[cache].video, oracle_runs[cache].video)
        np.testing.assert_array_equal(results[cache].latents, oracle_runs[cache].latents)
    assert results["rgb"].video.shape == (FRAMES, H, W, 3)

    plan = iteration_plan(FRAMES, int(config.sample.chunk_frames))
    for cache in ("latent", "rgb"):
        run = generator.start(clip, plan, cache, "geometry", None, None, 0)
        for chunk in plan[:2]:
            views, scene, hit, _ = generator.read_scene(run, chunk)
            context = generator.gather_context(run, chunk, views, scene, hit)
            latents, _ = generator.denoise(run, chunk, context)
            frames, _ = generator.decode(latents)
            generator.write_back(run, chunk, latents, frames, scene, hit)
            exchanged = {"scene": scene, "hit": hit, "references": context.references,
                         "preceding": context.preceding, "control": context.control, "latents": latents,
                         "frames": frames, "run.latents": run.latents, "run.scenes": run.scenes, "run.hits": run.hits}
            on_host = [name for name, value in exchanged.items() if not isinstance(value, jax.Array)]
            assert not on_host, f"{cache} cache, chunk {chunk.index}: {on_host} left the device"


def test_on_chunk_sees_the_memory_after_each_chunk(config, clip, oracle_runs):
    """``on_chunk`` gets each chunk's metadata and the cache state after its write-back: the copied states grow
    chunk by chunk, the last equals the rollout's final cache, and the video is the one without the hook."""
    import jax

    from mirage_jax import memory

    seen = []
    result = rollout(config, oracle_model(config.latent.channels), clip, FRAMES, cache="latent", progress=False,
                     on_chunk=lambda meta, state: seen.append((meta, jax.device_get(state))))
    assert [meta["chunk"] for meta, _ in seen] == [0, 1, 2]
    counts = [memory.num_points(state) for _, state in seen]
    assert counts == [meta["cache_points"] for meta, _ in seen] and counts[0] < counts[-1]
    np.testing.assert_array_equal(seen[-1][1].points, np.asarray(result.cache.points))
    np.testing.assert_array_equal(result.video, oracle_runs["latent"].video)


def test_bars_name_the_variant():
    from mirage_jax.world.progress import variant_label

    assert variant_label("latent", "geometry") == "latent"
    assert variant_label("latent", "head") == "latent+head"
    assert variant_label("rgb", lambda *a: None) == "rgb+callable"
