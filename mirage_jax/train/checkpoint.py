"""Orbax checkpoints of a training run, and ``restore_model`` for inference.

A checkpoint (``WORKDIR/checkpoints/<step>/``) holds the items
  * ``model``: the full model state (``nnx.state(model)``: trainable and frozen parameters);
  * ``opt``: the optax state of the current stage's trainable subset;
  * ``train``: ``{"step", "rng"}``;
  * ``depth_head``: the ``LatentDepthHead`` state, when ``train.depth_head``;
  * ``data``: the Grain iterator state (one JSON file per process), when the iterator is checkpointable;
  * ``meta``: JSON with the resolved config, the stage index and name, and the step.
Orbax writes each save to a temporary directory and renames it when complete (atomic: a kill mid-save leaves
the previous checkpoint as the latest). Saves are asynchronous (``train.async_checkpointing``); at most
``train.keep_checkpoints`` are kept. Restoring reads every array directly into the shardings of the target
tree, so a checkpoint written on one mesh restores onto any other (or one device).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

CHECKPOINT_SUBDIR = "checkpoints"


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

    def __init__(self, directory: str | Path, *, keep: int, async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                               cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, *, model, opt, train: dict, meta: dict, data_iterator=None, depth_head=None) -> None:
        """Starts an (async) save of ``step``; returns once the arrays are copied off the devices."""
        items = {"model": ocp.args.StandardSave(model), "opt": ocp.args.StandardSave(opt),
                 "train": ocp.args.StandardSave(train), "meta": ocp.args.JsonSave(meta)}
        if depth_head is not None:
            items["depth_head"] = ocp.args.StandardSave(depth_head)
        if _checkpointable(data_iterator):
            items["data"] = _data_handler_args()[0](data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def meta(self, step: int) -> dict:
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, *, model=None, opt=None, train=None, data_iterator=None, depth_head=None) -> dict:
        """Restores the items whose abstract targets are given (``ShapeDtypeStruct`` trees with shardings).

        ``data_iterator`` is restored in place. Returns ``{item: tree}`` for the array items requested.
        """
        items = {name: ocp.args.StandardRestore(target)
                 for name, target in (("model", model), ("opt", opt), ("train", train), ("depth_head", depth_head))
                 if target is not None}
        if _checkpointable(data_iterator):
            items["data"] = _data_handler_args()[1](data_iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return {name: restored[name] for name in items if name != "data"}

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def checkpoint_directory(path: str | Path) -> Path:
    """The checkpoint folder of a workdir (``path/checkpoints``) or ``path`` itself if it holds steps."""
    path = Path(path)
    return path / CHECKPOINT_SUBDIR if (path / CHECKPOINT_SUBDIR).is_dir() else path


def config_from_meta(meta: dict) -> ml_collections.ConfigDict:
    """The training config stored in a checkpoint's ``meta`` item."""
    return ml_collections.ConfigDict(json.loads(meta["config"]))


def _restore_item(checkpoint_dir, step: int | None, item: str, graphdef, abstract, shardings):
    directory = checkpoint_directory(checkpoint_dir)
    if not directory.is_dir():
        raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r}: no such directory")
    checkpointer = Checkpointer(directory, keep=1_000_000, async_save=False)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise ValueError(f"checkpoint_dir={str(checkpoint_dir)!r}: holds no checkpoint")
        state = checkpointer.restore(step, **{item: abstract_like(abstract, shardings)})[item]
    finally:
        checkpointer.close()
    return nnx.merge(graphdef, state)


def _first_device_shardings(abstract):
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda _: device, abstract)


def restore_model(config, checkpoint_dir: str | Path, *, step: int | None = None,
                  mesh: jax.sharding.Mesh | None = None):
    """A ``WanDiT`` for ``config`` with the parameters of the latest (or ``step``) checkpoint.

    ``checkpoint_dir`` is a training workdir or its ``checkpoints`` folder. With ``mesh`` the parameters are
    placed by the config's logical-axis rules on it; otherwise on the first local device. Raises
    ``ValueError`` when there is no checkpoint.
    """
    from mirage_jax.models import build_model, state_shardings

    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build_model(config, seed=0)))
    shardings = (_first_device_shardings(abstract) if mesh is None
                 else state_shardings(abstract, mesh, config.mesh.rules))
    return _restore_item(checkpoint_dir, step, "model", graphdef, abstract, shardings)


def make_depth_head(config, seed: int = 0):
    """The ``LatentDepthHead`` trained alongside the model when ``config.train.depth_head`` (default sizes)."""
    from mirage_jax.world.depth import LatentDepthHead

    return LatentDepthHead(int(config.latent.channels), rngs=nnx.Rngs(seed))


def restore_depth_head(config, checkpoint_dir: str | Path, *, step: int | None = None):
    """The trained ``LatentDepthHead`` of a run with ``train.depth_head`` (on the first local device)."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: make_depth_head(config)))
    return _restore_item(checkpoint_dir, step, "depth_head", graphdef, abstract, _first_device_shardings(abstract))
