"""The Orbax layout of a training run: ``Checkpointer`` writes and reads its checkpoints.

A checkpoint (``WORKDIR/checkpoints/<step>/``) holds the items
  * ``model``: the full model state (``nnx.state(model)``: trainable and frozen parameters);
  * ``opt``: the optax state of the current stage's trainable subset;
  * ``train``: ``{"step", "rng"}``;
  * ``depth_head``: the ``LatentDepthHead`` state, when ``train.depth_head``;
  * ``data``: the Grain iterator state (one JSON file per process), when the iterator is checkpointable;
  * ``meta``: JSON with the resolved config, the stage index and name, the step and the ``init_checkpoint``
    the run started from (``mirage_jax.checkpoints.sources`` reads the config back).
Orbax writes each save to a temporary directory and renames it when complete (atomic: a kill mid-save leaves
the previous checkpoint as the latest). A checkpoint that exists but cannot be read (a truncated or deleted
file) raises ``DamagedCheckpoint``, one line naming its folder; ``move_aside`` puts it under
``WORKDIR/damaged_checkpoints/`` so a resumed run can continue from the step before it. Saves are
asynchronous (``train.async_checkpointing``); at most ``train.keep_checkpoints`` are kept. Restoring reads
every array directly into the shardings of the target tree, so a checkpoint written on one mesh restores onto
any other (or one device).
"""

from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp

CHECKPOINT_SUBDIR = "checkpoints"
DAMAGED_SUBDIR = "damaged_checkpoints"


class DamagedCheckpoint(ValueError):
    """A checkpoint step that is listed but cannot be read."""


def _root_cause(err: BaseException) -> str:
    """The first line of the innermost exception of ``err``'s chain (TensorStore's says which file is bad)."""
    while (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:400]


def abstract_like(tree, shardings):
    """``jax.ShapeDtypeStruct`` pytree of ``tree`` placed with ``shardings`` (restore targets)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _data_handler_args():
    import grain

    return grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore


def _checkpointable(iterator) -> bool:
    return iterator is not None and hasattr(iterator, "get_state") and hasattr(iterator, "set_state")


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` with this project's items."""

    def __init__(self, directory: str | Path, *, keep: int | None, async_save: bool = True, writer: bool = True):
        """``writer=False`` opens an existing run for reading only: nothing is created, cleaned or deleted."""
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep if writer else None,
                                               enable_async_checkpointing=async_save and writer,
                                               cleanup_tmp_directories=writer, create=writer)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    @classmethod
    def reader(cls, directory: str | Path) -> Checkpointer:
        """A ``Checkpointer`` that only reads the checkpoints of ``directory``."""
        return cls(directory, keep=None, writer=False)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, *, model, opt, train: dict, meta: dict, data_iterator=None, depth_head=None) -> None:
        """Starts an (async) save of ``step``; returns once the arrays are copied off the devices."""
        items = {"model": ocp.args.StandardSave(model), "opt": ocp.args.StandardSave(opt),
                 "train": ocp.args.StandardSave(train), "meta": ocp.args.JsonSave(meta)}
        if depth_head is not None:
            items["depth_head"] = ocp.args.StandardSave(depth_head)
        if _checkpointable(data_iterator):
            items["data"] = _data_handler_args()[0](data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def _read(self, step: int, items: dict) -> dict:
        try:
            return self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as err:  # any failure to read a listed step: Orbax, TensorStore, JSON, missing files
            raise DamagedCheckpoint(f"checkpoint {self.directory / str(step)} cannot be read "
                                    f"({_root_cause(err)})") from err

    def meta(self, step: int) -> dict:
        meta = self._read(step, {"meta": ocp.args.JsonRestore()})["meta"]
        if not isinstance(meta, dict) or "config" not in meta:
            raise DamagedCheckpoint(f"checkpoint {self.directory / str(step)} cannot be read (its meta holds no "
                                    "config)")
        return meta

    def move_aside(self, step: int) -> Path:
        """Moves the folder of ``step`` to ``WORKDIR/damaged_checkpoints/<step>-<n>`` (kept for inspection) and
        forgets it, so a later save of the same step starts clean. Returns the new folder."""
        aside = self.directory.parent / DAMAGED_SUBDIR
        aside.mkdir(exist_ok=True)
        n = sum(1 for p in aside.iterdir() if p.name.startswith(f"{step}-"))
        target = aside / f"{step}-{n}"
        (self.directory / str(step)).rename(target)
        self.manager.reload()
        return target

    def restore(self, step: int, *, model=None, opt=None, train=None, data_iterator=None, depth_head=None) -> dict:
        """Restores the items whose abstract targets are given (``ShapeDtypeStruct`` trees with shardings).

        ``data_iterator`` is restored in place. Returns ``{item: tree}`` for the array items requested.
        """
        items = {name: ocp.args.StandardRestore(target)
                 for name, target in (("model", model), ("opt", opt), ("train", train), ("depth_head", depth_head))
                 if target is not None}
        if _checkpointable(data_iterator):
            items["data"] = _data_handler_args()[1](data_iterator)
        restored = self._read(step, items)
        return {name: restored[name] for name in items if name != "data"}

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
