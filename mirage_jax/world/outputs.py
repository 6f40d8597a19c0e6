"""Writing a rollout to disk: ``generated.mp4``, ``chunk_XXX.mp4``, ``metadata.json``, optional memory snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from mirage_jax.world.video import write_mp4


def _jsonable(value):
    """Config values (tuples, numpy scalars) as JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_memory_snapshot(path: str | Path, state) -> Path:
    """Saves a cache state (a pytree of arrays, e.g. ``LatentMemory``) as an ``.npz`` of its named leaves."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    arrays = {jax.tree_util.keystr(k).strip(".[]'\""): np.asarray(v) for k, v in leaves}
    path = Path(path)
    np.savez_compressed(path, **arrays)
    return path


def save_rollout(result, out_dir: str | Path, config=None, *, fps: int = 16, save_memory: bool = False,
                 extra: dict | None = None) -> dict:
    """Writes the rollout's videos and ``metadata.json`` under ``out_dir``; returns ``{name: file name}``, the
    names relative to ``out_dir`` (as ``metadata.json`` records them, so the folder can be moved)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"video": write_mp4(out / "generated.mp4", result.video, fps).name}
    paths["chunks"] = [write_mp4(out / f"chunk_{i:03d}.mp4", v, fps).name for i, v in enumerate(result.chunk_videos)]
    if save_memory and result.cache is not None:
        paths["memory"] = save_memory_snapshot(out / "memory.npz", result.cache).name
    metadata = {
        "settings": result.settings,
        "chunks": result.chunks,
        "files": paths,
        "config": _jsonable(config.to_dict()) if config is not None else None,
        **(extra or {}),
    }
    (out / "metadata.json").write_text(json.dumps(_jsonable(metadata), indent=2))
    paths["metadata"] = "metadata.json"
    return paths
