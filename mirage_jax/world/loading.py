"""What the ``generate`` and ``eval`` commands share: config + checkpoint loading, validated up front."""

from __future__ import annotations

import argparse
from pathlib import Path

from mirage_jax.config import accept_config_overrides


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--checkpoint``, ``--out`` and ``--config.a.b=value`` overrides."""
    parser.add_argument("--config", required=True, help="config file (configs/tiny.py) or name (tiny)")
    parser.add_argument("--checkpoint", required=True,
                        help="training workdir or checkpoint folder ('random' = randomly initialised model)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--depth-source", default=None, choices=("geometry", "head"),
                        help="write-back depth (default config.sample.depth_source)")
    parser.add_argument("--seed", type=int, default=None, help="noise seed (default config.sample.seed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    accept_config_overrides(parser)


def load_config_and_check(args):
    """The config (with overrides) and the depth source; a missing checkpoint is an error before any compute."""
    from mirage_jax.config import load_config  # noqa: PLC0415

    config = load_config(args.config, getattr(args, "overrides", []))
    if args.checkpoint != "random" and not Path(args.checkpoint).is_dir():
        raise ValueError(f"--checkpoint {args.checkpoint!r}: no such directory; pass a training workdir "
                         "(mirage-jax train --workdir DIR) or 'random' for an untrained model")
    depth_source = args.depth_source or config.sample.depth_source
    return config, depth_source


def load_model(config, args, depth_source: str):
    """``(model, depth_head)`` from ``--checkpoint`` (the head only when the depth source is 'head')."""
    from mirage_jax.models import build_model  # noqa: PLC0415
    from mirage_jax.train import checkpoint  # noqa: PLC0415

    if args.checkpoint == "random":
        if depth_source == "head":
            raise ValueError("--depth-source head needs a trained checkpoint with a depth head, not 'random'")
        return build_model(config, seed=int(config.seed)), None
    model = checkpoint.restore_model(config, args.checkpoint)
    head = checkpoint.restore_depth_head(config, args.checkpoint) if depth_source == "head" else None
    return model, head
