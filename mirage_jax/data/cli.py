"""``mirage-jax data build``: prepares a ``pose_clips`` TFDS dataset (ArrayRecord) with a progress bar.

    mirage-jax data build --source procedural --out DIR --num-clips 32 --height 64 --width 112 --frames 49
    mirage-jax data build --source npz --input DIR --out DIR --height 704 --width 1280
    mirage-jax data build --source re10k --cameras DIR --frames-dir DIR --out DIR --height 360 --width 640

Prints the dataset folder; pass it as ``--config.data.source=<folder>`` to train on it.
"""

from __future__ import annotations

import argparse
import sys

from mirage_jax.data import synthetic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="build a pose_clips dataset (ArrayRecord, readable without TensorFlow)")
    build.add_argument("--source", choices=("procedural", "npz", "re10k"), default="procedural")
    build.add_argument("--out", required=True, help="TFDS data_dir to write into")
    build.add_argument("--height", type=int, default=64)
    build.add_argument("--width", type=int, default=112)
    build.add_argument("--frames", type=int, default=49, help="procedural clip length (cap for re10k)")
    build.add_argument("--num-clips", type=int, default=32, help="procedural training clips")
    build.add_argument("--num-test-clips", type=int, default=4, help="procedural test clips")
    build.add_argument("--trajectories", default=",".join(synthetic.TRAJECTORIES),
                       help=f"comma-separated subset of {synthetic.TRAJECTORIES}")
    build.add_argument("--dynamic-objects", type=int, default=0)
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--input", default="", help="npz: folder of geometry.npz samples")
    build.add_argument("--cameras", default="", help="re10k: folder of <clip>.txt camera files")
    build.add_argument("--frames-dir", default="", help="re10k: folder of <clip>/ frame folders")


def _progress(clips, total, split):
    """A bar on a terminal; in a pipe or log file one line per tenth of the clips (no redrawn bars)."""
    if sys.stderr.isatty():
        from tqdm import tqdm  # noqa: PLC0415

        yield from tqdm(clips, total=total, desc=f"{split} clips", unit="clip")
        return
    every = max(1, (total or 0) // 10)
    done = 0
    for done, clip in enumerate(clips, 1):
        yield clip
        if done % every == 0 or done == total:
            print(f"{split} clips: {done}/{total if total is not None else '?'}", file=sys.stderr, flush=True)


def run(args) -> int:
    from mirage_jax.data import tfds_io  # noqa: PLC0415  (TFDS import is slow: only when building)
    from mirage_jax.data.pose_clips import pose_clips_dataset_builder as pcb  # noqa: PLC0415

    fields = {"height": args.height, "width": args.width, "num_frames": args.frames}
    if args.source == "procedural":
        fields |= {"num_clips": args.num_clips, "num_test_clips": args.num_test_clips, "seed": args.seed,
                   "trajectories": tuple(t for t in args.trajectories.split(",") if t),
                   "dynamic_objects": args.dynamic_objects}
    elif args.source == "npz":
        fields |= {"input_dir": args.input}
    else:
        fields |= {"cameras_dir": args.cameras, "frames_dir": args.frames_dir}
    config = pcb.make_config(args.source, **fields)
    folder = tfds_io.build(config, args.out, progress=_progress)
    print(folder)
    return 0
