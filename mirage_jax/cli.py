"""The ``mirage-jax`` command line: one entry point, one module per subcommand.

Each subcommand lives in its own module, imported only when that subcommand runs, so ``mirage-jax data``
never pays for importing the model code. A subcommand module provides ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence

# subcommand -> (module, one-line help)
COMMANDS: Mapping[str, tuple[str, str]] = {
    "demo": ("mirage_jax.demo", "the CPU demo: data, training, generation with/without memory, metrics"),
    "data": ("mirage_jax.data.cli", "build pose-annotated clip datasets (procedural, geometry.npz, RE10K)"),
    "train": ("mirage_jax.train.cli", "train the DiT/VACE/LoRA with flow matching"),
    "generate": ("mirage_jax.world.generate_cli", "generate a world video along a camera path"),
    "eval": ("mirage_jax.world.eval_cli", "revisit-consistency evaluation: latent memory vs none vs RGB cache"),
    "convert": ("mirage_jax.convert.cli", "convert PyTorch/diffusers checkpoints (safetensors) to Orbax"),
    "export": ("mirage_jax.checkpoints.export_cli",
               "write a trained model as the official Mirage VACE/LoRA and Wan2.2 DiT safetensors"),
    "plan": ("mirage_jax.plan", "AOT-compile a training step on simulated devices and report memory"),
}


def dispatch(prog: str, commands: Mapping[str, tuple[str, str]], argv: Sequence[str]) -> int:
    """Parses ``argv[0]`` as a subcommand of ``commands``, imports its module and runs it."""
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        lines = [f"usage: {prog} <command> [options]", "", "commands:"]
        lines += [f"  {name:<10} {help_}" for name, (_, help_) in commands.items()]
        if argv and argv[0] not in ("-h", "--help"):
            print(f"{prog}: unknown command {argv[0]!r}\n", file=sys.stderr)
            print("\n".join(lines), file=sys.stderr)
            return 2
        print("\n".join(lines))
        return 0 if argv else 2
    name = argv[0]
    module_name, help_ = commands[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(list(argv[1:]))
    return int(module.run(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    return dispatch("mirage-jax", COMMANDS, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
