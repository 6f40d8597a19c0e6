"""``validate_config(config)``: value-range checks of everything training reads, before anything is built.

``mirage_jax.config.load_config`` already rejects unknown fields and wrongly typed values; this adds the ranges
and the cross-field rules (stages known, per-stage steps matching, batch divisible by the data-parallel
devices and the gradient-accumulation count, ...). Every failure is a ``ValueError`` naming the field.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from mirage_jax.checkpoints.run import CHECKPOINT_SUBDIR
from mirage_jax.models.lora import STAGES
from mirage_jax.models.vace import SCORE_SOURCES


def _check(ok: bool, field: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"config.{field}={value!r}: expected {expected}")


def stage_plan(train_config) -> list[tuple[str, int]]:
    """``[(stage, optimizer steps), ...]`` in run order: ``train.stage_steps`` if given, else ``num_steps`` each."""
    stages = (train_config.stages,) if isinstance(train_config.stages, str) else tuple(train_config.stages)
    steps = tuple(train_config.stage_steps) or (int(train_config.num_steps),) * len(stages)
    return list(zip(stages, (int(s) for s in steps)))


def mesh_sizes(config, device_count: int, process_count: int = 1) -> dict[str, int]:
    """The resolved ``{data, fsdp, tensor}`` sizes of ``config.mesh`` for ``device_count`` devices.

    A mesh without a -1 axis may use fewer devices than there are: a single process uses the first ones (e.g.
    the tiny config's one-device mesh under 8 simulated devices); a multi-process run multiplies the ``data``
    axis to cover every device (pure data parallelism across processes).
    """
    sizes = {"data": config.mesh.data, "fsdp": config.mesh.fsdp, "tensor": config.mesh.tensor}
    for name, value in sizes.items():
        _check(value == -1 or value >= 1, f"mesh.{name}", value, "a size >= 1 or -1 (the remaining devices)")
    _check(list(sizes.values()).count(-1) <= 1, "mesh", dict(sizes), "at most one axis of size -1")
    known = int(np.prod([v for v in sizes.values() if v != -1]))
    for name, value in sizes.items():
        if value == -1:
            _check(device_count % known == 0, f"mesh.{name}", value, f"{known} to divide {device_count} devices")
            sizes[name] = device_count // known
    total = int(np.prod(list(sizes.values())))
    if process_count > 1 and total < device_count:  # every process must hold devices: replicate over `data`
        _check(device_count % total == 0, "mesh", dict(sizes), f"sizes dividing the device count {device_count}")
        sizes["data"] *= device_count // total
    _check(total <= device_count, "mesh", dict(sizes), f"at most {device_count} devices in all")
    return sizes


def mesh_for_config(config) -> jax.sharding.Mesh:
    """``config.mesh`` over the first ``data·fsdp·tensor`` devices (all of them when an axis is -1)."""
    from mirage_jax.sharding import make_mesh

    sizes = mesh_sizes(config, jax.device_count(), jax.process_count())
    return make_mesh(**sizes, devices=jax.devices()[: int(np.prod(list(sizes.values())))])


def validate_config(config, device_count: int | None = None, process_count: int | None = None,
                    workdir: str | Path | None = None) -> None:
    """Raises ``ValueError`` for any out-of-range or inconsistent training field (cheap; compiles nothing).

    ``model.init_checkpoint`` is opened and checked against the config unless ``workdir`` already holds
    checkpoints (a resumed run never reads it again).
    """
    t = config.train
    stages = (t.stages,) if isinstance(t.stages, str) else tuple(t.stages)
    _check(len(stages) >= 1, "train.stages", t.stages, f"a non-empty list of {STAGES}")
    for stage in stages:
        _check(stage in STAGES, "train.stages", t.stages, f"stages from {STAGES}")
    if "vace" in stages:
        _check(len(config.model.vace_layers) > 0, "model.vace_layers", config.model.vace_layers,
               "non-empty when a 'vace' stage is trained")
    if "lora" in stages:
        _check(config.model.lora_rank > 0, "model.lora_rank", config.model.lora_rank,
               "> 0 when a 'lora' stage is trained")
    checkpoints = Path(workdir or ".") / CHECKPOINT_SUBDIR
    resuming = workdir is not None and checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
    if config.model.init_checkpoint and not resuming:
        from mirage_jax.checkpoints.sources import check_compatible, model_groups, open_source

        source = open_source(config.model.init_checkpoint, field="config.model.init_checkpoint")
        check_compatible(source, config, [g for g in source.groups if g in model_groups(config)])
    _check(t.num_steps >= 1, "train.num_steps", t.num_steps, ">= 1")
    _check(len(t.stage_steps) in (0, len(stages)), "train.stage_steps", t.stage_steps,
           f"() or one step count per stage ({len(stages)})")
    for n in t.stage_steps:
        _check(int(n) >= 1, "train.stage_steps", t.stage_steps, "step counts >= 1")
    _check(t.lr > 0, "train.lr", t.lr, "> 0")
    _check(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, ">= 0")
    _check(t.schedule in ("constant", "cosine"), "train.schedule", t.schedule, "'constant' or 'cosine'")
    _check(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, ">= 0")
    _check(0 <= t.b1 < 1 and 0 <= t.b2 < 1, "train.b1/b2", (t.b1, t.b2), "values in [0, 1)")
    _check(t.clip_norm >= 0, "train.clip_norm", t.clip_norm, ">= 0 (0 = no clipping)")
    _check(t.shift > 0, "train.shift", t.shift, "> 0")
    _check(0 <= config.text.drop_prob <= 1, "text.drop_prob", config.text.drop_prob, "a probability in [0, 1]")
    _check(t.max_references >= 0, "train.max_references", t.max_references, ">= 0")
    _check(t.max_preceding >= 0, "train.max_preceding", t.max_preceding, ">= 0")
    _check(t.log_every >= 1, "train.log_every", t.log_every, ">= 1")
    _check(t.eval_every >= 0, "train.eval_every", t.eval_every, ">= 0 (0 = no evaluation)")
    _check(t.checkpoint_every >= 1, "train.checkpoint_every", t.checkpoint_every, ">= 1")
    _check(t.keep_checkpoints >= 1, "train.keep_checkpoints", t.keep_checkpoints, ">= 1")
    _check(t.eval_batches >= 0, "train.eval_batches", t.eval_batches, ">= 0")
    _check(all(0 < s <= 1 for s in t.eval_sigmas), "train.eval_sigmas", t.eval_sigmas, "values in (0, 1]")
    _check(t.depth_loss_weight >= 0, "train.depth_loss_weight", t.depth_loss_weight, ">= 0")
    _check(t.peak_tflops >= 0, "train.peak_tflops", t.peak_tflops, ">= 0 (0 = look up by device)")
    _check(config.model.score_source in SCORE_SOURCES, "model.score_source", config.model.score_source,
           f"one of {SCORE_SOURCES}")
    _check(t.grad_accum >= 1, "train.grad_accum", t.grad_accum, ">= 1")
    _check(t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1")
    processes = jax.process_count() if process_count is None else process_count
    sizes = mesh_sizes(config, jax.device_count() if device_count is None else device_count, processes)
    data_parallel = sizes["data"] * sizes["fsdp"]
    micro = t.batch_size // t.grad_accum
    _check(t.batch_size % t.grad_accum == 0 and micro % data_parallel == 0, "train.batch_size", t.batch_size,
           f"a multiple of grad_accum ({t.grad_accum}) × data-parallel devices (data×fsdp = {data_parallel})")
    _check(t.batch_size % processes == 0, "train.batch_size", t.batch_size,
           f"a multiple of the process count {processes}")
