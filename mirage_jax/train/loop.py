"""``train(config, workdir) -> summary``: the whole training run (stages, logging, eval, checkpoints, resume).

Stages (``train.stages``, e.g. ``("vace", "lora")``) run in sequence; stage ``i`` runs ``train.stage_steps[i]``
optimizer steps (or ``train.num_steps`` each when ``stage_steps`` is empty) with a fresh optimizer over the
parameters of ``mirage_jax.models.lora.trainable_filter(stage)``; the global step counts across stages. Every
``train.checkpoint_every`` steps, at the end, and on SIGTERM, the run saves a checkpoint (async) to
``workdir/checkpoints``; running again with the same ``workdir`` resumes from the latest one (model,
optimizer when still in the same stage, step, RNG, data-iterator position), so ``k`` steps + restart + ``m``
steps equal ``k + m`` steps straight. A new run with ``model.init_checkpoint`` starts from that model source
(``mirage_jax.checkpoints``: a run, a converted DiT, an export) instead of random weights, for the parameter
groups the source holds. Process 0 writes ``workdir/metrics.jsonl``, TensorBoard events, ``workdir/config.json``
and ``workdir/init_checkpoint.json`` (where the run started).
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from mirage_jax.checkpoints.run import CHECKPOINT_SUBDIR, Checkpointer, DamagedCheckpoint, abstract_like
from mirage_jax.config import RESUME_ADJUSTABLE, config_from_json, describe_differences, differences, flat_fields
from mirage_jax.data.training_example import MODEL_INPUTS, ExampleSizes, check_batch
from mirage_jax.models.depth_head import make_depth_head
from mirage_jax.sharding import mesh_for_config
from mirage_jax.train.loss import NUM_BUCKETS, LossSettings
from mirage_jax.train.metrics import (
    MetricsWriter,
    dense_parameter_count,
    peak_flops_per_device,
    tokens_per_example,
    train_flops_per_example,
)
from mirage_jax.train.optimizer import learning_rate_schedule, make_optimizer
from mirage_jax.train.step import batch_sharding, make_eval_step, make_train_step, new_train_state
from mirage_jax.train.validate import check_training_start, is_resuming, stage_plan
from mirage_jax.train.workdir_lock import WorkdirLock


class Preemption:
    """SIGTERM → save and stop. The handler (main thread only; restored on exit) sets a local flag; ``poll``
    turns it into a decision every process agrees on: immediately in a single-process run, at log steps (one
    small all-gather) in a multi-process run, so all processes take part in the final save together."""

    def __init__(self, sync_every: int = 1):
        self.requested = False  # the agreed decision
        self._signalled = False
        self._previous = None
        self._sync_every = sync_every

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self._signalled = True

    def poll(self, step: int) -> bool:
        if jax.process_count() == 1:
            self.requested = self._signalled
        elif step % self._sync_every == 0:
            from jax.experimental import multihost_utils

            self.requested = bool(np.any(multihost_utils.process_allgather(np.int32(self._signalled))))
        return self.requested

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _check_resumable(meta: dict, config, workdir: Path) -> None:
    """A run resumes only with the config it started with, but for the fields ``RESUME_ADJUSTABLE`` names (its
    length, logging, saving, mesh, paths): anything else would silently continue another experiment."""
    stored = config_from_json(meta["config"])[0]
    fields = [key for key in flat_fields(config) if key not in RESUME_ADJUSTABLE]
    diff = differences(stored, config, fields)
    if diff:
        raise ValueError(f"--workdir {str(workdir)!r} holds a run made with another config: "
                         f"{describe_differences(diff, 'run', 'config')}; resume with the run's config "
                         f"({workdir / 'config.json'}) or use a new --workdir")


class _Run:
    """Everything one training run shares across its stages (built once by ``train``)."""

    def __init__(self, config, workdir: Path, mesh: jax.sharding.Mesh):
        from mirage_jax.data.pipeline import empty_context, make_train_iterator, score_latent, training_encoders
        from mirage_jax.models import build_model

        self.config, self.workdir, self.mesh, self.rules = config, workdir, mesh, config.mesh.rules
        self.is_chief = jax.process_index() == 0
        self.settings = LossSettings.from_config(config)
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.model = build_model(config, seed=config.seed, mesh=mesh)
        self.head = make_depth_head(config, config.seed) if config.train.depth_head else None
        self.init_record = None if is_resuming(workdir) else self.start_from_init_checkpoint()
        latent_space, text_encoder = training_encoders(config)  # none for a latent dataset
        self.empty_context = jax.device_put(jnp.asarray(empty_context(config, text_encoder)), self.replicated)
        self.make_iterator = lambda: make_train_iterator(  # noqa: E731
            config, latent_space, text_encoder, process_index=jax.process_index(), process_count=jax.process_count())
        self.iterator = self.make_iterator()
        self.writer = MetricsWriter(workdir, enabled=self.is_chief)

        # a separate iterator from the same start: its first batches are the fixed evaluation batches
        eval_iterator = self.make_iterator()
        example = next(eval_iterator)
        keys = MODEL_INPUTS + (("target_depth",) if self.head is not None else ())
        check_batch(example, ExampleSizes.from_config(config), config.train.batch_size // jax.process_count(),
                    required=keys)
        self.batch_shardings = {k: batch_sharding(mesh, np.ndim(example[k]), self.rules) for k in keys}
        self.eval_batches = []
        if config.train.eval_every > 0 and config.train.eval_batches > 0:
            self.eval_batches = [self.global_batch(example)]
            self.eval_batches += [self.global_batch(next(eval_iterator)) for _ in range(config.train.eval_batches - 1)]
        if hasattr(eval_iterator, "close"):
            eval_iterator.close()
        r = min(example["reference_latents"].shape[1], self.settings.max_references)
        p = min(example["preceding_latents"].shape[1], self.settings.max_preceding)
        score = None
        if config.model.score_source == "constant":
            score = score_latent(config, latent_space, example["target_latents"].shape[1] + p)
        self.score_latent = None if score is None else jax.device_put(score, self.replicated)
        self.flops_per_step = config.train.batch_size * train_flops_per_example(
            config, dense_parameter_count(nnx.state(self.model, nnx.Param)), tokens_per_example(config, r, p))
        self.peak_flops = peak_flops_per_device(config)
        self.step, self.rng = 0, jax.device_put(jax.random.PRNGKey(config.seed), self.replicated)
        self.resumed_from, self.resume_stage = None, None
        self.summary = {"step": 0, "loss": None, "eval_loss": None, "steps_per_second": None,
                        "examples_per_second": None, "data_wait_fraction": None, "resumed_from": None,
                        "preempted": False, "checkpoint_dir": str(workdir / CHECKPOINT_SUBDIR),
                        "workdir": str(workdir), "init_checkpoint": self.init_record}
        # last: once Orbax's threads exist, every exit path must close them (``close``)
        self.checkpointer = Checkpointer(workdir / CHECKPOINT_SUBDIR, keep=config.train.keep_checkpoints,
                                         async_save=config.train.async_checkpointing)

    def start_from_init_checkpoint(self) -> dict | None:
        """Loads ``model.init_checkpoint`` into the fresh model (the groups it holds; the rest stay fresh) and
        records where the run started (``WORKDIR/init_checkpoint.json``, and every checkpoint's meta)."""
        from mirage_jax.checkpoints import init_from_source, open_source

        if not self.config.model.init_checkpoint:
            return None
        source = open_source(self.config.model.init_checkpoint, field="config.model.init_checkpoint")
        record = init_from_source(self.model, source, self.config, self.mesh)
        if self.is_chief:
            (self.workdir / "init_checkpoint.json").write_text(json.dumps(record, indent=2))
        return record

    def global_batch(self, local: dict) -> dict:
        """Host-local numpy batch → global arrays sharded along the batch axis (the keys the step uses)."""
        from mirage_jax.data.pipeline import global_batch

        return global_batch({k: local[k] for k in self.batch_shardings}, self.mesh, self.rules)

    def resume(self) -> None:
        """Restores model, step, RNG and data position from the newest checkpoint that can be read. A newer one
        that cannot (``DamagedCheckpoint``) is named, moved aside and skipped; when none can, an error."""
        steps = self.checkpointer.all_steps()
        damaged = []
        for step in reversed(steps):
            try:
                self.restore(step)
                break
            except DamagedCheckpoint as err:
                damaged.append((step, err))
        else:
            if steps:
                raise ValueError(f"--workdir {str(self.workdir)!r}: no checkpoint can be read: "
                                 + "; ".join(str(err) for _, err in damaged)
                                 + "; move the checkpoints folder away to start anew")
            return
        self.set_damaged_aside([step for step, _ in damaged], [str(err) for _, err in damaged])
        self.writer.drop_after(self.step)  # rows logged after the checkpoint are logged again

    def set_damaged_aside(self, steps: list[int], reasons: list[str]) -> None:
        if not steps:
            return
        if self.is_chief:
            for step, reason in zip(steps, reasons):
                target = self.checkpointer.move_aside(step)
                print(f"warning: {reason}; moved to {target}; resuming from step {self.step}", file=sys.stderr)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("damaged checkpoints moved aside")
            self.checkpointer.manager.reload()

    def restore(self, step: int) -> None:
        """Restores the checkpoint of ``step`` (after checking it belongs to this config)."""
        from mirage_jax.models import state_shardings

        meta = self.checkpointer.meta(step)
        _check_resumable(meta, self.config, self.workdir)
        _, model_state = nnx.split(self.model)
        scalar = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated)  # noqa: E731
        head = None if self.head is None else jax.tree.map(scalar, nnx.state(self.head))
        restored = self.checkpointer.restore(
            step, data_iterator=self.iterator, depth_head=head,
            model=abstract_like(model_state, state_shardings(model_state, self.mesh, self.rules)),
            train={"step": scalar(jnp.zeros((), jnp.int32)), "rng": scalar(self.rng)})
        self.init_record = self.summary["init_checkpoint"] = meta.get("init_checkpoint")
        nnx.update(self.model, restored["model"])
        if self.head is not None:
            nnx.update(self.head, restored["depth_head"])
        self.step, self.rng = int(restored["train"]["step"]), restored["train"]["rng"]
        self.resumed_from, self.resume_stage = step, int(meta["stage_index"])
        self.summary["resumed_from"] = step

    def evaluate(self, eval_step, state, step: int) -> None:
        """Mean loss over the fixed evaluation batches at each ``train.eval_sigmas`` (fixed noise seed)."""
        losses = np.mean([np.asarray(eval_step(state, b, self.empty_context, self.score_latent))
                          for b in self.eval_batches], axis=0)
        values = {"eval_loss": float(losses.mean())}
        values.update({f"eval_loss_sigma_{s:g}": float(v) for s, v in zip(self.config.train.eval_sigmas, losses)})
        self.writer.write(step, values)
        self.summary["eval_loss"] = values["eval_loss"]

    def save(self, state, stage: str, stage_index: int) -> None:
        self.checkpointer.save(
            self.step, model=nnx.merge_state(state["trainable"]["dit"], state["frozen"]), opt=state["opt"],
            depth_head=state["trainable"].get("head"),
            train={"step": state["step"], "rng": state["rng"]}, data_iterator=self.iterator,
            meta={"config": self.config.to_json_best_effort(), "stage": stage, "stage_index": stage_index,
                  "step": self.step, "init_checkpoint": self.init_record})

    def stage_state(self, stage: str, stage_index: int, num_steps: int, end: int):
        """(graphdef, tx, schedule, sharded train state, its shardings) for a stage, optimizer fresh or restored."""
        from mirage_jax.models.lora import trainable_filter

        tx = make_optimizer(self.config.train, num_steps)
        schedule = learning_rate_schedule(self.config.train, num_steps)
        restore_opt = None
        if self.resume_stage == stage_index and self.step > end - num_steps:
            restore_opt = lambda target: self.checkpointer.restore(self.resumed_from, opt=target)["opt"]  # noqa: E731
        graphdef, state, shardings = new_train_state(self.model, trainable_filter(stage), tx, self.mesh, self.rules,
                                                     self.rng, step=self.step, head=self.head,
                                                     restore_opt=restore_opt)
        return graphdef, tx, schedule, state, shardings

    def run_stage(self, stage: str, stage_index: int, num_steps: int, end: int, preemption, progress) -> None:
        config = self.config
        graphdef, tx, schedule, state, shardings = self.stage_state(stage, stage_index, num_steps, end)
        common = dict(state_sharding=shardings, batch_shardings=self.batch_shardings, mesh=self.mesh)
        head_graphdef = None if self.head is None else nnx.graphdef(self.head)
        train_step = make_train_step(graphdef, tx, self.settings, grad_accum=config.train.grad_accum,
                                     head_graphdef=head_graphdef, depth_weight=config.train.depth_loss_weight,
                                     **common)
        eval_step = make_eval_step(graphdef, self.settings, tuple(config.train.eval_sigmas), seed=config.seed + 1,
                                   **common)
        if self.eval_batches and self.step == 0:
            self.evaluate(eval_step, state, 0)
        pending, window_start, data_time = [], time.perf_counter(), 0.0
        while self.step < end and not preemption.requested:
            t0 = time.perf_counter()
            batch = self.global_batch(next(self.iterator))
            data_time += time.perf_counter() - t0
            state, metrics = train_step(state, batch, self.empty_context, self.score_latent)
            self.step += 1
            pending.append(metrics)
            if progress is not None:
                progress.update(1)
            stop = preemption.poll(self.step)
            if self.step % config.train.log_every == 0 or self.step == end or stop:
                fetched = jax.device_get(pending)  # waits for the window's last step: its time counts
                elapsed = time.perf_counter() - window_start
                values = _log_values(fetched, elapsed, data_time, config, self.flops_per_step, self.peak_flops,
                                     self.mesh.size, stage_index)
                values["lr"] = float(schedule(self.step - (end - num_steps) - 1))
                self.writer.write(self.step, values)
                self.summary.update({k: values[k] for k in ("loss", "steps_per_second", "examples_per_second",
                                                             "data_wait_fraction")})
                if progress is not None:
                    progress.set_postfix(loss=f"{values['loss']:.4f}", stage=stage)
                pending, window_start, data_time = [], time.perf_counter(), 0.0
            if self.eval_batches and (self.step % config.train.eval_every == 0 or self.step == end):
                self.evaluate(eval_step, state, self.step)
            if self.step % config.train.checkpoint_every == 0 or self.step == end or stop:
                self.save(state, stage, stage_index)
        # the step donates its input state: carry the live arrays (model, head, rng) into the next stage
        nnx.update(self.model, state["trainable"]["dit"], state["frozen"])
        self.rng = state["rng"]
        if self.head is not None:
            nnx.update(self.head, state["trainable"]["head"])

    def close(self) -> None:
        self.checkpointer.close()
        self.writer.close()
        if hasattr(self.iterator, "close"):
            self.iterator.close()


def train(config, workdir: str | Path, *, mesh: jax.sharding.Mesh | None = None, progress: bool = True) -> dict:
    """Trains per ``config`` in ``workdir`` (resuming if it holds checkpoints); returns a summary dict.

    Summary keys: ``step``, ``loss`` (last logged), ``eval_loss`` (last evaluation, or None),
    ``steps_per_second``, ``examples_per_second``, ``data_wait_fraction`` (share of wall time spent fetching
    batches), ``resumed_from`` (step or None), ``preempted`` (stopped by SIGTERM after saving),
    ``checkpoint_dir``, ``workdir``, ``init_checkpoint`` (where the weights came from, or None). ``mesh``
    defaults to ``mesh_for_config(config)``. ``progress``: a bar on a terminal, a line per logged step on a
    pipe or file (``_training_progress``); False shows neither.
    """
    check_training_start(config, device_count=None if mesh is None else mesh.size, workdir=workdir)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    plan = stage_plan(config.train)
    ends = np.cumsum([n for _, n in plan]).tolist()
    with WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
        return _train_locked(config, workdir, plan, ends, mesh_for_config(config) if mesh is None else mesh,
                             progress)


def _train_locked(config, workdir: Path, plan: list, ends: list, mesh: jax.sharding.Mesh,
                  show_progress: bool) -> dict:
    run = _Run(config, workdir, mesh)
    progress = None
    try:
        run.resume()
        if run.resumed_from is not None:  # a run with nothing left to do still reports its last losses
            run.summary.update(_last_logged_losses(workdir, run.step))
        if run.is_chief:
            (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
            progress = _training_progress(ends[-1], run.step) if show_progress else None
        with Preemption(sync_every=config.train.log_every) as preemption:
            for stage_index, ((stage, num_steps), end) in enumerate(zip(plan, ends)):
                if run.step < end and not preemption.requested:
                    run.run_stage(stage, stage_index, num_steps, end, preemption, progress)
            run.summary["preempted"] = preemption.requested
    finally:
        run.close()
        if progress is not None:
            progress.close()
    run.summary["step"] = run.step
    return run.summary


def _log_values(fetched: list[dict], elapsed: float, data_time: float, config, flops: float, peak, devices: int,
                stage_index: int) -> dict:
    """Window averages of the step metrics plus throughput and MFU (None when the device peak is unknown)."""
    n = len(fetched)
    steps_per_second = n / max(elapsed, 1e-9)
    values = {"loss": float(np.mean([m["loss"] for m in fetched])),
              **({"depth_loss": float(np.mean([m["depth_loss"] for m in fetched]))} if "depth_loss" in fetched[0]
                 else {}),
              "grad_norm": float(np.mean([m["grad_norm"] for m in fetched])),
              "steps_per_second": steps_per_second,
              "examples_per_second": steps_per_second * config.train.batch_size,
              "data_wait_fraction": data_time / max(elapsed, 1e-9), "stage_index": stage_index}
    sums = np.sum([m["bucket_sum"] for m in fetched], axis=0)
    counts = np.sum([m["bucket_count"] for m in fetched], axis=0)
    for k in range(NUM_BUCKETS):
        if counts[k] > 0:
            values[f"loss_sigma_{k / NUM_BUCKETS:g}_{(k + 1) / NUM_BUCKETS:g}"] = float(sums[k] / counts[k])
    if peak is not None:
        values["mfu"] = flops * steps_per_second / (devices * peak)
    return values


def _last_logged_losses(workdir: Path, step: int) -> dict:
    """``loss`` and ``eval_loss`` as last logged up to ``step`` in ``workdir/metrics.jsonl`` (those present)."""
    from mirage_jax.train.metrics import read_metrics

    rows = [row for row in read_metrics(workdir) if row["step"] <= step]
    return {key: row[key] for row in rows for key in ("loss", "eval_loss") if row.get(key) is not None}


def _training_progress(total: int, step: int):
    """The training bar on a terminal; on a pipe or file (a SLURM log) one line per logged step instead, as a
    redrawn bar would write every redraw into it."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=step, desc="train", dynamic_ncols=True)
    return _ProgressLines(total, step)


class _ProgressLines:
    """The part of tqdm's interface the loop uses, writing ``train step S/T: loss=... stage=...`` to stderr at
    every ``set_postfix`` (each logged step) and nothing in between."""

    def __init__(self, total: int, step: int):
        self.total, self.step = total, step

    def update(self, n: int = 1) -> None:
        self.step += n

    def set_postfix(self, **values) -> None:
        fields = " ".join(f"{name}={value}" for name, value in values.items())
        print(f"train step {self.step}/{self.total}: {fields}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass
