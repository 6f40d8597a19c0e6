"""The latent spatial memory (docs/design.md §3): a bounded, deterministic latent point cloud.

``init`` makes an empty fixed-capacity memory, ``write`` lifts latent frames to world points with their depth
and poses, ``read`` z-buffer-splats the memory into target cameras at latent resolution (nearest point wins,
exact ties to the oldest point), ``select_references`` ranks history frames by voxel IoU with the target
views; ``history`` keeps what each history latent saw when it was written, for the official (frozen)
reference rule. Everything is pure and ``jit``-compiled with static shapes.
"""

from mirage_jax.memory.downsample import downsample_depth
from mirage_jax.memory.history import ViewHistory, append_cells, init_history, record_views, select_frozen
from mirage_jax.memory.io import restore, save
from mirage_jax.memory.read import NEAR, read
from mirage_jax.memory.references import References, rank_references, select_references, visible, voxel_iou
from mirage_jax.memory.sharded import read_sharded, shard_memory, write_sharded
from mirage_jax.memory.state import LatentMemory, bytes_per_point, init, memory_bytes, num_points
from mirage_jax.memory.write import write

__all__ = [
    "LatentMemory",
    "NEAR",
    "References",
    "ViewHistory",
    "append_cells",
    "bytes_per_point",
    "downsample_depth",
    "init",
    "init_history",
    "memory_bytes",
    "num_points",
    "rank_references",
    "read",
    "read_sharded",
    "record_views",
    "restore",
    "save",
    "select_frozen",
    "select_references",
    "shard_memory",
    "visible",
    "voxel_iou",
    "write",
    "write_sharded",
]
