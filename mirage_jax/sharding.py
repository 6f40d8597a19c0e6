"""Device meshes and logical-axis sharding rules (docs/design.md §8).

Mesh axes are ``data``, ``fsdp``, ``context`` (the token sequence, ``mirage_jax.models.context_parallel``)
and ``tensor``. Parameters and activations carry *logical* axis names
("embed", "mlp", "heads", ...) and the config's ``mesh.rules`` map them to mesh axes, so one program runs
on one CPU, 8 simulated devices, a GPU node or a TPU pod.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "context", "tensor")


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """Parses ``"fsdp=8,tensor=1"`` into ``{"fsdp": 8, "tensor": 1}``; unknown axes are a ``ValueError``."""
    sizes: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, value = item.partition("=")
        if not sep or name not in MESH_AXES or not value.lstrip("-").isdigit():
            raise ValueError(f"mesh spec {spec!r}: expected comma-separated axis=size with axes {MESH_AXES}")
        sizes[name] = int(value)
    return sizes


def resolve_sizes(sizes: dict[str, int], device_count: int, field: str = "mesh") -> dict[str, int]:
    """``{axis: size}`` with at most one ``-1`` (the remaining devices) resolved for ``device_count`` devices;
    ``ValueError`` naming ``field`` when they do not fit."""
    sizes = dict(sizes)
    bad = {k: v for k, v in sizes.items() if not (v == -1 or v >= 1)}
    if bad or list(sizes.values()).count(-1) > 1:
        raise ValueError(f"{field} sizes {sizes}: expected sizes >= 1 and at most one -1 (the remaining devices)")
    known = int(np.prod([v for v in sizes.values() if v != -1]))
    for name, value in sizes.items():
        if value == -1:
            if device_count % known:
                raise ValueError(f"{field}.{name}=-1: the other sizes ({known}) do not divide {device_count} devices")
            sizes[name] = device_count // known
    return sizes


def make_mesh(data: int = 1, fsdp: int = -1, tensor: int = 1, devices: Sequence[jax.Device] | None = None,
              context: int = 1) -> Mesh:
    """A ``(data, fsdp, context, tensor)`` mesh over ``devices`` (default: all); one size may be -1 (the rest).

    Axes are ``AxisType.Auto`` (GSPMD style: shardings from ``jit`` in/out shardings and constraints).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_sizes({"data": data, "fsdp": fsdp, "context": context, "tensor": tensor}, len(devices))
    if int(np.prod(list(sizes.values()))) != len(devices):
        raise ValueError(f"mesh sizes {sizes} need {int(np.prod(list(sizes.values())))} devices, have {len(devices)}")
    grid = np.asarray(devices, dtype=object).reshape([sizes[a] for a in MESH_AXES])
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_sizes(config, device_count: int, process_count: int = 1) -> dict[str, int]:
    """The resolved ``{data, fsdp, context, tensor}`` sizes of ``config.mesh`` for ``device_count`` devices.

    A mesh without a -1 axis may use fewer devices than there are: a single process uses the first ones (e.g.
    the tiny config's one-device mesh under 8 simulated devices); a multi-process run multiplies the ``data``
    axis to cover every device (pure data parallelism across processes).
    """
    sizes = resolve_sizes({a: int(config.mesh[a]) for a in MESH_AXES}, device_count, "config.mesh")
    total = int(np.prod(list(sizes.values())))
    if process_count > 1 and total < device_count:  # every process must hold devices: replicate over `data`
        if device_count % total:
            raise ValueError(f"config.mesh sizes {sizes}: expected sizes dividing the device count {device_count}")
        sizes["data"] *= device_count // total
        total = device_count
    if total > device_count:
        raise ValueError(f"config.mesh sizes {sizes}: need {total} devices, there are {device_count}")
    return sizes


def mesh_for_config(config) -> Mesh:
    """``config.mesh`` over the first ``data·fsdp·context·tensor`` devices (all of them when an axis is -1)."""
    sizes = mesh_sizes(config, jax.device_count(), jax.process_count())
    return make_mesh(**sizes, devices=jax.devices()[: int(np.prod(list(sizes.values())))])


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
