"""Logical axis names on parameters and activations, mapped to mesh axes by the config's rules (docs/design.md §8).

Every parameter is an ``nnx.Variable`` with metadata ``logical_axes`` (one name or ``None`` per dimension).
``state_shardings(state, mesh, rules)`` turns a model state (``nnx.split(model)[1]``) into the matching pytree
of ``NamedSharding``; ``constrain(x, axes, rules)`` pins an activation when a mesh is set (``jax.set_mesh``) and
is a no-op otherwise. A mesh axis whose size does not divide a dimension is dropped for that dimension
(the dimension stays replicated on it) so odd shapes never fail to shard.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from mirage_jax.sharding import logical_to_spec


def fitted_spec(shape: Sequence[int], logical_axes: Sequence[str | None], rules, mesh_shape) -> PartitionSpec:
    """The ``PartitionSpec`` for ``logical_axes`` under ``rules``, keeping only mesh axes that divide the dims.

    ``mesh_shape``: mapping mesh axis name -> size (``mesh.shape``).
    """
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match an array of shape {tuple(shape)}")
    spec = logical_to_spec(logical_axes, rules)
    fitted = []
    for dim, entry in zip(shape, spec):
        axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
        kept, size = [], 1
        for axis in axes:
            if dim % (size * mesh_shape[axis]) == 0:
                kept.append(axis)
                size *= mesh_shape[axis]
        fitted.append(kept[0] if len(kept) == 1 else (tuple(kept) or None))
    return PartitionSpec(*fitted)


def variable_axes(variable: nnx.Variable) -> tuple[str | None, ...]:
    """The logical axes of a variable (all ``None`` when it carries none)."""
    axes = variable.get_metadata().get("logical_axes")
    return tuple(axes) if axes is not None else (None,) * len(variable.shape)


def state_shardings(state, mesh: jax.sharding.Mesh, rules):
    """``NamedSharding`` pytree with the structure of ``state`` (an ``nnx.State`` or abstract state)."""

    def one(variable):
        spec = fitted_spec(variable.shape, variable_axes(variable), rules, mesh.shape)
        return variable.replace(NamedSharding(mesh, spec))

    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def constrain(x: jax.Array, logical_axes: Sequence[str | None], rules) -> jax.Array:
    """``with_sharding_constraint`` by logical axes under the current mesh (no-op when no mesh is set)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not rules:
        return x
    return jax.lax.with_sharding_constraint(x, fitted_spec(x.shape, logical_axes, rules, dict(mesh.shape)))
