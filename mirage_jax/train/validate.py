"""What only a training run checks before it starts: the stage plan and the ``model.init_checkpoint`` it loads.

Every field's range is checked by ``mirage_jax.config_checks.validate_config`` (``training=True`` adds the
training fields and the batch against the mesh); ``check_training_start`` does that and opens the
initialisation source unless the workdir already holds checkpoints (a resumed run never reads it again).
"""

from __future__ import annotations

from pathlib import Path

from mirage_jax.checkpoints.run import CHECKPOINT_SUBDIR
from mirage_jax.config_checks import validate_config


def stage_plan(train_config) -> list[tuple[str, int]]:
    """``[(stage, optimizer steps), ...]`` in run order: ``train.stage_steps`` if given, else ``num_steps`` each."""
    stages = (train_config.stages,) if isinstance(train_config.stages, str) else tuple(train_config.stages)
    steps = tuple(train_config.stage_steps) or (int(train_config.num_steps),) * len(stages)
    return list(zip(stages, (int(s) for s in steps)))


def is_resuming(workdir: str | Path | None) -> bool:
    """Whether ``workdir`` holds a checkpoint to resume from."""
    checkpoints = Path(workdir or ".") / CHECKPOINT_SUBDIR
    return workdir is not None and checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())


def check_training_start(config, device_count: int | None = None, process_count: int | None = None,
                         workdir: str | Path | None = None) -> None:
    """Raises ``ValueError`` for any bad field, a ``workdir`` that is a file, and a ``model.init_checkpoint``
    that is not a model source fitting the config (unless resuming)."""
    if workdir is not None and Path(workdir).exists() and not Path(workdir).is_dir():
        raise ValueError(f"--workdir {str(workdir)!r} is a file, not a folder")
    validate_config(config, training=True, device_count=device_count, process_count=process_count)
    if config.model.init_checkpoint and not is_resuming(workdir):
        from mirage_jax.checkpoints.sources import check_compatible, model_groups, open_source

        source = open_source(config.model.init_checkpoint, field="config.model.init_checkpoint")
        check_compatible(source, config, [g for g in source.groups if g in model_groups(config)])
