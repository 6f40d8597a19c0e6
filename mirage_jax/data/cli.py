"""``mirage-jax data build``: prepares a ``pose_clips`` TFDS dataset (ArrayRecord) with a progress bar.

    mirage-jax data build --source procedural --out DIR --num-clips 32 --height 64 --width 112 --frames 49
    mirage-jax data build --source npz --input DIR --out DIR --height 704 --width 1280
    mirage-jax data build --source re10k --cameras DIR --frames-dir DIR --out DIR --height 360 --width 640
    mirage-jax data build ... --beam-runner DirectRunner    # or --beam-options="--runner=DataflowRunner ..."
    mirage-jax data encode --config configs/tiny_wan.py --source DATASET_FOLDER --out LATENT_FOLDER

``build`` prints the dataset folder; pass it as ``--config.data.source=<folder>`` to train on it (frames are
encoded per example while training: fine for tiny sizes). ``encode`` encodes its training windows once, on the
accelerators (``mirage_jax.data.encode``), into a latent dataset folder; pass that one as
``--config.data.source`` and training runs no encoder at all. ``encode`` is resumable: run the same command again.
``--beam-runner`` / ``--beam-options`` build with Apache Beam (``pip install -e ".[beam]"``), e.g. on a Dataflow,
Spark or Flink cluster: the same records, each clip made by a worker.
"""

from __future__ import annotations

import argparse

from mirage_jax.config import accept_config_overrides
from mirage_jax.data import synthetic
from mirage_jax.data.progress import clip_progress
from mirage_jax.distributed import add_distributed_arguments, initialize_distributed


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
    build.add_argument("--beam-runner", default=None,
                       help="build with Apache Beam on this runner (DirectRunner: locally; needs the beam extra)")
    build.add_argument("--beam-options", default="",
                       help='Beam pipeline options, one string: --beam-options="--runner=DataflowRunner '
                            '--project=P --region=R --temp_location=gs://B/tmp --setup_file=./setup.py"')

    encode = sub.add_parser("encode", help="encode a pose_clips dataset into a latent dataset (train without encoders)")
    encode.add_argument("--config", required=True, help="the training config (configs/tiny_wan.py): sizes, encoders")
    encode.add_argument("--source", required=True, help="pose_clips dataset folder (printed by data build)")
    encode.add_argument("--out", required=True, help="latent dataset folder to write (or to resume)")
    encode.add_argument("--clips-per-shard", type=int, default=16, help="clips per output file (the resume unit)")
    encode.add_argument("--batch", type=int, default=8, help="windows per encoder call on each process")
    encode.add_argument("--skip-bad-clips", action="store_true",
                        help="skip (and list) clips that cannot be read or are too short, instead of stopping")
    encode.add_argument("--quiet", action="store_true", help="no progress bar")
    add_distributed_arguments(encode)
    accept_config_overrides(parser)  # the subcommand's parser sees them: sub-parsers hand unknown ones up


def run(args) -> int:
    if args.action == "encode":
        return run_encode(args)
    if getattr(args, "overrides", []):
        raise ValueError(f"{args.overrides[0]}: config overrides apply to data encode, not data build")
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
    folder = tfds_io.build(config, args.out, progress=clip_progress, beam_runner=args.beam_runner,
                           beam_options=args.beam_options)
    print(folder)
    return 0


def run_encode(args) -> int:
    from mirage_jax.config import load_config  # noqa: PLC0415
    from mirage_jax.config_checks import validate_config  # noqa: PLC0415

    config = load_config(args.config, getattr(args, "overrides", []))
    validate_config(config)
    initialize_distributed(args)
    from mirage_jax.data.encode import encode_dataset  # noqa: PLC0415

    folder = encode_dataset(config, args.source, args.out, clips_per_shard=args.clips_per_shard, batch=args.batch,
                            skip_bad_clips=args.skip_bad_clips, progress=not args.quiet)
    import jax  # noqa: PLC0415

    if jax.process_index() == 0:
        print(folder)
    return 0
