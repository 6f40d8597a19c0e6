"""``mirage-jax train --config configs/tiny.py --workdir DIR [--config.train.num_steps=N ...]``.

Any ``--config.a.b=value`` argument overrides that config field (``mirage_jax.config.load_config``); unknown
fields and out-of-range values are reported before anything is built. Multi-process runs: the flags of
``mirage_jax.distributed`` (``--coordinator/--num-processes/--process-id`` or ``--multihost``).

Exit codes: 0 done, 2 a usage error (one line on stderr), 143 stopped by SIGTERM after saving (run the same
command again to resume), 1 anything else.
"""

from __future__ import annotations

import argparse
import json

from mirage_jax.config import accept_config_overrides
from mirage_jax.distributed import add_distributed_arguments, initialize_distributed

# Exit code of a run stopped by SIGTERM after saving its checkpoint (128 + SIGTERM, as a shell reports a process
# the signal ended): a scheduler tells preemption (resume it) from success (0) and from errors (1, 2).
PREEMPTED_EXIT_CODE = 143


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config file (configs/tiny.py) or name (tiny)")
    parser.add_argument("--workdir", required=True, help="run folder: checkpoints, metrics.jsonl, TensorBoard")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (nor, on a pipe or file, its line per logged step)")
    add_distributed_arguments(parser)
    accept_config_overrides(parser)


def run(args) -> int:
    from mirage_jax.config import load_config

    config = load_config(args.config, getattr(args, "overrides", []))
    from mirage_jax.train.validate import check_training_start

    initialize_distributed(args)
    check_training_start(config, workdir=args.workdir)
    from mirage_jax.train.loop import train

    summary = train(config, args.workdir, progress=not args.quiet)
    import jax

    if jax.process_index() == 0:
        print(json.dumps(summary, indent=2))
    return PREEMPTED_EXIT_CODE if summary["preempted"] else 0
