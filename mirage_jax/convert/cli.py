"""``mirage-jax convert <kind> ...``: one converter module per checkpoint kind."""

from __future__ import annotations

import argparse

from mirage_jax.commands import dispatch

KINDS = {
    "dit": ("mirage_jax.convert.dit", "Wan2.2 DiT (original or diffusers names) [+ Mirage VACE, LoRA] -> Orbax"),
    "vae": ("mirage_jax.convert.vae", "Wan2.2 VAE (safetensors/.pth via weights_only, or diffusers) -> Orbax"),
    "umt5": ("mirage_jax.convert.umt5", "umT5 text encoder (original or transformers safetensors) -> Orbax"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=sorted(KINDS), help="what to convert")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="the converter's own options")


def run(args: argparse.Namespace) -> int:
    return dispatch("mirage-jax convert", KINDS, [args.kind, *args.rest])
