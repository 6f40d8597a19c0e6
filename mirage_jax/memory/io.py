"""Saving/restoring a memory with Orbax.

A checkpoint is an Orbax ``StandardCheckpointer`` directory holding the state's arrays and ``voxel_size``
(no pickles). ``restore`` can place the restored memory on a mesh (point axis sharded).
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from mirage_jax.memory.state import LatentMemory
from mirage_jax.memory.validate import check_not_consumed

_ARRAYS = ("points", "features", "valid", "write_id", "frame_id", "next_write_id", "next_frame_id")


def save(path: str | os.PathLike, mem: LatentMemory, *, force: bool = False) -> Path:
    """Writes ``mem`` to the Orbax checkpoint directory ``path`` (``force`` overwrites); returns the path."""
    import orbax.checkpoint as ocp

    check_not_consumed(mem)
    path = Path(path).absolute()
    state = {name: getattr(mem, name) for name in _ARRAYS} | {"voxel_size": np.asarray(mem.voxel_size, np.float64)}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, state, force=force)
        checkpointer.wait_until_finished()
    return path


def restore(path: str | os.PathLike, mesh=None, axis: str = "fsdp") -> LatentMemory:
    """Reads a memory saved by ``save``; with ``mesh``, its point axis is sharded over ``axis``."""
    import orbax.checkpoint as ocp

    path = Path(path).absolute()
    if not path.is_dir():
        raise ValueError(f"path: no memory checkpoint directory at {str(path)!r}")
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(path)
    missing = [name for name in (*_ARRAYS, "voxel_size") if name not in state]
    if missing:
        raise ValueError(f"path: {str(path)!r} is not a memory checkpoint (missing {missing})")
    n = np.shape(state["points"])[0]
    if any(np.shape(state[name])[:1] != (n,) for name in _ARRAYS[:5]):
        raise ValueError(f"path: {str(path)!r} has per-point arrays of different lengths")
    mem = LatentMemory(**{name: jnp.asarray(state[name]) for name in _ARRAYS},
                       voxel_size=float(np.asarray(state["voxel_size"])))
    if mesh is not None:
        from mirage_jax.memory.sharded import shard_memory

        mem = shard_memory(mem, mesh, axis)
    return mem
