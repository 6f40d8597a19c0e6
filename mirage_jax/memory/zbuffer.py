"""Deterministic z-buffer: per cell, the nearest point wins; exact depth ties go to the lowest key.

Scatters over the points (no sort): ``min`` of depth per cell, then, only if some cell has several points at
its minimum depth, ``min`` of the tie key among them, then the (unique) winner's index. The key is the
point's ``write_id``, an identity stored with the point, so the result depends neither on the order of the
points nor on how they are sharded.

Depths of drawn points are positive, and positive float32 values order exactly like their bit patterns read
as int32, so the depth ``min`` is an integer scatter on the bits (on CPU ~10x faster than a float ``min``
scatter, and exact).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KEY_NONE = jnp.iinfo(jnp.int32).max


def zbuffer(cell, z, key, num_cells: int):
    """Winners of ``num_cells`` cells among points ``cell [M]`` (``num_cells`` = dropped), ``z [M]``, ``key [M]``.

    ``z`` must be > 0 wherever ``cell < num_cells``. Returns ``(zmin [num_cells] int32 bits of the nearest
    depth (KEY_NONE where empty), kmin [num_cells] int32 (KEY_NONE where empty), winner [num_cells] int32 index
    into the M points, -1 where empty)``.
    """
    sentinel = num_cells
    zbits = jax.lax.bitcast_convert_type(z.astype(jnp.float32), jnp.int32)
    zmin = jnp.full((num_cells + 1,), KEY_NONE, jnp.int32).at[cell].min(zbits)
    at_min = (cell < sentinel) & (zbits == zmin[cell])
    tie_cell = jnp.where(at_min, cell, sentinel)
    index = jnp.arange(cell.shape[0], dtype=jnp.int32)

    def unique_nearest():  # common case: one point at the minimum depth per cell, it is the winner
        winner = jnp.full((num_cells + 1,), -1, jnp.int32).at[tie_cell].max(index)
        return jnp.where(winner >= 0, key[jnp.maximum(winner, 0)], KEY_NONE), winner

    def break_ties():
        kmin = jnp.full((num_cells + 1,), KEY_NONE, jnp.int32).at[tie_cell].min(key)
        win_cell = jnp.where(at_min & (key == kmin[cell]), cell, sentinel)
        return kmin, jnp.full((num_cells + 1,), -1, jnp.int32).at[win_cell].max(index)

    has_ties = jnp.sum(at_min, dtype=jnp.int32) > jnp.sum(zmin[:num_cells] != KEY_NONE, dtype=jnp.int32)
    kmin, winner = jax.lax.cond(has_ties, break_ties, unique_nearest)
    return zmin[:num_cells], kmin[:num_cells], winner[:num_cells]
