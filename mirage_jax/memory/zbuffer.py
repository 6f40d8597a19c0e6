"""Deterministic z-buffer: per cell, the nearest point wins; exact depth ties go to the lowest key.

Three scatters over the points (no sort): ``min`` of depth per cell, ``min`` of the tie key among the points
at that depth, then the (unique) winner's index. The key is the point's ``write_id``, an identity stored with
the point, so the result depends neither on the order of the points nor on how they are sharded.
"""

from __future__ import annotations

import jax.numpy as jnp

KEY_NONE = jnp.iinfo(jnp.int32).max


def zbuffer(cell, z, key, num_cells: int):
    """Winners of ``num_cells`` cells among points ``cell [M]`` (``num_cells`` = dropped), ``z [M]``, ``key [M]``.

    Returns ``(zmin [num_cells] f32 (+inf where empty), kmin [num_cells] int32 (KEY_NONE where empty),
    winner [num_cells] int32 index into the M points, -1 where empty)``.
    """
    sentinel = num_cells
    zmin = jnp.full((num_cells + 1,), jnp.inf, jnp.float32).at[cell].min(z)
    at_min = (cell < sentinel) & (z == zmin[cell])
    tie_cell = jnp.where(at_min, cell, sentinel)
    kmin = jnp.full((num_cells + 1,), KEY_NONE, jnp.int32).at[tie_cell].min(key)
    wins = at_min & (key == kmin[cell])
    win_cell = jnp.where(wins, cell, sentinel)
    winner = jnp.full((num_cells + 1,), -1, jnp.int32).at[win_cell].max(jnp.arange(cell.shape[0], dtype=jnp.int32))
    return zmin[:num_cells], kmin[:num_cells], winner[:num_cells]
