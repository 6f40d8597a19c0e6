"""How a command line with subcommands runs: ``dispatch(prog, table, argv)``.

A table maps each subcommand to ``(module, one-line help)``; the module is imported only when its subcommand
runs (so ``--help`` and ``mirage-jax data`` never pay for the model code) and provides
``add_arguments(parser)`` and ``run(args) -> int``. ``mirage_jax.cli`` (the top-level table) and
``mirage_jax.convert.cli`` (``mirage-jax convert <kind>``) both use it.

A user error is a ``ValueError`` whose message names the file or field and what was expected: ``dispatch``
prints it as one line, ``<prog> <command>: error: <message>``, and returns 2 (the exit code of a usage error,
as argparse's), never a traceback. An ``OSError`` (permission denied, disk full: its message names the path)
is printed the same way and returns 1. ``MIRAGE_JAX_TRACEBACK=1`` re-raises both, for debugging.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Mapping, Sequence

TRACEBACK_ENV = "MIRAGE_JAX_TRACEBACK"  # "1": user errors raise with their traceback


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
    try:
        return int(module.run(args) or 0)
    except (ValueError, OSError) as err:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        print(f"{prog} {name}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ValueError) else 1
