"""A trained model as the official Mirage / Wan2.2 files, so it runs in the official PyTorch code too.

``write_export(model, config, out)`` writes, in torch layout:

* ``vace.safetensors``: ``vace_blocks.{i}.*`` and ``vace_patch_embedding.*``, the official VACE export names;
* ``lora.safetensors``: ``pipe.dit.blocks.{j}.{self_attn|cross_attn}.{q,k,v,o}.lora_{A,B}.weight`` and
  ``pipe.dit.blocks.{j}.ffn.{0,2}.lora_{A,B}.weight``, the official LoRA export names (header metadata
  ``lora_rank``, ``lora_alpha``);
* ``dit.safetensors``: the Wan2.2 DiT in its original names with the LoRA merged in,
  ``W + (lora_alpha / lora_rank) · A·B``;
* ``config.json`` (the config the model was made with) and ``export.json`` (what was written, from where).

``mirage-jax convert dit`` reads these names: the base checkpoint + ``vace`` + ``lora`` gives the trained
parameters bit for bit (float32 export), ``dit`` + ``vace`` the same model with the LoRA merged. The official
inference fuses a LoRA as ``W += alpha · B·A`` with its ``--lora-alpha``: pass ``lora_alpha / lora_rank``
(``export.json`` says it). Tensors are produced and written one at a time (the 5 B DiT never sits whole in
host memory twice).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from mirage_jax.convert.dit import original_group, parameter_plan, to_torch
from mirage_jax.convert.safetensors_io import write_safetensors

EXPORT_FILE = "export.json"  # marks a `mirage-jax export` folder
EXPORT_TENSORS = {"base": "dit.safetensors", "vace": "vace.safetensors", "lora": "lora.safetensors"}
LORA_PREFIX = "pipe.dit."  # the official LoRA export prefixes every name with it
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def lora_scale(config) -> float:
    """The LoRA multiplier ``lora_alpha / lora_rank`` of ``config``."""
    return float(config.model.lora_alpha) / int(config.model.lora_rank)


def _entries(model: nnx.Module, config, group: str, dtype: np.dtype) -> list:
    """``(name, shape, dtype, produce)`` for every tensor of ``group``; the base group with the LoRA merged."""
    state = nnx.state(model)
    variables = {path: var for path, var, _, _ in parameter_plan(state)}
    patch = tuple(int(p) for p in config.model.patch_size)
    scale = lora_scale(config) if config.model.lora_rank else 0.0
    entries = []
    for path, var, names, stacked in parameter_plan(state):
        if original_group(names[0]) != group:
            continue
        lora = None
        if group == "base" and path[-1] == "kernel" and path[:-1] + ("lora_a",) in variables:
            lora = (variables[path[:-1] + ("lora_a",)], variables[path[:-1] + ("lora_b",)])
        for layer, name in enumerate(names):
            def produce(var=var, layer=layer, name=name, lora=lora, stacked=stacked):
                value = var[...][layer] if stacked else var[...]
                if lora is not None:
                    a, b = (v[...][layer] if stacked else v[...] for v in lora)
                    value = value + (a @ b * scale).astype(value.dtype)
                return to_torch(name, np.asarray(jnp.asarray(value, jnp.float32)), patch)

            layer_shape = var.shape[1:] if stacked else var.shape
            shape = to_torch(name, np.broadcast_to(np.uint8(0), layer_shape), patch).shape  # no data
            entries.append((LORA_PREFIX + name if group == "lora" else name, shape, dtype, produce))
    return entries


def write_export(model: nnx.Module, config, out: str | Path, *, dtype: str = "float32", record: dict | None = None
                 ) -> dict:
    """Writes the export of ``model`` (made with ``config``) into the new folder ``out`` (atomically: nothing
    appears under ``out`` until every file is complete). Returns ``export.json``'s content.

    Raises ``ValueError`` for a model without a VACE branch (nothing of Mirage to export) or an unknown dtype.
    """
    from mirage_jax.output_dirs import new_output_dir

    if not config.model.vace_layers:
        raise ValueError("the model has no VACE branch (config.model.vace_layers is empty): nothing of Mirage "
                         "to export; train a 'vace' stage first")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: expected one of {sorted(DTYPES)}")
    groups = ["vace", "base"] + (["lora"] if config.model.lora_rank else [])
    info = {**(record or {}), "dtype": dtype, "files": {g: EXPORT_TENSORS[g] for g in groups},
            "lora_merged_into_dit": bool(config.model.lora_rank)}
    if config.model.lora_rank:
        info["lora_rank"], info["lora_alpha"] = int(config.model.lora_rank), float(config.model.lora_alpha)
        info["official_lora_alpha"] = lora_scale(config)  # the official inference's --lora-alpha for lora.safetensors
    with new_output_dir(out) as staging:
        for group in groups:
            metadata = {"format": "pt", "mirage_jax_group": group}
            if group == "lora":
                metadata.update(lora_rank=str(info["lora_rank"]), lora_alpha=repr(info["lora_alpha"]))
            write_safetensors(staging / EXPORT_TENSORS[group], _entries(model, config, group, DTYPES[dtype]), metadata)
        (staging / "config.json").write_text(config.to_json_best_effort(indent=2))
        (staging / EXPORT_FILE).write_text(json.dumps(info, indent=2))
    return info
