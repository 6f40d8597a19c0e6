"""``mirage-jax train --config configs/tiny.py --workdir DIR [--config.train.num_steps=N ...]``.

Any ``--config.a.b=value`` argument overrides that config field (``mirage_jax.config.load_config``); unknown
fields and out-of-range values are reported before anything is built. Multi-process runs: pass
``--coordinator HOST:PORT --num-processes N --process-id I`` (what ``launch/local.sh`` adds), or
``--multihost`` to let ``jax.distributed.initialize()`` auto-detect the cluster (Cloud TPU, SLURM); it is also
auto-detected when ``JAX_COORDINATOR_ADDRESS`` is set or SLURM runs more than one task. On CPU the
collectives use gloo.

Exit codes: 0 done, 2 a usage error (one line on stderr), 143 stopped by SIGTERM after saving (run the same
command again to resume), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import os

from mirage_jax.config import accept_config_overrides

# Exit code of a run stopped by SIGTERM after saving its checkpoint (128 + SIGTERM, as a shell reports a process
# the signal ended): a scheduler tells preemption (resume it) from success (0) and from errors (1, 2).
PREEMPTED_EXIT_CODE = 143


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="config file (configs/tiny.py) or name (tiny)")
    parser.add_argument("--workdir", required=True, help="run folder: checkpoints, metrics.jsonl, TensorBoard")
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-process runs)")
    parser.add_argument("--num-processes", type=int, default=None, help="number of JAX processes")
    parser.add_argument("--process-id", type=int, default=None, help="this process's index")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (nor, on a pipe or file, its line per logged step)")
    parser.add_argument("--multihost", action="store_true",
                        help="call jax.distributed.initialize() with cluster auto-detection (TPU pod, SLURM)")
    accept_config_overrides(parser)


def _auto_multihost() -> bool:
    return bool(os.environ.get("JAX_COORDINATOR_ADDRESS")) or int(os.environ.get("SLURM_NTASKS", "1")) > 1


def initialize_distributed(args) -> None:
    """``jax.distributed.initialize`` per the flags or the environment (must run before any JAX computation)."""
    explicit = args.coordinator is not None or args.num_processes is not None or args.process_id is not None
    if not (explicit or args.multihost or _auto_multihost()):
        return
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        if args.coordinator is None or args.num_processes is None or args.process_id is None:
            raise ValueError("--coordinator, --num-processes and --process-id must be given together")
        if not 0 <= args.process_id < args.num_processes:
            raise ValueError(f"--process-id={args.process_id}: expected 0 <= id < --num-processes")
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                                   process_id=args.process_id)
    else:
        jax.distributed.initialize()


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
