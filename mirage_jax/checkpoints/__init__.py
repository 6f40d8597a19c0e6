"""Checkpoints: the Orbax layout of a training run (``run``) and every model source with one loader
(``sources``: training runs, ``convert dit`` folders, exports), each carrying the config it was made with."""

from mirage_jax.checkpoints.sources import (
    ModelSource,
    init_from_source,
    load_depth_head,
    load_model,
    open_source,
    resolve_config,
)

__all__ = ["ModelSource", "init_from_source", "load_depth_head", "load_model", "open_source", "resolve_config"]
