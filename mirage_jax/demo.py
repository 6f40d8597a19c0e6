"""``mirage-jax demo``: the whole system on a CPU in minutes, and the point of it in one table and two pictures.

1. builds a small procedural-world dataset (TFDS/ArrayRecord, under ``OUT/data``, with a progress bar);
2. trains the ``tiny`` config (patchify latents) at the sizes of ``DEMO_SETTINGS`` with flow matching, and the
   latent depth head beside it (``OUT/checkpoint``; resumes);
3. generates a held-out ``revisit`` trajectory of several chunks four times from the same model, seed and
   poses — with the latent spatial memory, without memory, with the RGB point cache (these three written back
   with the ground-truth depth) and ``latent+head``: the latent memory written back with the depth head's
   depth, no ground truth in the loop — and scores them against the ground-truth renders (``OUT/eval``:
   ``mirage-jax eval``'s outputs for the first three, ``OUT/eval/latent+head`` for the fourth);
4. draws the figures (``OUT/revisit_contact_sheet.png``: frames over the trajectory, a row per variant plus the
   memory read; ``OUT/memory_map.png``: the memory seen from above after each chunk; ``OUT/plots``), scores the
   head's depth against the ground truth, writes the videos and prints one table.

The figures come from the same rollouts generated once more (``evaluate`` returns scores, not rollouts; the
rollouts are deterministic, so these are the scored videos, and they take seconds). Re-running with the same
``--out`` reuses the dataset and the trained checkpoint (a killed demo resumes its training) and replaces the
evaluation, saying so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from mirage_jax.config import accept_config_overrides

VARIANTS = ("latent", "none", "rgb")  # written back with the ground-truth depth (``none`` writes nothing)
HEAD = "latent+head"  # the latent memory written back with the depth head's depth
ROW_LABELS = {"latent": "latent memory", "none": "no memory", "rgb": "RGB cache", HEAD: "latent + depth head"}
# The tiny config sized for a 2-core CPU budget: 32x56 frames (8x14 latents, 28 tokens per frame) and a DiT
# width of 256, so one token can carry a whole 2x2x48 = 192-value latent patch. At width 64 or 128 a token
# cannot represent the patch it has to copy from the memory, and the model never learns to use it. 800 steps
# with the learning rate decayed to 0 (cosine) fill the time budget; the decay is what sharpens the frames.
DEMO_SETTINGS = (
    "data.height=32", "data.width=56", "data.num_clips=64",
    "model.dim=256", "model.num_heads=8", "model.ffn_dim=512",
    "train.num_steps=800", "train.batch_size=4", "train.lr=1e-3", "train.warmup_steps=50", "train.schedule=cosine",
    "train.log_every=50", "train.eval_every=400", "train.checkpoint_every=400", "train.depth_head=True",
)
HELD_OUT_WORLD = 777  # a world seed outside the training clips (seeds config.seed + [0, num_clips))
SHEET_COLUMNS = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="mirage_demo", help="output folder (default: mirage_demo)")
    parser.add_argument("--config", default="configs/tiny.py", help="config file (default: configs/tiny.py)")
    parser.add_argument("--quick", action="store_true",
                        help="same code path with fewer training steps and a 2-chunk video (for CI)")
    parser.add_argument("--chunks", type=int, default=3, help="chunks in the generated video (default 3)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    accept_config_overrides(parser)


def demo_config(config_path: str, overrides: list[str], out: Path, quick: bool):
    """The demo's config: the given one, with its data under ``OUT/data`` and ``--quick`` shrinking."""
    from mirage_jax.config import apply_overrides, load_config
    from mirage_jax.train.validate import check_training_start

    config = load_config(config_path)
    config.data.data_dir = str(out / "data")
    apply_overrides(config, DEMO_SETTINGS)
    if quick:
        config.train.num_steps = 12
        config.train.log_every = 4
        config.train.eval_every = 12
        config.train.checkpoint_every = 12
        config.data.num_clips = 8
        config.sample.steps = 4
    apply_overrides(config, overrides)
    check_training_start(config)
    return config


def evaluate_variants(config, model, head, out: Path, num_frames: int, progress: bool) -> dict:
    """``{variant: metrics}`` of ``VARIANTS`` and ``HEAD`` on the held-out revisit path, written under ``out``
    (a new folder; ``HEAD``'s own evaluation in ``out / HEAD``)."""
    from mirage_jax.world.evaluate import evaluate

    common = {"trajectories": ("revisit",), "num_frames": num_frames, "seed": HELD_OUT_WORLD, "progress": progress}
    metrics = evaluate(config, model, out, variants=VARIANTS, **common)
    with_head = evaluate(config, model, out / HEAD, variants=("latent",), depth_source="head", depth_head=head,
                         **common)
    return {**metrics, HEAD: with_head["latent"]}


def figure_rollouts(config, model, head, clip: dict, num_frames: int, progress: bool):
    """The rollouts of every variant on ``clip`` (``{variant: RolloutResult}``) and bird's-eye maps of the two
    latent memories after each chunk (``{variant: [uint8 [256, 256, 3]]}``)."""
    from mirage_jax.world.generator import WorldGenerator
    from mirage_jax.world.memory_map import memory_map, memory_points_and_colors

    generator = WorldGenerator(config, model, depth_head=head)
    hw = clip["frames"].shape[1:3]

    def draw_into(maps: list):
        def draw(chunk: dict, state) -> None:
            end = chunk["output_frames"][1]  # the camera path so far
            points, colors = memory_points_and_colors(state, generator.space)
            maps.append(memory_map(points, colors, clip["poses_c2w"][:end], clip["intrinsics"][:end], hw))
        return draw

    maps = {"latent": [], HEAD: []}
    runs = {"latent": ("latent", "geometry"), "none": ("none", "geometry"), "rgb": ("rgb", "geometry"),
            HEAD: ("latent", "head")}
    results = {name: generator.generate(clip, num_frames, cache=cache, depth_source=depth, progress=progress,
                                        on_chunk=draw_into(maps[name]) if name in maps else None)
               for name, (cache, depth) in runs.items()}
    return results, maps


def head_depth_errors(head, latents: np.ndarray, depths: np.ndarray) -> dict:
    """``depth_metrics.depth_errors`` of the head's depth for ``latents [T, h, w, C]`` against the ground truth
    ``depths [T, H, W]`` brought to latent resolution (``robust``: a cell is valid when all its pixels are)."""
    from mirage_jax.memory import downsample_depth
    from mirage_jax.world.depth import HeadDepth
    from mirage_jax.world.depth_metrics import depth_errors

    predicted, _ = HeadDepth(head)(latents, None, None)
    truth, valid = downsample_depth(depths, None, np.shape(latents)[1:3], mode="robust")
    return depth_errors(np.asarray(predicted), np.asarray(truth), np.asarray(valid))


def write_figures(out: Path, clip: dict, results: dict, maps: dict, metrics: dict, space,
                  chunk_frames: int) -> dict:
    """The contact sheet, the memory maps and the plots; returns ``{name: path}``."""
    from mirage_jax.video_shapes import FRAMES_PER_LATENT
    from mirage_jax.world import figures
    from mirage_jax.world.evaluate import revisit_pairs
    from mirage_jax.world.video import labelled_sheet, write_png

    num_frames = len(results["latent"].video)
    frames = figures.sheet_frames(num_frames, SHEET_COLUMNS)
    revisit = [i for i, _ in revisit_pairs(clip["poses_c2w"][:num_frames], chunk_frames - 1)]
    reads = figures.decoded_reads(results["latent"].scenes, results["latent"].hits, space)
    rows = {"ground truth": clip["frames"][frames],
            **{ROW_LABELS[name]: results[name].video[frames] for name in (*VARIANTS, HEAD)},
            "memory read (latent)": reads[np.asarray(frames) // FRAMES_PER_LATENT]}
    sheet = labelled_sheet(list(rows.values()), list(rows), figures.column_labels(frames, revisit))
    chunks = [f"after chunk {k + 1} (frames 0-{c['output_frames'][1] - 1})"
              for k, c in enumerate(results["latent"].chunks)]
    strip = figures.map_strip({"latent memory": maps["latent"], "latent + depth head": maps[HEAD]}, chunks)
    paths = {"contact_sheet": write_png(out / "revisit_contact_sheet.png", sheet),
             "memory_map": write_png(out / "memory_map.png", strip),
             "revisit_plot": figures.plot_revisit(metrics, out / "plots" / "revisit.png")}
    for path in figures.plot_chunks(metrics, out / "plots"):
        paths[f"plot_{path.stem}"] = path
    return {name: str(path) for name, path in paths.items()}


def _table(metrics: dict, head_depth: dict) -> str:
    """The printed table: one row per variant; the depth columns score the write-back depth (``GT``: the
    ground truth itself, ``-``: nothing written)."""
    depth = {HEAD: (f"{head_depth['abs_rel']:.3f}", f"{head_depth['delta_1.25']:.3f}"), "none": ("-", "-")}
    rows = [("variant", "revisit PSNR", "revisit SSIM", "PSNR vs GT", "depth AbsRel", "depth δ<1.25",
             "memory (KiB)", "s/frame")]
    for name, m in metrics.items():
        rows.append((name, f"{m['revisit_psnr']:.2f}", f"{m['revisit_ssim']:.3f}", f"{m['revisit_psnr_gt']:.2f}",
                     *depth.get(name, ("GT", "GT")), f"{m['cache_bytes'][-1] / 1024:.1f}",
                     f"{m['seconds_per_frame']:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args) -> int:
    out = Path(args.out).absolute()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file, not a folder")
    config = demo_config(args.config, getattr(args, "overrides", []), out, args.quick)
    chunks = 2 if args.quick else args.chunks
    if chunks < 2:
        raise ValueError("--chunks: a revisit needs at least 2 chunks")
    from mirage_jax.checkpoints import load_depth_head, load_model, open_source
    from mirage_jax.data.pipeline import clip_source
    from mirage_jax.data.progress import clip_progress
    from mirage_jax.data.synthetic import render_clip
    from mirage_jax.models.latent_space import make_latent_space
    from mirage_jax.output_dirs import new_output_dir
    from mirage_jax.train.loop import train
    from mirage_jax.video_shapes import FRAMES_PER_LATENT
    from mirage_jax.world.evaluate import default_num_frames
    from mirage_jax.world.video import write_mp4

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    print(f"[1/4] dataset: {config.data.num_clips} procedural clips -> {out / 'data'}")
    clip_source(config, "train", progress=clip_progress if progress else None)  # built once, then reused
    print(f"[2/4] training ({config.train.num_steps} steps of the {config.name} config, with the depth head)")
    summary = train(config, out / "checkpoint", progress=progress)
    train_s = time.perf_counter() - start
    source = open_source(out / "checkpoint")
    model, head = load_model(source, config), load_depth_head(source, config)

    print(f"[3/4] generating a held-out revisit trajectory ({chunks} chunks) with {', '.join((*VARIANTS, HEAD))}")
    chunk_frames = int(config.sample.chunk_frames)
    num_frames = default_num_frames(chunk_frames, chunks)
    if (out / "eval").exists():
        print(f"note: replacing the earlier evaluation in {out / 'eval'}", file=sys.stderr)
        shutil.rmtree(out / "eval")
    with new_output_dir(out / "eval") as staging:  # a killed demo leaves no half-written evaluation
        metrics = evaluate_variants(config, model, head, staging, num_frames, progress)

    print("[4/4] figures, depth of the head, videos")
    hw = (int(config.data.height), int(config.data.width))
    clip = render_clip(HELD_OUT_WORLD, num_frames, *hw, "revisit")  # the evaluated clip
    results, maps = figure_rollouts(config, model, head, clip, num_frames, progress)
    figures = write_figures(out, clip, results, maps, metrics, make_latent_space(config), chunk_frames)
    generated = results[HEAD].latents[1:]  # latent 0 is the input image's
    depths = clip["depths"][FRAMES_PER_LATENT * np.arange(1, len(generated) + 1)]
    head_depth = head_depth_errors(head, generated, depths)
    videos = out / "videos"
    for name, result in results.items():
        write_mp4(videos / f"{name}.mp4", result.video, int(config.sample.fps))
    report = {"train": summary, "eval": metrics, "head_depth": head_depth, "figures": figures,
              "seconds": {"train": train_s, "total": time.perf_counter() - start}}
    (out / "demo.json").write_text(json.dumps(report, indent=2, default=str))

    gain = metrics["latent"]["revisit_psnr"] - metrics["none"]["revisit_psnr"]
    print()
    print(_table(metrics, head_depth))
    print()
    print(f"latent memory vs no memory on the revisited frames: {gain:+.2f} dB PSNR "
          f"(final training loss {summary.get('loss')}; {time.perf_counter() - start:.0f} s in all)")
    print(f"depth columns: the write-back depth against the ground truth at latent resolution ({HEAD}: the "
          "depth head on the generated latents; GT: the ground truth itself)")
    print(f"contact sheet (columns: frames over the path; rows: ground truth, each variant, the memory read): "
          f"{figures['contact_sheet']}")
    print(f"memory seen from above after each chunk: {figures['memory_map']}")
    print(f"outputs: {out}  (videos/, plots/, eval/eval.json, checkpoint/, demo.json)")
    return 0
