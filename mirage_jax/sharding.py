"""Device meshes and logical-axis sharding rules (DESIGN.md §8).

Mesh axes are ``data``, ``fsdp`` and ``tensor``. Parameters and activations carry *logical* axis names
("embed", "mlp", "heads", ...) and the config's ``mesh.rules`` map them to mesh axes, so one program runs
on one CPU, 8 simulated devices, a GPU node or a TPU pod.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """Parses ``"fsdp=8,tensor=1"`` into ``{"fsdp": 8, "tensor": 1}``; unknown axes are a ``ValueError``."""
    sizes: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in MESH_AXES or not value.lstrip("-").isdigit():
            raise ValueError(f"mesh spec {spec!r}: expected comma-separated axis=size with axes {MESH_AXES}")
        sizes[name] = int(value)
    return sizes


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh over ``devices`` (default: all); one size may be -1 (the rest).

    Axes are ``AxisType.Auto`` (GSPMD style: shardings from ``jit`` in/out shardings and constraints).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"mesh sizes {dict(zip(MESH_AXES, sizes))} do not divide {len(devices)} devices")
        sizes[sizes.index(-1)] = len(devices) // known
    if any(s < 1 for s in sizes) or int(np.prod(sizes)) != len(devices):
        raise ValueError(
            f"mesh sizes {dict(zip(MESH_AXES, sizes))} need {int(np.prod(sizes))} devices, have {len(devices)}"
        )
    grid = np.asarray(devices, dtype=object).reshape(sizes)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_from_config(mesh_config, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The mesh described by a config's ``mesh`` section."""
    return make_mesh(mesh_config.data, mesh_config.fsdp, mesh_config.tensor, devices)


def logical_to_spec(logical_axes: Sequence[str | None], rules) -> PartitionSpec:
    """Maps logical axis names to a ``PartitionSpec`` with ``rules`` (pairs ``(logical, mesh axes|None)``).

    A mesh axis already used by an earlier dimension is not reused (the dimension stays replicated).
    """
    table = {name: target for name, target in rules}
    used: set[str] = set()
    spec = []
    for name in logical_axes:
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else (axes or None))
    return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, logical_axes: Sequence[str | None], rules) -> NamedSharding:
    """``NamedSharding`` on ``mesh`` for an array whose dimensions have ``logical_axes``."""
    return NamedSharding(mesh, logical_to_spec(logical_axes, rules))
