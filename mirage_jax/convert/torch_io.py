"""Reading PyTorch checkpoints safely and loading them strictly into NNX modules (the VAE and umT5 converters).

``read_state(source)``: every tensor of a ``.pth`` (``torch.load(weights_only=True)``, only if torch is
installed: nothing else is unpickled), a safetensors file or a folder of shards, as float32 numpy.
``load_strict(module, tensors, to_path, to_layout, what)``: every parameter set exactly once, every problem
(missing, unexpected, mis-shaped names) listed in one ``ValueError``.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirage_jax.convert.safetensors_io import open_checkpoint
from mirage_jax.convert.weights_check import weight_problem


def load_strict(module: nnx.Module, tensors: Iterable[tuple[str, np.ndarray]], to_path, to_layout, what: str):
    """Strictly loads named torch-layout arrays into ``module``'s ``nnx.Param`` s (in place); returns it.

    ``to_path(name) -> state path tuple`` (``None``: no such parameter); ``to_layout(value, target_shape)``
    converts the array. Missing, unexpected, shape-mismatched names and tensors that are not weights (integer,
    NaN or infinite: ``mirage_jax.convert.weights_check``) are listed together in one ``ValueError``.
    """
    flat = {tuple(path): var for path, var in nnx.to_flat_state(nnx.state(module, nnx.Param))}
    seen, unexpected, mismatched, unusable = set(), [], [], []
    for name, value in tensors:
        path = to_path(name)
        if path not in flat:
            unexpected.append(name)
            continue
        target = flat[path]
        problem = weight_problem(np.asarray(value))
        if problem is not None:
            unusable.append(f"{name}: {problem}")
            continue
        converted = to_layout(value, target.value.shape)
        if converted.shape != target.value.shape:
            mismatched.append(f"{name}: {tuple(np.shape(value))} -> {converted.shape}, expected {target.value.shape}")
            continue
        target.value = jnp.asarray(converted)
        seen.add(path)
    missing = [".".join(map(str, p)) for p in flat if p not in seen]
    problems = {"missing": missing, "unexpected": unexpected, "shape mismatches": mismatched,
                "not usable as weights": unusable}
    if any(problems.values()):
        listed = "; ".join(f"{kind} ({len(names)}): {names[:20]}" for kind, names in problems.items() if names)
        raise ValueError(f"{what} checkpoint does not match the model: {listed}")
    nnx.update(module, nnx.State.from_flat_path(flat))
    return module


def _read_pth(path: Path) -> Mapping[str, np.ndarray]:
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        raise ValueError(
            f"{path}: reading a .pth needs torch (torch.load(weights_only=True)); without torch, convert it to "
            "safetensors elsewhere and pass that file"
        ) from None
    if not path.is_file():
        raise ValueError(f"--source {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refuses anything but tensors and plain containers
        lines = [line.strip() for line in str(err).splitlines() if "error:" in line] or [type(err).__name__]
        reason = lines[-1].split(" was not an allowed")[0]
        raise ValueError(f"{path}: refused, not a plain tensor state dict (torch.load weights_only: {reason})") from err
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict {{name: tensor}}, got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: expected a state dict {{name: tensor}}; not tensors: {bad[:20]}")
    return {k: v.float().numpy() for k, v in state.items()}


def read_state(source: str | Path) -> dict[str, np.ndarray]:
    """All tensors (float32 numpy) of a ``.pth`` (weights_only), a safetensors file, or a folder of shards."""
    source = Path(source)
    if source.suffix in (".pth", ".pt", ".ckpt"):
        return dict(_read_pth(source))
    if not source.exists():
        raise ValueError(f"--source {str(source)!r} does not exist")
    return {name: np.asarray(file[name], np.float32) for name, file in open_checkpoint(source).items()}
