"""Building and reading ``pose_clips`` TFDS datasets (ArrayRecord, no TensorFlow needed).

``build(config, data_dir)`` prepares the dataset once (a later call with the same config reuses it);
``data_source(config, data_dir, split)`` returns a random-access source of clip dicts for Grain.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mirage_jax.data.pose_clips import pose_clips_dataset_builder as pcb

DEFAULT_DATA_DIR = Path(os.environ.get("MIRAGE_DATA_DIR", Path.home() / ".cache" / "mirage_jax" / "tfds"))


def builder(config: pcb.PoseClipsConfig, data_dir: str | os.PathLike | None = None) -> pcb.Builder:
    """The ``pose_clips`` builder for ``config`` writing ArrayRecord under ``data_dir``."""
    return pcb.Builder(config=config, data_dir=str(data_dir or DEFAULT_DATA_DIR), file_format="array_record")


def build(config: pcb.PoseClipsConfig, data_dir: str | os.PathLike | None = None, progress=None) -> Path:
    """Prepares the dataset (no-op when already there); returns its folder. ``progress`` wraps clip iterators."""
    b = builder(config, data_dir)
    b.progress = progress
    b.download_and_prepare()
    return Path(b.data_dir)


def data_source(config: pcb.PoseClipsConfig, data_dir: str | os.PathLike | None = None, split: str = "train"):
    """Random-access source (``len``, ``[i]`` → record dict of numpy arrays) of a prepared dataset."""
    b = builder(config, data_dir)
    if not b.is_prepared():
        raise ValueError(f"data_dir: dataset {config.name!r} is not prepared under {b.data_dir!r}; build it first")
    return b.as_data_source(split=split)


def record_to_clip(record: dict) -> dict:
    """A stored record as a clip dict (numpy arrays, ``caption`` as str)."""
    clip = {k: np.asarray(v) for k, v in record.items() if k != "caption"}
    caption = record["caption"]
    clip["caption"] = caption.decode() if isinstance(caption, bytes) else str(caption)
    return clip
