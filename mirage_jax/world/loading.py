"""What the ``generate`` and ``eval`` commands share: the model source and its config, checked up front.

``--checkpoint`` is any model source of ``mirage_jax.checkpoints`` (a training workdir, a ``convert dit``
folder, an export) or ``random``. The config is the source's own (``--config`` and overrides on top; the
model-defining fields stay the source's and every difference is printed as a note), so a run can be
generated from without repeating how it was configured.
"""

from __future__ import annotations

import argparse
import sys

from mirage_jax.config import accept_config_overrides

RANDOM = "random"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--checkpoint``, ``--step``, ``--depth-source``, ``--seed`` and ``--config.a.b=value``
    overrides: what every command that generates needs to load its model (``load_config_and_check``)."""
    parser.add_argument("--config", default=None,
                        help="config file (configs/tiny.py) or name (tiny) on top of the checkpoint's own config; "
                             "required with --checkpoint random")
    parser.add_argument("--checkpoint", required=True,
                        help="training workdir, `mirage-jax convert dit` folder or `mirage-jax export` folder "
                             "('random' = a randomly initialised model)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a training run (default: latest)")
    parser.add_argument("--depth-source", default=None, choices=("geometry", "head"),
                        help="write-back depth (default config.sample.depth_source)")
    parser.add_argument("--seed", type=int, default=None, help="noise seed (default config.sample.seed)")
    accept_config_overrides(parser)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The model arguments (``add_model_arguments``), ``--out`` and ``--quiet``: generate and eval."""
    add_model_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def load_config_and_check(args):
    """``(config, depth source, model source or None)``; every problem is a ``ValueError`` before any compute.

    Notes on what was kept from the checkpoint's config go to stderr.
    """
    from mirage_jax.config import load_config  # noqa: PLC0415

    overrides = getattr(args, "overrides", [])
    if args.checkpoint == RANDOM:
        if args.step is not None:
            raise ValueError("--step: a random model has no steps")
        if args.config is None:
            raise ValueError("--config: required with --checkpoint random (there is no checkpoint to read it from)")
        config, source = load_config(args.config, overrides), None
    else:
        from mirage_jax.checkpoints import open_source, resolve_config  # noqa: PLC0415

        source = open_source(args.checkpoint, args.step)
        config, notes = resolve_config(source, args.config, overrides)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    from mirage_jax.config_checks import validate_config  # noqa: PLC0415

    validate_config(config)
    depth_source = args.depth_source or config.sample.depth_source
    if depth_source == "head" and (source is None or not source.has_depth_head):
        raise ValueError("--depth-source head needs a trained checkpoint with a depth head "
                         "(train with --config.train.depth_head=true)")
    return config, depth_source, source


def generation_mesh(config):
    """The mesh of ``config.mesh`` when it splits one sample's work (``mesh.context`` > 1: the tokens,
    ``mesh.tensor`` > 1: the heads and MLP), else None: generation runs one video at a time, so data or FSDP
    axes alone would only add communication, and the model runs on one device."""
    import jax  # noqa: PLC0415

    from mirage_jax.sharding import mesh_for_config  # noqa: PLC0415

    if int(config.mesh.context) == 1 and int(config.mesh.tensor) == 1 or jax.process_count() > 1:
        return None
    return mesh_for_config(config)


def load_model(config, source, depth_source: str, mesh=None):
    """``(model, depth_head)`` from the model source (a random model for ``None``; the head only when the
    depth source is 'head'); the model's parameters on ``mesh`` when given."""
    from mirage_jax.checkpoints import load_depth_head  # noqa: PLC0415
    from mirage_jax.checkpoints import load_model as load_source_model  # noqa: PLC0415
    from mirage_jax.models import build_model  # noqa: PLC0415

    if source is None:
        return build_model(config, seed=int(config.seed), mesh=mesh), None
    head = load_depth_head(source, config) if depth_source == "head" else None
    return load_source_model(source, config, mesh), head
