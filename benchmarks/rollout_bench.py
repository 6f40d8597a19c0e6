"""Rollout cost: latent memory vs RGB point cache, seconds per frame and cache bytes per chunk over 5 chunks.

What differs between the two pipelines is the scene cache (the paper: 0.25 vs 2.6-7.6 s/frame,
2.25 vs 124 MiB at chunk 5); the DiT, the decoder and the write-back depth are the same. So the benchmark
measures, side by side on the same trajectory (a procedural ``loop`` world, exact depth):

1. **Cache cost at the paper's geometry** (704x1280 pixels, 44x80x48 latents, 33-frame chunks): per chunk,
   the latent memory's read (9 target views at latent resolution) + write (8 latents), against the RGB
   cache's read (render of the chunk's 33 pixel frames at pixel resolution with the same z-buffer, then encode
   of the renders) + write (8 frames at pixel resolution). The latents are random (content does not change the
   cost). The encode of the RGB renders is measured with the exact patchify latent space (a lower bound: no
   network); the Wan2.2 VAE encoder's cost, far too slow for this CPU at 704x1280, is measured on a
   5x88x160 clip and scaled linearly by pixels x frames (reported separately, marked "extrapolated").
2. **End to end at a small geometry** (``configs/tiny.py`` model, randomly initialised, 64x112, patchify):
   full ``rollout`` per variant (latent / rgb / none), seconds per frame per chunk and cache bytes.

Reads, renders and encodes are timed as the fastest of 2-3 calls (they are pure), writes once; compilation is
kept out by an untimed warm-up chunk. ``--quick`` runs both parts at small sizes with the oracle model in part 2.
Prints tables; writes ``benchmarks/results/rollout.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax import geometry, memory
from mirage_jax.config import load_config
from mirage_jax.data.synthetic import camera_path, default_intrinsics, make_world, poses_from_angles, render_clip
from mirage_jax.models.latent_space import make_latent_space
from mirage_jax.world.caches import RGBCache, Views
from mirage_jax.world.chunks import iteration_plan

MIB = 2**20


def _timed(fn, *args, repeats: int = 1, **kwargs):
    """``(result, seconds)``: the fastest of ``repeats`` calls (pure functions only when repeats > 1)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args, **kwargs))
        best = min(best, time.perf_counter() - start)
    return out, best


def cache_cost(hw, factor: int, chunks: int, channels: int = 48, feature_dtype=jnp.bfloat16, seed: int = 0,
               view_batch: int = 3) -> dict:
    """Part 1: per-chunk cache read/write seconds and bytes for the latent memory and the RGB cache."""
    num_frames = 33 + 32 * (chunks - 1)
    plan = iteration_plan(num_frames, 33)
    lat_hw = (hw[0] // factor, hw[1] // factor)
    world = make_world(seed)
    poses = poses_from_angles(*camera_path(world, num_frames, "loop")[:3])
    k_pix = np.repeat(default_intrinsics(seed, *hw)[None], num_frames, 0)
    k_lat = np.asarray(geometry.scale_intrinsics(k_pix, hw, lat_hw), np.float32)
    keyframes = np.arange(0, num_frames, 4)
    t0 = time.perf_counter()
    frames, depths, _ = world.render(k_pix[keyframes], poses[keyframes], hw)  # only the frames that get written
    render_s = time.perf_counter() - t0
    frames = frames.astype(np.float32) / 127.5 - 1
    key_of = {int(p): i for i, p in enumerate(keyframes)}
    space = make_latent_space(_patchify(factor))
    rng = np.random.default_rng(seed)

    def latents(n):
        return jnp.asarray(rng.normal(size=(n, *lat_hw, channels)), feature_dtype)

    def chunk_views(chunk):
        tgt, pix = np.asarray(chunk.pose_indices), list(chunk.pixel_pose_indices)
        return Views(k_lat[tgt], poses[tgt], lat_hw, k_pix[pix], poses[pix], hw)

    def latent_step(state, views, new, idx):
        _, read_s = _timed(memory.read, state, jnp.asarray(views.k_lat), jnp.asarray(views.c2w), lat_hw, repeats=3)
        state, write_s = _timed(memory.write, state, latents(len(new)), jnp.asarray(depths[idx]),
                                jnp.asarray(k_pix[new]), jnp.asarray(poses[new]))
        return state, read_s, write_s

    def rgb_step(cache, views, new, idx):
        (renders, _), render_s = _timed(cache.render, views, repeats=2)
        _, encode_s = _timed(space.encode, renders[None], repeats=3)
        _, write_s = _timed(cache.write, None, frames[idx], depths[idx], None, None, poses[new], k_pix[new])
        return render_s, encode_s, write_s

    # Initialise both caches with frame 0 (as a rollout does), then one untimed warm-up chunk on throwaway
    # copies so that compilation stays out of the per-chunk timings.
    latent = memory.write(memory.init(262_144, channels, feature_dtype), latents(1), jnp.asarray(depths[:1]),
                          jnp.asarray(k_pix[:1]), jnp.asarray(poses[:1]))
    rgb = RGBCache(len(keyframes) * hw[0] * hw[1], space, write_frames=8, view_batch=view_batch)
    rgb.write(None, frames[:1], depths[:1], None, None, poses[:1], k_pix[:1])
    warm_new = list(plan[0].pose_indices[1:])
    warm_idx = [key_of[p] for p in warm_new]
    latent_step(latent, chunk_views(plan[0]), warm_new, warm_idx)
    saved = jax.tree_util.tree_map(jnp.copy, rgb.state)  # the cache writes in place: keep a copy to restore
    rgb_step(rgb, chunk_views(plan[0]), warm_new, warm_idx)
    rgb.state = saved
    rows = []
    for chunk in plan:
        new = list(chunk.pose_indices[1:])
        idx = [key_of[p] for p in new]
        views = chunk_views(chunk)
        latent, lat_read, lat_write = latent_step(latent, views, new, idx)
        rgb_render, rgb_encode, rgb_write = rgb_step(rgb, views, new, idx)
        n_new = chunk.output_end - chunk.output_start
        rows.append({
            "chunk": chunk.index + 1,
            "latent_read_s": lat_read, "latent_write_s": lat_write,
            "latent_bytes": memory.num_points(latent) * memory.bytes_per_point(latent),
            "rgb_render_s": rgb_render, "rgb_encode_patchify_s": rgb_encode, "rgb_write_s": rgb_write,
            "rgb_bytes": rgb.bytes_used(),
            "latent_s_per_frame": (lat_read + lat_write) / n_new,
            "rgb_s_per_frame": (rgb_render + rgb_encode + rgb_write) / n_new,
        })
        r = rows[-1]
        print(f"  chunk {r['chunk']}/{len(plan)}: latent {r['latent_s_per_frame']:.4f} s/frame "
              f"{r['latent_bytes'] / MIB:.2f} MiB | rgb {r['rgb_s_per_frame']:.4f} s/frame "
              f"{r['rgb_bytes'] / MIB:.1f} MiB", flush=True)
    return {"hw": list(hw), "latent_hw": list(lat_hw), "channels": channels, "gt_render_s": render_s, "chunks": rows}


def _patchify(factor: int):
    import ml_collections  # noqa: PLC0415

    return ml_collections.ConfigDict({"kind": "patchify", "spatial_factor": factor, "channels": 3 * factor**2})


def vae_encode_probe(hw_probe=(88, 160), frames: int = 5) -> dict:
    """Seconds of one Wan2.2-VAE encode (real widths, random weights) of ``frames x hw_probe``."""
    config = load_config("wan22_ti2v_5b")
    space = make_latent_space(config)
    video = jnp.zeros((1, frames, *hw_probe, 3), jnp.float32)
    _, compile_and_run = _timed(space.encode, video)
    _, run = _timed(space.encode, video)
    return {"hw": list(hw_probe), "frames": frames, "seconds": run, "first_call_seconds": compile_and_run}


def end_to_end(config_name: str, hw, chunks: int, steps: int, oracle: bool = False) -> dict:
    """Part 2: full rollouts of one model (the config's, randomly initialised, or the oracle), one per cache
    variant, on the same path."""
    from mirage_jax.models import build_model  # noqa: PLC0415
    from mirage_jax.world.generator import rollout  # noqa: PLC0415
    from mirage_jax.world.oracle import oracle_model  # noqa: PLC0415

    config = load_config(config_name)
    config.data.height, config.data.width = hw
    config.sample.steps = steps
    num_frames = 33 + 32 * (chunks - 1)
    clip = render_clip(0, num_frames, *hw, "loop")
    model = oracle_model(int(config.latent.channels)) if oracle else build_model(config, seed=0)
    out = {}
    for variant in ("latent", "rgb"):  # two chunks (the second selects references) compile outside the timings
        rollout(config, model, clip, min(65, num_frames), cache=variant, progress=False)
    for variant in ("latent", "rgb", "none"):
        result = rollout(config, model, clip, num_frames, cache=variant, progress=False)
        out[variant] = {
            "seconds_per_frame": [c["seconds_per_frame"] for c in result.chunks],
            "cache_read_s": [c["timings_s"]["cache_read"] for c in result.chunks],
            "denoise_s": [c["timings_s"]["denoise"] for c in result.chunks],
            "cache_bytes": [c["cache_bytes"] for c in result.chunks],
        }
    return {"config": config_name, "model": "oracle" if oracle else "random init", "hw": list(hw), "steps": steps,
            "variants": out}


def print_cache_table(part: dict, vae: dict | None) -> None:
    h, w = part["hw"]
    print(f"\n== cache cost per chunk at {h}x{w} px / {part['latent_hw'][0]}x{part['latent_hw'][1]}x"
          f"{part['channels']} latents (seconds per new frame; bytes of the stored points) ==")
    head = (f"{'chunk':>5} {'latent s/f':>11} {'rgb s/f':>9} {'ratio':>7} {'latent MiB':>11} {'rgb MiB':>9} "
            f"{'ratio':>7}   rgb: render / encode / write s | latent: read / write s")
    print(head)
    for r in part["chunks"]:
        print(f"{r['chunk']:>5} {r['latent_s_per_frame']:>11.4f} {r['rgb_s_per_frame']:>9.4f} "
              f"{r['rgb_s_per_frame'] / r['latent_s_per_frame']:>7.1f} {r['latent_bytes'] / MIB:>11.2f} "
              f"{r['rgb_bytes'] / MIB:>9.1f} {r['rgb_bytes'] / max(r['latent_bytes'], 1):>7.1f}   "
              f"{r['rgb_render_s']:.2f} / {r['rgb_encode_patchify_s']:.3f} / {r['rgb_write_s']:.2f} | "
              f"{r['latent_read_s']:.4f} / {r['latent_write_s']:.3f}")
    if vae:
        print(f"Wan2.2 VAE encode (extrapolated from {vae['frames']}x{vae['hw'][0]}x{vae['hw'][1]}): "
              f"{vae['extrapolated_s_per_chunk']:.1f} s per 33-frame chunk = {vae['extrapolated_s_per_frame']:.2f} "
              f"s/frame added to the RGB cache")


def print_e2e_table(part: dict) -> None:
    h, w = part["hw"]
    print(f"\n== end to end, {part['config']} config, model: {part['model']}, {h}x{w}, {part['steps']} steps: "
          "s/frame per chunk ==")
    for variant, r in part["variants"].items():
        spf = " ".join(f"{v:.4f}" for v in r["seconds_per_frame"])
        mib = " ".join(f"{v / MIB:.2f}" for v in r["cache_bytes"])
        print(f"{variant:>7}: s/frame [{spf}]  cache MiB [{mib}]")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, < 1 min")
    parser.add_argument("--no-vae", action="store_true", help="skip the Wan VAE encode probe")
    parser.add_argument("--out", default="benchmarks/results/rollout.json")
    parser.add_argument("--part", default="all", choices=("all", "cache", "e2e"), help="which part to run")
    parser.add_argument("--view-batch", type=int, default=3, help="RGB views rendered at once (memory bound)")
    args = parser.parse_args(argv)
    chunks = 5
    if args.quick:
        cache_hw, e2e_hw, steps, chunks = (96, 160), (32, 56), 2, 2
    else:
        cache_hw, e2e_hw, steps = (704, 1280), (64, 112), 10
    results = {"device": str(jax.devices()[0]), "quick": args.quick}
    if args.part in ("all", "cache"):
        results["cache_cost"] = cache_cost(cache_hw, 16, chunks, view_batch=args.view_batch)
        vae = None
        if not args.no_vae and not args.quick:
            vae = vae_encode_probe()
            scale = (cache_hw[0] * cache_hw[1] * 33) / (vae["hw"][0] * vae["hw"][1] * vae["frames"])
            vae["extrapolated_s_per_chunk"] = vae["seconds"] * scale
            vae["extrapolated_s_per_frame"] = vae["extrapolated_s_per_chunk"] / 32
            results["vae_encode_probe"] = vae
        print_cache_table(results["cache_cost"], vae)
    if args.part in ("all", "e2e"):
        results["end_to_end"] = end_to_end("tiny", e2e_hw, chunks, steps, oracle=args.quick)
        print_e2e_table(results["end_to_end"])
    out = Path(args.out if args.part == "all" else args.out.replace(".json", f"_{args.part}.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
