"""The memory's state: a fixed-capacity pytree of world points and latent features (docs/design.md §3).

Every array has a static shape set by ``init`` so that ``write`` and ``read`` compile once. A slot ``i`` holds
a point when ``valid[i]``; the slot order carries no meaning (results never depend on it): the per-point
``write_id`` (a counter that increases with every stored cell, never reused) is the point's identity and its
age, used both to break depth ties and to evict the oldest points.

Bytes per stored point (``bytes_per_point``): 12 (xyz f32) + C·itemsize (features) + 1 (valid) + 4 (write id)
+ 4 (frame id) = 213 B for C=48 in float32, 117 B in bfloat16 (the official cloud: ≈205 B in float32, and
it never bounds the number of points).
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax.config_checks import MAX_MEMORY_CAPACITY, memory_feature_dtype
from mirage_jax.memory.validate import check_not_consumed

# Default edge of the voxels used to de-duplicate revisits (metres); see ``write``.
DEFAULT_DEDUP_VOXEL = 0.05


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LatentMemory:
    """Fixed-capacity latent point cloud (a pytree; ``voxel_size`` is static metadata).

    Attributes:
      points: ``[N, 3]`` float32 world positions (OpenCV world frame, metres).
      features: ``[N, C]`` latent features (float32 or bfloat16).
      valid: ``[N]`` bool, True where the slot holds a point.
      write_id: ``[N]`` int32 identity/age of each point (lower = written earlier); -1 in empty slots.
      frame_id: ``[N]`` int32 index of the written frame the point came from (counts frames over all writes).
      next_write_id: ``[]`` int32, the write id the next stored cell gets (= cells stored so far).
      next_frame_id: ``[]`` int32, the frame id the next written frame gets (= frames written so far).
      voxel_size: static float, edge (m) of the de-duplication voxels: a new point replaces older points in
        its voxel.
    """

    points: jax.Array
    features: jax.Array
    valid: jax.Array
    write_id: jax.Array
    frame_id: jax.Array
    next_write_id: jax.Array
    next_frame_id: jax.Array
    voxel_size: float = dataclasses.field(default=DEFAULT_DEDUP_VOXEL, metadata=dict(static=True))

    @property
    def capacity(self) -> int:
        return int(self.points.shape[0])

    @property
    def channels(self) -> int:
        return int(self.features.shape[1])


def init(capacity: int, channels: int, dtype=jnp.float32, *, voxel_size: float = DEFAULT_DEDUP_VOXEL) -> LatentMemory:
    """An empty memory holding at most ``capacity`` points of ``channels`` features of ``dtype``.

    ``voxel_size`` (metres) is the de-duplication voxel of the capacity policy (see ``write``); it should be
    about the footprint of a latent cell at typical depth (a 44×80 grid with fx≈40 cells: 5 cm at 2 m).
    ``capacity`` is refused when its indices would overflow int32 or its state would not fit the device.
    """
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
        raise ValueError(f"capacity: expected a positive int, got {capacity!r}")
    if capacity > MAX_MEMORY_CAPACITY:
        raise ValueError(f"capacity: expected at most {MAX_MEMORY_CAPACITY} (slot indices and point counts are int32 "
                         f"and a write counts up to 2 x capacity points), got {capacity}")
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
        raise ValueError(f"channels: expected a positive int, got {channels!r}")
    dtype = memory_feature_dtype(dtype)
    if not (isinstance(voxel_size, (int, float)) and np.isfinite(voxel_size) and voxel_size > 0):
        raise ValueError(f"voxel_size: expected a positive finite float (metres), got {voxel_size!r}")
    make = functools.partial(_empty, int(capacity), int(channels), dtype, float(voxel_size))
    check_fits_device(jax.eval_shape(make))
    return make()


def _empty(capacity: int, channels: int, dtype, voxel_size: float) -> LatentMemory:
    return LatentMemory(
        points=jnp.zeros((capacity, 3), jnp.float32),
        features=jnp.zeros((capacity, channels), dtype),
        valid=jnp.zeros((capacity,), bool),
        write_id=jnp.full((capacity,), -1, jnp.int32),
        frame_id=jnp.full((capacity,), -1, jnp.int32),
        next_write_id=jnp.zeros((), jnp.int32),
        next_frame_id=jnp.zeros((), jnp.int32),
        voxel_size=voxel_size,
    )


def device_memory_bytes(device) -> int | None:
    """Memory of ``device`` in bytes: physical RAM on CPU, the allocator's ``bytes_limit`` on GPU/TPU (None
    when the device does not tell)."""
    if device.platform == "cpu":
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit")


def check_fits_device(mem: LatentMemory) -> None:
    """Refuses a memory (arrays or their shapes) whose state exceeds the memory of the default device."""
    device = jax.devices()[0]
    available, needed, per_point = device_memory_bytes(device), memory_bytes(mem), bytes_per_point(mem)
    if available is not None and needed > available:
        fitting = max(0, available - (needed - mem.capacity * per_point)) // per_point  # the counters need room too
        raise ValueError(f"capacity: {mem.capacity} points need {needed} bytes ({per_point} per point), more than "
                         f"the {available} bytes of {device.platform} device {device.id}; use a capacity of at most "
                         f"{fitting}")


def num_points(mem: LatentMemory) -> int:
    """Number of stored points (host int; use ``mem.valid.sum()`` inside ``jit``)."""
    check_not_consumed(mem)
    return int(jnp.sum(mem.valid))


def bytes_per_point(mem: LatentMemory) -> int:
    """Bytes of state per slot: xyz + features + valid + write id + frame id."""
    per_slot = [mem.points, mem.features, mem.valid, mem.write_id, mem.frame_id]
    return sum(int(np.prod(a.shape[1:])) * jnp.dtype(a.dtype).itemsize for a in per_slot)


def memory_bytes(mem: LatentMemory) -> int:
    """Bytes of the whole stored state (all slots, used or not, plus the counters)."""
    return sum(int(np.prod(a.shape)) * jnp.dtype(a.dtype).itemsize for a in jax.tree_util.tree_leaves(mem))
