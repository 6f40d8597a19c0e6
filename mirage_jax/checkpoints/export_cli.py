"""``mirage-jax export --checkpoint RUN [--config CFG] [--step N] --out DIR [--dtype float32|bfloat16]``.

Writes the trained VACE branch and LoRA in the official Mirage names and the DiT with the LoRA merged in the
original Wan2.2 names (``mirage_jax.convert.export``), so a lab can run its memory branch in the official
PyTorch code. ``RUN`` is any model source (``mirage_jax.checkpoints``); its own config is used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mirage_jax.config import accept_config_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="training workdir (or a convert dit / export folder)")
    parser.add_argument("--config", default=None, help="config file on top of the checkpoint's own config")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a training run (default: latest)")
    parser.add_argument("--out", required=True, help="new output folder")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                        help="tensor dtype of the files (float32: exact; bfloat16: half the size, as the official)")
    accept_config_overrides(parser)


def run(args) -> int:
    from mirage_jax.checkpoints import load_model, open_source, resolve_config
    from mirage_jax.config_checks import validate_config
    from mirage_jax.convert.export import write_export
    from mirage_jax.output_dirs import check_new_output

    check_new_output(args.out, "--out")
    source = open_source(args.checkpoint, args.step)
    config, notes = resolve_config(source, args.config, getattr(args, "overrides", []))
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    validate_config(config)
    if not config.model.vace_layers:
        raise ValueError(f"{source.name} has no VACE branch (config.model.vace_layers is empty): nothing of "
                         "Mirage to export; train a 'vace' stage first")
    record = {"source": str(source.path), "kind": source.kind, "step": source.step}
    info = write_export(load_model(source, config), config, args.out, dtype=args.dtype, record=record)
    print(json.dumps(info, indent=2))
    if "official_lora_alpha" in info:
        print(f"official inference: --lora-checkpoint {Path(args.out) / 'lora.safetensors'} "
              f"--lora-alpha {info['official_lora_alpha']:g}")
    return 0
