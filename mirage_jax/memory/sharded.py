"""Memory whose point axis is sharded over a mesh axis: ``jax.shard_map`` read and write.

Equal bit for bit to the unsharded ``read`` / ``write``:

- read: each shard z-buffers its own points, then the shards agree per cell on the minimum depth (``pmin``),
  then on the minimum write id among the shards at that depth (``pmin``); the single winning shard
  contributes its feature bits and the others zeros (an integer ``psum`` of the bit patterns, so no float
  rounding, not even of -0.0).
- write: the new cells are lifted on every shard (they are few); each shard de-duplicates its own points;
  the counts that decide eviction are summed over shards; free slots are ranked in global slot order
  (a shard's ranks start after the free slots of the shards before it), so each new point lands in exactly
  the slot the unsharded write would pick.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mirage_jax.memory import capacity
from mirage_jax.memory.downsample import MODES
from mirage_jax.memory.read import NEAR, project_cells, splat_views
from mirage_jax.memory.state import LatentMemory
from mirage_jax.memory.validate import (
    check_cameras,
    check_hw,
    check_near,
    check_not_consumed,
    check_views_fit,
    check_write_inputs,
)
from mirage_jax.memory.write import _apply, check_write_id_room, lift, plan_insert
from mirage_jax.memory.zbuffer import KEY_NONE

_PER_POINT = ("points", "features", "valid", "write_id", "frame_id")


def memory_specs(mem: LatentMemory, axis: str) -> LatentMemory:
    """A ``LatentMemory``-shaped pytree of ``PartitionSpec``: per-point arrays split on ``axis``."""
    fields = {f: P(axis) for f in _PER_POINT} | {"next_write_id": P(), "next_frame_id": P()}
    return LatentMemory(**fields, voxel_size=mem.voxel_size)


def shard_memory(mem: LatentMemory, mesh: Mesh, axis: str = "fsdp") -> LatentMemory:
    """Places ``mem`` on ``mesh`` with its point axis split over ``axis`` (capacity must divide evenly)."""
    check_not_consumed(mem)
    _check_divisible(mem, mesh, axis)
    specs = memory_specs(mem, axis)
    return jax.tree.map(lambda a, s: jax.device_put(a, NamedSharding(mesh, s)), mem, specs)


def _check_divisible(mem: LatentMemory, mesh: Mesh, axis: str) -> None:
    if axis not in mesh.shape:
        raise ValueError(f"axis: {axis!r} is not a mesh axis {tuple(mesh.shape)}")
    if mem.capacity % mesh.shape[axis]:
        raise ValueError(f"mem: capacity {mem.capacity} is not divisible by mesh axis {axis}={mesh.shape[axis]}")


def _bits(x):
    """Features as integers holding their bit pattern (exact under psum with zeros)."""
    width = {2: jnp.uint16, 4: jnp.uint32}[jnp.dtype(x.dtype).itemsize]
    return jax.lax.bitcast_convert_type(x, width).astype(jnp.int32)


def _unbits(bits, dtype):
    width = {2: jnp.uint16, 4: jnp.uint32}[jnp.dtype(dtype).itemsize]
    return jax.lax.bitcast_convert_type(bits.astype(width), dtype)


def _read_local(mem: LatentMemory, intrinsics, cam2world, hw, near, axis):
    t = intrinsics.shape[0]
    cell, z = project_cells(mem.points, mem.valid, intrinsics, cam2world, hw, near)
    zmin, kmin, winner = splat_views(cell, z, mem.write_id, t, hw)
    zg = jax.lax.pmin(zmin, axis)
    at_min = (winner >= 0) & (zmin == zg)
    kg = jax.lax.pmin(jnp.where(at_min, kmin, KEY_NONE), axis)
    mine = at_min & (kmin == kg)
    bits = jnp.where(mine[..., None], _bits(mem.features[jnp.maximum(winner, 0)]), 0)
    feats = _unbits(jax.lax.psum(bits, axis), mem.features.dtype)
    return feats.reshape(t, hw[0], hw[1], -1), (kg != KEY_NONE).reshape(t, hw[0], hw[1])


@partial(jax.jit, static_argnames=("hw", "near", "mesh", "axis"))
def _read_sharded(mem, intrinsics, cam2world, hw, near, mesh, axis):
    fn = jax.shard_map(
        partial(_read_local, hw=hw, near=near, axis=axis),
        mesh=mesh,
        in_specs=(memory_specs(mem, axis), P(), P()),
        out_specs=(P(), P()),
    )
    return fn(mem, intrinsics, cam2world)


def read_sharded(mem: LatentMemory, intrinsics, cam2world, hw: Sequence[int], mesh: Mesh, axis: str = "fsdp", *,
                 near: float = NEAR):
    """``read`` for a memory whose point axis is split over mesh ``axis``; same arguments and result."""
    check_not_consumed(mem)
    hw, near = check_hw(hw), check_near(near)
    _check_divisible(mem, mesh, axis)
    intrinsics, cam2world = check_cameras(intrinsics, cam2world)
    check_views_fit(intrinsics.shape[0], mem.capacity // mesh.shape[axis])
    return _read_sharded(mem, intrinsics, cam2world, hw, near, mesh, axis)


def _write_local(mem: LatentMemory, latents, depths, intrinsics, cam2world, keep, mode, axis):
    points, features, ok, frame = lift(latents, depths, intrinsics, cam2world, keep, mode)

    def total(x):
        return jax.lax.psum(jnp.sum(x), axis)

    def count(alive, write_id, threshold):
        return jax.lax.psum(capacity.count_below(alive, write_id, threshold), axis)

    def id_span(alive, write_id):
        first, last = capacity.alive_id_span(alive, write_id)
        return jax.lax.pmin(first, axis), jax.lax.pmax(last, axis)

    n_shards = jax.lax.psum(1, axis)
    keys = capacity.voxel_keys(points, mem.voxel_size)
    alive, take, take_rank, write_id, n_new = plan_insert(mem, keys, ok, frame, total, count, id_span,
                                                          mem.capacity * n_shards)
    free = ~alive
    counts = jax.lax.all_gather(jnp.sum(free, dtype=jnp.int32), axis)
    before = jnp.sum(jnp.where(jnp.arange(counts.shape[0]) < jax.lax.axis_index(axis), counts, 0))
    m = points.shape[0]
    table = capacity.free_slot_table(free, m, offset=before)
    slot = jnp.where(take, table[jnp.clip(take_rank, 0, m - 1)], mem.capacity)
    return _apply(mem, alive, slot, points, features, write_id, frame, n_new, latents.shape[0])


@partial(jax.jit, static_argnames=("mode", "mesh", "axis"))
def _write_sharded(mem, latents, depths, intrinsics, cam2world, keep, mode, mesh, axis):
    specs = memory_specs(mem, axis)
    fn = jax.shard_map(
        partial(_write_local, mode=mode, axis=axis),
        mesh=mesh,
        in_specs=(specs, P(), P(), P(), P(), P()),
        out_specs=specs,
        check_vma=False,  # fori_loop carries start replicated and become per-shard; results are checked by tests
    )
    return fn(mem, latents, depths, intrinsics, cam2world, keep)


def write_sharded(mem: LatentMemory, latents, depths, intrinsics, cam2world, keep=None, *, mesh: Mesh,
                  axis: str = "fsdp", depth_downsample: str = "bilinear") -> LatentMemory:
    """``write`` for a memory whose point axis is split over mesh ``axis``; same arguments and result."""
    check_not_consumed(mem)
    _check_divisible(mem, mesh, axis)
    latents, depths, intrinsics, cam2world, keep = check_write_inputs(
        mem.channels, latents, depths, intrinsics, cam2world, keep, depth_downsample, MODES
    )
    check_write_id_room(mem, latents.shape[0] * latents.shape[1] * latents.shape[2])
    return _write_sharded(mem, latents, depths, intrinsics, cam2world, keep, depth_downsample, mesh, axis)
