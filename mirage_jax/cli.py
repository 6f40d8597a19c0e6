"""The ``mirage-jax`` command line: one entry point, one module per subcommand (run by ``commands.dispatch``)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

from mirage_jax.commands import dispatch

# subcommand -> (module, one-line help)
COMMANDS: Mapping[str, tuple[str, str]] = {
    "demo": ("mirage_jax.demo", "the CPU demo: data, training, generation with/without memory, metrics"),
    "data": ("mirage_jax.data.cli", "build pose-annotated clip datasets (procedural, geometry.npz, RE10K)"),
    "train": ("mirage_jax.train.cli", "train the DiT/VACE/LoRA with flow matching"),
    "generate": ("mirage_jax.world.generate_cli", "generate a world video along a camera path"),
    "eval": ("mirage_jax.world.eval_cli", "revisit-consistency evaluation: latent memory vs none vs RGB cache"),
    "explore": ("mirage_jax.world.explore.cli",
                "a local web page: drive the camera with the keyboard, see each chunk and the memory's map"),
    "convert": ("mirage_jax.convert.cli", "convert PyTorch/diffusers checkpoints (safetensors) to Orbax"),
    "export": ("mirage_jax.checkpoints.export_cli",
               "write a trained model as the official Mirage VACE/LoRA and Wan2.2 DiT safetensors"),
    "plan": ("mirage_jax.plan", "AOT-compile a training step on simulated devices and report memory"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("mirage-jax", COMMANDS, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
