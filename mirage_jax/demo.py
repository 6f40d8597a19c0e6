"""``mirage-jax demo``: the whole system on a CPU in minutes, and the point of it in one table.

1. builds a small procedural-world dataset (TFDS/ArrayRecord, under ``OUT/data``);
2. trains the ``tiny`` config (patchify latents) at the sizes of ``DEMO_SETTINGS`` with flow matching
   (``OUT/checkpoint``; resumes);
3. generates a held-out ``revisit`` trajectory of several chunks three times — with the latent spatial memory,
   without memory, and with the RGB point cache — from the same model, seed and poses;
4. scores them against the ground-truth renders (``mirage-jax eval``'s ``OUT/eval/eval.json``), and writes
   the three videos (``OUT/videos``), a contact sheet of the revisit frames, plots per chunk, and prints one
   table.

Re-running with the same ``--out`` reuses the dataset and the trained checkpoint (a killed demo resumes its
training) and replaces the evaluation, saying so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from mirage_jax.config import accept_config_overrides

VARIANTS = ("latent", "none", "rgb")
# The tiny config sized for a 2-core CPU budget: 32x56 frames (8x14 latents, 28 tokens per frame) and a DiT
# width of 256, so one token can carry a whole 2x2x48 = 192-value latent patch. At width 64 or 128 a token
# cannot represent the patch it has to copy from the memory, and the model never learns to use it.
DEMO_SETTINGS = (
    "data.height=32", "data.width=56", "data.num_clips=64",
    "model.dim=256", "model.num_heads=8", "model.ffn_dim=512",
    "train.num_steps=500", "train.batch_size=4", "train.lr=1e-3", "train.warmup_steps=50",
    "train.log_every=50", "train.eval_every=250", "train.checkpoint_every=250",
)
HELD_OUT_WORLD = 777  # a world seed outside the training clips (seeds config.seed + [0, num_clips))


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


def _table(metrics: dict) -> str:
    rows = [("variant", "revisit PSNR", "revisit SSIM", "PSNR vs GT", "memory (KiB)", "s/frame")]
    for name in VARIANTS:
        m = metrics[name]
        rows.append((name, f"{m['revisit_psnr']:.2f}", f"{m['revisit_ssim']:.3f}", f"{m['revisit_psnr_gt']:.2f}",
                     f"{m['cache_bytes'][-1] / 1024:.1f}", f"{m['seconds_per_frame']:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
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
    from mirage_jax.checkpoints import load_model, open_source
    from mirage_jax.output_dirs import new_output_dir
    from mirage_jax.train.loop import train
    from mirage_jax.world.evaluate import evaluate

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/3] data + training ({config.train.num_steps} steps of the {config.name} config) -> {out}")
    summary = train(config, out / "checkpoint", progress=not args.quiet)
    train_s = time.perf_counter() - start
    model = load_model(open_source(out / "checkpoint"), config)

    print(f"[2/3] generating a held-out revisit trajectory ({chunks} chunks) with {', '.join(VARIANTS)}")
    chunk_frames = int(config.sample.chunk_frames)
    num_frames = chunk_frames + (chunks - 1) * (chunk_frames - 1)
    if (out / "eval").exists():
        print(f"note: replacing the earlier evaluation in {out / 'eval'}", file=sys.stderr)
        shutil.rmtree(out / "eval")
    with new_output_dir(out / "eval") as staging:  # a killed demo leaves no half-written evaluation
        metrics = evaluate(config, model, staging, trajectories=("revisit",), num_frames=num_frames,
                           seed=HELD_OUT_WORLD, variants=VARIANTS, progress=not args.quiet)

    print("[3/3] writing videos and the contact sheet")
    videos = out / "videos"
    videos.mkdir(exist_ok=True)
    for name in VARIANTS:
        shutil.copyfile(out / "eval" / "revisit" / name / "generated.mp4", videos / f"{name}.mp4")
    shutil.copyfile(out / "eval" / "revisit_revisit.png", out / "revisit_contact_sheet.png")
    report = {"train": summary, "eval": metrics, "seconds": {"train": train_s, "total": time.perf_counter() - start}}
    (out / "demo.json").write_text(json.dumps(report, indent=2, default=str))

    gain = metrics["latent"]["revisit_psnr"] - metrics["none"]["revisit_psnr"]
    print()
    print(_table(metrics))
    print()
    print(f"latent memory vs no memory on the revisited frames: {gain:+.2f} dB PSNR "
          f"(final training loss {summary.get('loss')}; {time.perf_counter() - start:.0f} s in all)")
    print(f"contact sheet (GT first visit | GT revisit | latent | none | rgb): {out / 'revisit_contact_sheet.png'}")
    print(f"outputs: {out}  (videos/, eval/eval.json, eval/plots/, checkpoint/, demo.json)")
    return 0
