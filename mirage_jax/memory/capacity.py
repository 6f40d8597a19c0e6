"""The bounded-capacity policy's building blocks: voxel de-duplication, oldest-first eviction, slot placement.

All are O(N) passes over the N slots with static shapes and no sort: a write's voxels go into two hash tables
(scatter-max of the newest cell per slot), and every stored point looks its voxel up there, verifying the
voxel exactly (so a lookup never confuses two voxels; it can only miss, rarely, when both of a voxel's slots
hold other voxels of the same write: then an old point survives as a duplicate until age eviction).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Voxel coordinates are clamped to ±VOXEL_LIMIT (at 5 cm voxels: ±5e7 m, far beyond any scene).
VOXEL_LIMIT = 2**30


def voxel_keys(points, voxel_size: float):
    """Integer voxel coordinates ``[..., 3]`` int32 of ``points [..., 3]``: ``floor(p · (1/voxel_size))``.

    Multiplying by the float32 reciprocal (rather than dividing) makes the keys reproducible bit for bit.
    """
    inv = jnp.float32(1.0 / voxel_size)
    cells = jnp.floor(jnp.asarray(points, jnp.float32) * inv)
    return jnp.clip(cells, -VOXEL_LIMIT, VOXEL_LIMIT).astype(jnp.int32)


def group_ids(sorted_cols):
    """Dense group id ``[M]`` int32 of lexicographically sorted key columns (0, 0, 1, 2, 2, ...)."""
    changed = jnp.zeros(sorted_cols[0].shape[0] - 1, bool)
    for col in sorted_cols:
        changed |= col[1:] != col[:-1]
    return prefix_count(jnp.concatenate([jnp.ones((1,), bool), changed])) - 1


# Two independent hashes of a voxel into tables of TABLE_SLOTS_PER_CELL x (cells per write) slots (a power of 2).
# 8: a voxel is missed (both slots held by other voxels) for ~0.4% of voxels at most; filling the tables is
# most of their cost (16 slots doubled it: +0.4 ms per 8-frame write at 44x80).
TABLE_SLOTS_PER_CELL = 8
_HASH_SEEDS = (0x9E3779B9, 0x7F4A7C15)  # one per table
_HASH_PRIMES = (0x8DA6B343, 0xD8163841, 0xCB1AB31F)


def table_size(num_cells: int) -> int:
    """Slots of each voxel hash table for a write of ``num_cells`` cells."""
    return 1 << max(4, (TABLE_SLOTS_PER_CELL * num_cells - 1).bit_length())


def voxel_slots(keys, size: int):
    """``[2, ...]`` int32 slots of voxel ``keys [..., 3]`` in the two hash tables of ``size`` slots."""
    k = keys.astype(jnp.uint32)
    slots = []
    for seed in _HASH_SEEDS:
        h = jnp.uint32(seed) + k[..., 0] * jnp.uint32(_HASH_PRIMES[0])
        h = h + k[..., 1] * jnp.uint32(_HASH_PRIMES[1]) + k[..., 2] * jnp.uint32(_HASH_PRIMES[2])
        h = h ^ (h >> 16)  # murmur3 finaliser: every input bit reaches the low (slot) bits
        h = h * jnp.uint32(0x85EBCA6B)
        h = h ^ (h >> 13)
        h = h * jnp.uint32(0xC2B2AE35)
        h = h ^ (h >> 16)
        slots.append((h & jnp.uint32(size - 1)).astype(jnp.int32))
    # materialised: otherwise XLA:CPU fuses the hashing into every gather that reads a slot and runs it as
    # scalar code per gathered element (measured: the lookups of 1e5 points take 2x as long)
    return jax.lax.optimization_barrier(jnp.stack(slots))


def voxel_tables(new_keys, new_ok, frame):
    """Hash tables of a write's voxels, and which cells are of the latest frame in their voxel.

    Each table slot holds the index of the cell with the largest ``(frame, index)`` among the valid cells
    hashing there (-1 if none). A cell's slot is *verified* when the cell held there is in the same voxel;
    then that cell's frame is exactly the latest frame of the voxel. Returns ``(tables, latest [M] bool)``:
    ``tables`` is two ``[S + 1]`` int32 arrays (entry ``S`` is scratch for invalid cells); ``latest`` is
    ``new_ok`` minus the cells that a verified slot shows to be older than the voxel's latest frame (a cell
    verified in neither table, because both slots hold other voxels, is kept).

    ``frame`` must be non-decreasing along the cells (``write.lift`` orders them frame by frame), so the
    largest ``(frame, index)`` is the largest index and the tables store plain indices.
    """
    m = new_keys.shape[0]
    size = table_size(m)
    slots = voxel_slots(new_keys, size)
    index = jnp.arange(m, dtype=jnp.int32)
    # one spare entry at ``size`` takes the invalid cells; kept (not sliced off) so no table is copied
    tables = tuple(jnp.full((size + 1,), -1, jnp.int32).at[jnp.where(new_ok, slots[i], size)].max(index)
                   for i in range(2))
    older = jnp.zeros((m,), bool)
    for i in range(2):
        held = jnp.maximum(tables[i][slots[i]], 0)
        same = (new_keys[held] == new_keys).all(axis=-1)
        older |= same & (frame[held] > frame)
    return tables, new_ok & ~older


def voxel_member(query_keys, new_keys, tables):
    """Whether each ``query_keys [N, 3]`` voxel holds a valid cell of the write (``voxel_tables``): O(N).

    True when either table's slot for the voxel holds a cell of that same voxel (never a false positive; a
    voxel whose two slots both hold other voxels of this write is missed).
    """
    slots = voxel_slots(query_keys, tables[0].shape[0] - 1)
    found = jnp.zeros(query_keys.shape[0], bool)
    for i in range(2):
        held = tables[i][slots[i]]
        found |= (held >= 0) & (new_keys[jnp.maximum(held, 0)] == query_keys).all(axis=-1)
    return found


def count_below(alive, write_id, threshold):
    """Number of alive points with ``write_id < threshold``."""
    return jnp.sum(alive & (write_id < threshold), dtype=jnp.int32)


def alive_id_span(alive, write_id):
    """``(first, last)``: the smallest and largest write id of the alive points (a sharded caller reduces these
    over shards too)."""
    return (jnp.min(jnp.where(alive, write_id, jnp.iinfo(jnp.int32).max)), jnp.max(jnp.where(alive, write_id, -1)))


def oldest_threshold(alive, write_id, count, first, last, alive_total, total=count_below):
    """Smallest ``t`` such that at least ``count`` alive points have ``write_id < t``.

    Write ids are unique, so evicting ``alive & (write_id < t)`` removes exactly the ``count`` oldest points.
    ``total(alive, write_id, t)`` counts them (a sharded caller passes a version that sums over shards);
    ``first``, ``last`` and ``alive_total`` are the smallest and largest alive ids and the number of alive
    points (``alive_id_span``), ``1 <= count <= alive_total``. Interpolation search on a bracket ``(a, b]``
    with ``total(a) < count <= total(b)``, from ``(first, last + 1]``: the guess assumes the alive ids evenly
    spread over the bracket; a step that does not halve the bracket is followed by a bisection step, so it
    takes at most ``2·log2(last - first)`` passes over the points, and a few on the id spreads writes leave.
    """
    f32 = jnp.float32

    def step(state):
        a, fa, b, fb, bisect = state
        guess = a + jnp.ceil((count - fa).astype(f32) / (fb - fa).astype(f32) * (b - a).astype(f32)).astype(jnp.int32)
        t = jnp.clip(jnp.where(bisect, a + (b - a) // 2, guess), a + 1, b - 1)
        ft = total(alive, write_id, t)
        enough = ft >= count
        na, nfa = jnp.where(enough, a, t), jnp.where(enough, fa, ft)
        nb, nfb = jnp.where(enough, t, b), jnp.where(enough, ft, fb)
        return na, nfa, nb, nfb, (nb - na) > (b - a) // 2

    i32 = jnp.int32
    state = (jnp.asarray(first, i32), jnp.zeros((), i32), jnp.asarray(last, i32) + 1, jnp.asarray(alive_total, i32),
             jnp.zeros((), bool))
    return jax.lax.while_loop(lambda s: s[2] - s[0] > 1, step, state)[2]


def prefix_count(mask):
    """Inclusive running count ``[N]`` int32 of ``mask [N]`` bool.

    A log-depth ``associative_scan``: on CPU ~3x faster than ``jnp.cumsum``'s lowering at N = 1e5..1e6.
    """
    return jax.lax.associative_scan(jnp.add, mask.astype(jnp.int32))


def free_slot_table(free, size: int, offset=0):
    """``[size]`` int32: the slot index of the ``offset + r``-th free slot (in slot order) for ``r < size``.

    Entries with no such slot hold ``free.shape[0]`` (an out-of-range slot: writes there are dropped).
    """
    n = free.shape[0]
    rank = prefix_count(free) - 1 + offset
    target = jnp.where(free & (rank >= 0) & (rank < size), rank, size)
    return jnp.full((size,), n, jnp.int32).at[target].set(jnp.arange(n, dtype=jnp.int32), mode="drop")
