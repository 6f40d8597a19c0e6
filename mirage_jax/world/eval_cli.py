"""``mirage-jax eval --checkpoint SOURCE [--config CONFIG] --out OUT [--trajectories revisit,loop] [--frames N]
[--variants latent,none,rgb] [--long-chunks N] [--reprojection-gap K]``: the consistency evaluation of
``world.evaluate`` (``OUT/eval.json``, plots, contact sheets, videos), with its table printed. ``--long-chunks
N`` adds the drift rollout (a loop of N chunks per variant); ``--reprojection-gap K`` compares frames K apart in
the 3D reprojection error. ``OUT`` is a new folder that appears whole or not at all."""

from __future__ import annotations

import argparse

from mirage_jax.world.consistency import REPROJECTION_GAP, gap_pairs
from mirage_jax.world.loading import add_common_arguments, generation_mesh, load_config_and_check, load_model


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--trajectories", type=_names, default=("revisit", "loop"), help="comma-separated paths")
    parser.add_argument("--variants", type=_names, default=("latent", "none", "rgb"), help="caches to compare")
    parser.add_argument("--frames", type=int, default=None, help="video length 4N+1 (default: 3 chunks)")
    parser.add_argument("--world-seed", type=int, default=0, help="procedural world seed")
    parser.add_argument("--no-videos", action="store_true", help="do not write the generated videos")
    parser.add_argument("--long-chunks", type=int, default=0,
                        help="also roll out a loop of N chunks per variant for the drift curve (drift_psnr, "
                             "drift_cache_bytes; 8 or more for a curve; default 0: off)")
    parser.add_argument("--reprojection-gap", type=int, default=REPROJECTION_GAP,
                        help=f"frames apart in the 3D reprojection error (default {REPROJECTION_GAP}: one latent)")


def run(args) -> int:
    from mirage_jax.output_dirs import check_new_output, new_output_dir  # noqa: PLC0415
    from mirage_jax.video_shapes import check_video_length  # noqa: PLC0415
    from mirage_jax.world.evaluate import (  # noqa: PLC0415
        check_choices,
        check_long_chunks,
        default_num_frames,
        evaluate,
        format_table,
    )

    check_new_output(args.out, "--out")
    config, depth_source, source = load_config_and_check(args)
    if args.frames is not None:
        check_video_length(args.frames, "--frames")
    check_choices(args.trajectories, args.variants)
    check_long_chunks(args.long_chunks, "--long-chunks")
    gap_pairs(args.frames or default_num_frames(int(config.sample.chunk_frames)), args.reprojection_gap,
              "--reprojection-gap")
    if args.seed is not None:
        config.sample.seed = args.seed
    mesh = generation_mesh(config)
    model, head = load_model(config, source, depth_source, mesh)
    with new_output_dir(args.out) as staging:
        results = evaluate(config, model, staging, trajectories=args.trajectories, num_frames=args.frames,
                           seed=args.world_seed, variants=args.variants, depth_source=depth_source,
                           depth_head=head, progress=not args.quiet, save_videos=not args.no_videos,
                           mesh=mesh, long_chunks=args.long_chunks, reprojection_gap=args.reprojection_gap)
    print(format_table(results))
    print(f"wrote {args.out}/eval.json")
    return 0
