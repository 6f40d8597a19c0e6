"""JAX's multi-process runtime for the commands that run on many hosts (``train``, ``data encode``).

``--coordinator HOST:PORT --num-processes N --process-id I`` (what ``launch/local.sh`` adds), or
``--multihost`` to let ``jax.distributed.initialize()`` auto-detect the cluster (Cloud TPU, SLURM); it is also
auto-detected when ``JAX_COORDINATOR_ADDRESS`` is set or SLURM runs more than one task. On CPU the
collectives use gloo.
"""

from __future__ import annotations

import argparse
import os


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-process runs)")
    parser.add_argument("--num-processes", type=int, default=None, help="number of JAX processes")
    parser.add_argument("--process-id", type=int, default=None, help="this process's index")
    parser.add_argument("--multihost", action="store_true",
                        help="call jax.distributed.initialize() with cluster auto-detection (TPU pod, SLURM)")


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
