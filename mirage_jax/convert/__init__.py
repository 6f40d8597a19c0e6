"""Checkpoint conversion from PyTorch/diffusers files (safetensors only) to mirage_jax models and Orbax.

``from_diffusers(folder)`` reads a diffusers ``save_pretrained`` folder and returns ``(model, config)``;
the folder's ``config.json`` ``_class_name`` picks the converter (DiT/VACE or VAE).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

# diffusers class name -> module providing ``from_diffusers(folder) -> (model, config)``
_DIFFUSERS_CONVERTERS = {
    "WanTransformer3DModel": "mirage_jax.convert.dit",
    "WanVACETransformer3DModel": "mirage_jax.convert.dit",
    "AutoencoderKLWan": "mirage_jax.convert.vae",
}


def from_diffusers(folder: str | Path):
    """Loads a diffusers ``save_pretrained`` folder as a mirage_jax model: returns ``(model, config)``."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder}: not a diffusers folder (no config.json)")
    class_name = json.loads(config_path.read_text()).get("_class_name")
    if class_name not in _DIFFUSERS_CONVERTERS:
        raise ValueError(
            f"{config_path}: _class_name {class_name!r} is not supported; expected one of "
            f"{sorted(_DIFFUSERS_CONVERTERS)}"
        )
    return importlib.import_module(_DIFFUSERS_CONVERTERS[class_name]).from_diffusers(folder)
