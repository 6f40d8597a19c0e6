"""The bounded-capacity policy's building blocks: voxel de-duplication, oldest-first eviction, slot placement.

All are O(N) or O(N log M) passes over the N slots with static shapes (no sort of N): new points' voxels are
sorted (M = cells of one write) and every stored point binary-searches its voxel among them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Voxel coordinates are clamped to ±VOXEL_LIMIT (at 5 cm voxels: ±5e7 m, far beyond any scene).
VOXEL_LIMIT = 2**30
_NO_VOXEL = jnp.iinfo(jnp.int32).max  # sentinel key of a cell that is not stored; never a clamped voxel


def voxel_keys(points, voxel_size: float):
    """Integer voxel coordinates ``[..., 3]`` int32 of ``points [..., 3]``: ``floor(p · (1/voxel_size))``.

    Multiplying by the float32 reciprocal (rather than dividing) makes the keys reproducible bit for bit.
    """
    inv = jnp.float32(1.0 / voxel_size)
    cells = jnp.floor(jnp.asarray(points, jnp.float32) * inv)
    return jnp.clip(cells, -VOXEL_LIMIT, VOXEL_LIMIT).astype(jnp.int32)


def _lex_less(a, b):
    """Lexicographic ``a < b`` for triples of int32 arrays."""
    return (a[0] < b[0]) | ((a[0] == b[0]) & ((a[1] < b[1]) | ((a[1] == b[1]) & (a[2] < b[2]))))


def group_ids(sorted_cols):
    """Dense group id ``[M]`` int32 of lexicographically sorted key columns (0, 0, 1, 2, 2, ...)."""
    changed = jnp.zeros(sorted_cols[0].shape[0] - 1, bool)
    for col in sorted_cols:
        changed |= col[1:] != col[:-1]
    return jnp.cumsum(jnp.concatenate([jnp.ones((1,), bool), changed]), dtype=jnp.int32) - 1


def sort_new_voxels(new_keys, new_ok, frame):
    """Sorts a write's cells by voxel. Returns ``(table, latest)``.

    ``table``: the three sorted key columns ``[M]`` (cells with ``new_ok`` False get a sentinel voxel);
    ``latest [M]``: ``new_ok`` and no later frame of this write has a cell in the same voxel.
    """
    m = new_keys.shape[0]
    cols = [jnp.where(new_ok, new_keys[:, i], _NO_VOXEL) for i in range(3)]
    *table, frame_sorted, index = jax.lax.sort([*cols, frame, jnp.arange(m, dtype=jnp.int32)], num_keys=4)
    group = group_ids(table)
    last_frame = jnp.full((m,), -1, jnp.int32).at[group].max(frame_sorted)
    latest = jnp.zeros((m,), bool).at[index].set(frame_sorted == last_frame[group])
    return table, latest & new_ok


def voxel_member(query_keys, table):
    """Whether each ``query_keys [N, 3]`` voxel is in ``table`` (sorted key columns from ``sort_new_voxels``).

    A binary search per query: O(N log M), no sort of the N stored points.
    """
    m = table[0].shape[0]
    query = [query_keys[:, i] for i in range(3)]
    lo = jnp.zeros(query_keys.shape[0], jnp.int32)
    hi = jnp.full(query_keys.shape[0], m, jnp.int32)

    def step(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) // 2
        probe = [col[jnp.minimum(mid, m - 1)] for col in table]
        go_right = (lo < hi) & _lex_less(probe, query)
        go_left = (lo < hi) & ~go_right
        return jnp.where(go_right, mid + 1, lo), jnp.where(go_left, mid, hi)

    lo, _ = jax.lax.fori_loop(0, max(1, m.bit_length()), step, (lo, hi))
    found = [col[jnp.minimum(lo, m - 1)] for col in table]
    return (lo < m) & (found[0] == query[0]) & (found[1] == query[1]) & (found[2] == query[2])


def count_below(alive, write_id, threshold):
    """Number of alive points with ``write_id < threshold``."""
    return jnp.sum(alive & (write_id < threshold), dtype=jnp.int32)


def oldest_threshold(alive, write_id, count, limit, total=count_below):
    """Smallest ``t`` such that at least ``count`` alive points have ``write_id < t`` (bisection on [0, limit]).

    Write ids are unique, so evicting ``alive & (write_id < t)`` removes exactly the ``count`` oldest points.
    ``total(alive, write_id, t)`` counts them (a sharded caller passes a version that sums over shards).
    """

    def step(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = total(alive, write_id, mid) >= count
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo, _ = jax.lax.fori_loop(0, 32, step, (jnp.zeros((), jnp.int32), jnp.asarray(limit, jnp.int32)))
    return lo


def free_slot_table(free, size: int, offset=0):
    """``[size]`` int32: the slot index of the ``offset + r``-th free slot (in slot order) for ``r < size``.

    Entries with no such slot hold ``free.shape[0]`` (an out-of-range slot: writes there are dropped).
    """
    n = free.shape[0]
    rank = jnp.cumsum(free, dtype=jnp.int32) - 1 + offset
    target = jnp.where(free & (rank >= 0) & (rank < size), rank, size)
    return jnp.full((size,), n, jnp.int32).at[target].set(jnp.arange(n, dtype=jnp.int32), mode="drop")
