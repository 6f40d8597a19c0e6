"""Parameters of a module on disk: an Orbax ``state`` folder plus a JSON file of the sizes it was built with.

Used by the converted VAE and umT5 (``mirage-jax convert vae|umt5``); the folder is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from flax import nnx


def save_params(module: nnx.Module, directory: str | Path, config: dict, config_name: str) -> None:
    """Writes ``directory/state`` (Orbax, the module's ``nnx.Param`` state) and ``directory/<config_name>``,
    atomically into a new (or empty) folder."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    from mirage_jax.output_dirs import new_output_dir  # noqa: PLC0415

    with new_output_dir(directory) as staging:
        (staging / config_name).write_text(json.dumps(config))
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(staging / "state", nnx.state(module, nnx.Param))


def read_config(directory: str | Path, config_name: str, field: str) -> dict:
    """The JSON config written by :func:`save_params` (lists turned to tuples); ``field`` names the setting."""
    path = Path(directory).resolve() / config_name
    if not path.is_file():
        raise ValueError(f"{field}: {str(path.parent)!r} has no {config_name} (write one with mirage-jax convert)")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(path.read_text()).items()}


def restore_params(abstract: nnx.Module, directory: str | Path) -> nnx.Module:
    """Restores ``directory/state`` into a module built with abstract (``ShapeDtypeStruct``) parameters."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    graphdef, state = nnx.split(abstract, nnx.Param)
    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(Path(directory).resolve() / "state", state)
    return nnx.merge(graphdef, state)
