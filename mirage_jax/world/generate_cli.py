"""``mirage-jax generate --checkpoint SOURCE [--config CONFIG] (--geometry geometry.npz | --procedural SEED)
--frames N --out DIR [--cache latent|none|rgb] [--depth-source geometry|head]``.

``SOURCE`` is a training workdir (``--step`` to pick a checkpoint), a ``convert dit`` folder or an export; its
own config is used, with ``--config`` and ``--config.a.b=value`` on top (``mirage_jax.world.loading``).

Generates a video along the camera path of an official ``geometry.npz`` (or a procedural world's path) from
its first frame, and writes ``generated.mp4``, ``chunk_XXX.mp4``, ``metadata.json`` (and ``memory.npz`` with
``--save-memory``) under ``--out``, a new folder that appears whole or not at all (an existing non-empty
folder is refused before anything runs). Every input problem is reported before anything is built or compiled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mirage_jax.world.loading import add_common_arguments, generation_mesh, load_config_and_check, load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--geometry", help="geometry.npz (frames, depths, intrinsics, poses_c2w[, masks])")
    source.add_argument("--procedural", type=int, help="seed of a procedural world (its path has ground truth)")
    parser.add_argument("--trajectory", default="revisit", help="procedural camera path (revisit, loop, orbit, ...)")
    parser.add_argument("--frames", type=int, required=True, help="video length, 4N+1 (33, 65, 97, ...)")
    parser.add_argument("--start", type=int, default=0, help="first pose index in the geometry")
    parser.add_argument("--cache", default=None, choices=("latent", "none", "rgb"),
                        help="scene cache (default config.sample.cache)")
    parser.add_argument("--prompt", default=None, help="text prompt (default: the geometry's caption)")
    parser.add_argument("--save-memory", action="store_true", help="also write the final cache as memory.npz")


def run(args) -> int:
    from mirage_jax.output_dirs import check_new_output, new_output_dir  # noqa: PLC0415
    from mirage_jax.video_shapes import check_video_length  # noqa: PLC0415
    from mirage_jax.world.generator import check_inputs, rollout  # noqa: PLC0415
    from mirage_jax.world.outputs import save_rollout  # noqa: PLC0415

    check_new_output(args.out, "--out")  # before the rollout, not after it
    config, depth_source, source = load_config_and_check(args)
    check_video_length(args.frames, "--frames")
    cache = args.cache or config.sample.cache
    if args.geometry:
        from mirage_jax.data.npz import load_geometry_npz  # noqa: PLC0415

        clip = load_geometry_npz(args.geometry)
    else:
        from mirage_jax.data.synthetic import render_clip  # noqa: PLC0415

        clip = render_clip(args.procedural, args.start + args.frames, int(config.data.height),
                           int(config.data.width), args.trajectory)
    check_inputs(config, clip, args.frames, start=args.start, cache=cache,
                 depth_source="geometry" if depth_source == "head" else depth_source)
    mesh = generation_mesh(config)
    model, head = load_model(config, source, depth_source, mesh)
    result = rollout(config, model, clip, args.frames, cache=cache, depth_source=depth_source, depth_head=head,
                     prompt=args.prompt, seed=args.seed, start=args.start, progress=not args.quiet,
                     mesh=mesh)
    with new_output_dir(args.out) as staging:
        paths = save_rollout(result, staging, config, fps=int(config.sample.fps), save_memory=args.save_memory)
    spf = [round(c["seconds_per_frame"], 4) for c in result.chunks]
    print(f"wrote {Path(args.out) / paths['video']} ({len(result.video)} frames, {len(result.chunks)} chunks, "
          f"s/frame per chunk {spf}, cache {result.chunks[-1]['cache_bytes'] / 2**20:.3f} MiB)")
    return 0
