"""Every place a model can be loaded from, and the one way to load it.

A *model source* (``open_source(path, step=None)``) is one of:

* ``run``: a training workdir of ``mirage-jax train`` (or its ``checkpoints`` folder); its latest checkpoint,
  or ``step``;
* ``converted``: a ``mirage-jax convert dit --out DIR`` folder (``state/``, ``config.json``, ``converted.json``);
* ``export``: a ``mirage-jax export --out DIR`` folder (``dit.safetensors`` with the LoRA merged,
  ``vace.safetensors``, ``lora.safetensors``, ``config.json``, ``export.json``).

Every source carries the config its weights were made with (``ModelSource.config``), so whatever reads one
starts from it: ``resolve_config(source, config_path, overrides)`` puts a config file and overrides on top but
keeps the model-defining fields (``mirage_jax.config.MODEL_FIELDS``) of the source, naming each difference.
``load_model(source, config)`` gives the model; ``init_from_source(model, source, config)`` copies a source's
parameter groups into a freshly built model (training's ``model.init_checkpoint``); parameter groups are
``base`` (the Wan DiT), ``vace`` and ``lora``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from mirage_jax.checkpoints.run import CHECKPOINT_SUBDIR, Checkpointer, DamagedCheckpoint, abstract_like
from mirage_jax.config import config_from_json, describe_differences, differences, layered_config, model_fields
from mirage_jax.convert.dit import CONVERTED_FILE
from mirage_jax.convert.export import EXPORT_FILE, EXPORT_TENSORS

RUN, CONVERTED, EXPORT = "run", "converted", "export"
GROUPS = ("base", "vace", "lora")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A located model: its ``kind`` (run / converted / export), folder, checkpoint ``step`` (runs), the config
    it was made with, the parameter ``groups`` it holds real weights for, and whether it has a depth head."""

    kind: str
    path: Path
    step: int | None
    config: ml_collections.ConfigDict
    groups: tuple[str, ...]
    has_depth_head: bool
    notes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """How messages name the source, e.g. ``run runs/tiny (step 400)``."""
        return f"{self.kind} {self.path}" + (f" (step {self.step})" if self.step is not None else "")


def parameter_group(path: tuple) -> str:
    """``"lora"``, ``"vace"`` or ``"base"``: the group of a model state path."""
    if str(path[-1]) in ("lora_a", "lora_b"):
        return "lora"
    return "vace" if path[0] == "vace" else "base"


def model_groups(config) -> tuple[str, ...]:
    """The parameter groups a config's model has (``vace`` with VACE layers, ``lora`` with a LoRA rank)."""
    return ("base",) + (("vace",) if config.model.vace_layers else ()) + (("lora",) if config.model.lora_rank else ())


def _stored_config(path: Path, text: str, notes: list[str]):
    config, unknown = config_from_json(text)
    if unknown:
        notes.append(f"{path}: fields this version does not know were ignored: {unknown}")
    return config


def _with_step_hint(err: DamagedCheckpoint, steps: list[int], step: int) -> DamagedCheckpoint:
    others = [s for s in steps if s != step]
    return DamagedCheckpoint(f"{err}; pick another checkpoint with --step (the run has steps {others})" if others
                             else str(err))


def _open_run(path: Path, step: int | None, field: str) -> ModelSource:
    workdir = path.parent if path.name == CHECKPOINT_SUBDIR else path
    checkpointer = Checkpointer.reader(workdir / CHECKPOINT_SUBDIR)
    try:
        steps = checkpointer.all_steps()
        if not steps:
            raise ValueError(f"{field} {str(path)!r}: the training run holds no checkpoint yet")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise ValueError(f"--step {step}: not a checkpoint of {path}; it has steps {steps}")
        meta = checkpointer.meta(step)
    except DamagedCheckpoint as err:
        raise _with_step_hint(err, steps, step) from err
    finally:
        checkpointer.close()
    notes: list[str] = []
    config = _stored_config(workdir, meta["config"], notes)
    return ModelSource(RUN, workdir, step, config, model_groups(config), bool(config.train.depth_head), tuple(notes))


def _open_folder(path: Path, kind: str, groups, field: str) -> ModelSource:
    if not (path / "config.json").is_file():
        raise ValueError(f"{field} {str(path)!r}: a {kind} folder without its config.json")
    notes: list[str] = []
    config = _stored_config(path, (path / "config.json").read_text(), notes)
    return ModelSource(kind, path, None, config, tuple(groups), False, tuple(notes))


def open_source(path: str | Path, step: int | None = None, field: str = "--checkpoint") -> ModelSource:
    """Locates the model source at ``path`` (see the module docstring); ``step`` picks a run's checkpoint.

    Raises ``ValueError`` naming ``field`` (the flag or config field that gave the path), the path and what was
    expected, for anything else.
    """
    path = Path(path).absolute()
    if not path.is_dir():
        raise ValueError(f"{field} {str(path)!r}: no such folder")
    if step is not None and not (path / CHECKPOINT_SUBDIR).is_dir() and path.name != CHECKPOINT_SUBDIR:
        raise ValueError(f"--step {step}: only a training run has steps; {path} is not one")
    if (path / CHECKPOINT_SUBDIR).is_dir() or path.name == CHECKPOINT_SUBDIR:
        return _open_run(path, step, field)
    if (path / CONVERTED_FILE).is_file():
        record = json.loads((path / CONVERTED_FILE).read_text())
        return _open_folder(path, CONVERTED, record.get("loaded", GROUPS), field)
    if (path / EXPORT_FILE).is_file():
        present = [g for g in ("base", "vace") if (path / EXPORT_TENSORS[g]).is_file()]
        return _open_folder(path, EXPORT, present, field)
    raise ValueError(f"{field} {str(path)!r}: not a model source; expected a training workdir (with "
                     f"{CHECKPOINT_SUBDIR}/), a `mirage-jax convert dit` folder ({CONVERTED_FILE}) or a "
                     f"`mirage-jax export` folder ({EXPORT_FILE})")


def resolve_config(source: ModelSource, config_path: str | Path | None = None, overrides=()):
    """``(config, notes)``: the source's config, ``config_path`` and ``overrides`` on top; the model-defining
    fields stay the source's (``mirage_jax.config.layered_config``); notes name what was kept or ignored."""
    config, notes = layered_config(source.config, source.name, config_path, overrides)
    return config, list(source.notes) + notes


def check_compatible(source: ModelSource, config, groups) -> None:
    """``ValueError`` naming every model-defining difference between ``source`` and ``config`` that matters
    for the parameter ``groups`` (the latent space and text input always matter)."""
    fields = model_fields(["base", *groups]) + ("latent.kind", "latent.channels", "latent.spatial_factor",
                                                "text.kind", "text.dim")
    diff = differences(source.config, config, fields)
    if diff:
        raise ValueError(f"{source.name} does not fit this config: {describe_differences(diff, 'source', 'config')}")


def _abstract_state(config, mesh, rules_from=None):
    """``(graphdef, abstract state with shardings)`` of ``config``'s ``WanDiT`` (on ``mesh`` by the logical-axis
    rules of ``rules_from`` (default ``config``), else on the first local device)."""
    from mirage_jax.models import DiTSettings, WanDiT, state_shardings

    settings = DiTSettings.from_config(config)
    if rules_from is not None:
        settings = dataclasses.replace(settings, rules=DiTSettings.from_config(rules_from).rules)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: WanDiT(settings, rngs=nnx.Rngs(0))))
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
    else:
        shardings = state_shardings(abstract, mesh, settings.rules)
    return graphdef, abstract_like(abstract, shardings)


def _restore(source: ModelSource, item: str, target):
    """Reads ``item`` (``model`` or ``depth_head``) of a run or the state of a converted folder into ``target``."""
    import orbax.checkpoint as ocp

    if source.kind == RUN:
        checkpointer = Checkpointer.reader(source.path / CHECKPOINT_SUBDIR)
        try:
            return checkpointer.restore(source.step, **{item: target})[item]
        except DamagedCheckpoint as err:
            raise _with_step_hint(err, checkpointer.all_steps(), source.step) from err
        finally:
            checkpointer.close()
    with ocp.StandardCheckpointer() as ckpt:
        return ckpt.restore(source.path / "state", target)


def _export_files(source: ModelSource, groups) -> list[Path]:
    return [source.path / EXPORT_TENSORS[g] for g in groups if g in source.groups]


def load_model(source: ModelSource, config, mesh: jax.sharding.Mesh | None = None):
    """The ``WanDiT`` of ``config`` with the source's parameters (on ``mesh`` by the config's rules, else on the
    first local device). ``config`` must have the source's model-defining fields (``resolve_config``).

    An export holds the DiT with its LoRA merged: its model has a fresh LoRA (zero ``B``: no change)."""
    check_compatible(source, config, model_groups(config))
    if source.kind == EXPORT:
        from mirage_jax.convert.dit import load_weights
        from mirage_jax.models import build_model

        model = build_model(config, seed=int(config.seed), mesh=mesh)
        load_weights(model, _export_files(source, model_groups(config)))  # LoRA merged in: no LoRA file read
        return model
    graphdef, target = _abstract_state(config, mesh)
    return nnx.merge(graphdef, _restore(source, "model", target))


def load_depth_head(source: ModelSource, config):
    """The ``LatentDepthHead`` a run trained (``train.depth_head``), on the first local device."""
    from mirage_jax.models.depth_head import make_depth_head

    if not source.has_depth_head:
        raise ValueError(f"{source.name} has no depth head: train with --config.train.depth_head=true, "
                         "or use --depth-source geometry")
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: make_depth_head(config)))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = abstract_like(abstract, jax.tree.map(lambda _: device, abstract))
    return nnx.merge(graphdef, _restore(source, "depth_head", target))


def init_from_source(model, source: ModelSource, config, mesh: jax.sharding.Mesh | None = None) -> dict:
    """Sets ``model``'s parameters of every group the source holds to the source's values (in place); the other
    groups keep their fresh initialisation (VACE ``after_proj`` and LoRA ``B`` are zero: no change at first).

    Returns the record a training run keeps: ``{"source", "kind", "step", "loaded", "fresh"}``.
    """
    wanted = model_groups(config)
    groups = [g for g in source.groups if g in wanted]
    check_compatible(source, config, groups)
    if source.kind == EXPORT:
        from mirage_jax.convert.dit import load_weights

        load_weights(model, _export_files(source, groups))
    else:
        _, target = _abstract_state(source.config, mesh, rules_from=config)
        loaded = dict(nnx.to_flat_state(_restore(source, "model", target)))
        state = nnx.state(model)
        for path, var in nnx.to_flat_state(state):
            if parameter_group(path) in groups:
                value = loaded[path][...] if hasattr(loaded[path], "get_value") else loaded[path]
                var.set_value(jnp.asarray(value, var.dtype))
        nnx.update(model, state)
    return {"source": str(source.path), "kind": source.kind, "step": source.step, "loaded": groups,
            "fresh": [g for g in wanted if g not in groups]}
