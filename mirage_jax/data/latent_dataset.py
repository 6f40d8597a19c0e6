"""The latent dataset that ``mirage-jax data encode`` writes and training reads: one record per training window.

A folder readable by TFDS without TensorFlow (``dataset_info.json``, ``features.json``, ArrayRecord shards
``latent_clips-<split>.array_record-XXXXX-of-YYYYY``) plus:

- ``encode_config.json``: the config the windows were encoded with; training checks the fields the records
  depend on (``ENCODED_FIELDS``) against its own config;
- ``captions.json`` (``[{"id", "caption"}]``, row order) and ``caption_embeddings.npy`` (``[N, L, D]`` bfloat16
  bits as uint16): every distinct caption of the source, and the empty prompt, encoded once;
- ``score_latent.npy`` (``[Tl + P, h, w, C]`` float32): the latent of an all-white video, the official constant
  "score" control (``models.vace.constant_score_latent``); a shorter one is its prefix (the encoder is causal).

A record holds one encoded window (``windows.encoded_window``): latents stored as bfloat16 (as uint16 bits:
TFDS tensors have no bfloat16), depths, cameras and the caption's id (``caption_id``, from its text).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ml_dtypes
import numpy as np

from mirage_jax.config import config_from_json, describe_differences, differences
from mirage_jax.data.training_example import ExampleSizes
from mirage_jax.models.text import prompt_key

DATASET_NAME = "latent_clips"
CONFIG_FILE = "encode_config.json"
CAPTIONS_FILE = "captions.json"
EMBEDDINGS_FILE = "caption_embeddings.npy"
SCORE_FILE = "score_latent.npy"
LATENT_FIELDS = ("target_latents", "preceding_latents", "reference_latents")
# The config fields the stored records depend on: training from the dataset needs the same values.
ENCODED_FIELDS = (
    "data.height", "data.width", "data.target_frames", "data.max_reference_candidates",
    "memory.num_preceding", "memory.max_references", "memory.reference_iou_threshold", "memory.voxel_size",
    "memory.depth_downsample", "latent.kind", "latent.channels", "latent.spatial_factor", "latent.vae.base_dim",
    "latent.vae.dim_mult", "latent.vae.num_res_blocks", "latent.vae.temporal_downsample", "latent.vae.z_dim",
    "text.kind", "text.max_length", "text.dim", "text.umt5.vocab_size", "text.umt5.num_layers",
    "text.umt5.num_heads", "text.umt5.head_dim", "text.umt5.ffn_dim",
)


def caption_id(caption: str) -> int:
    """A caption's id: the first 60 bits of its prompt key (``models.text.prompt_key``: the cleaned text)."""
    return int(prompt_key(caption)[:15], 16)


def features(config):
    """The TFDS ``FeaturesDict`` of a record for ``config``'s sizes."""
    import tensorflow_datasets as tfds  # noqa: PLC0415  (slow import: only when writing or checking)

    sizes = ExampleSizes.from_config(config)
    t, p, r, hw, c = sizes.targets, sizes.preceding, sizes.references, (sizes.height, sizes.width), sizes.channels
    def tensor(shape, dtype, encoding=tfds.features.Encoding.ZLIB):
        return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=encoding)

    scalar, raw = tfds.features.Encoding.NONE, tfds.features.Encoding.BYTES

    # Latents as raw bytes: bf16 latents barely compress (zlib would cost read time for no space), and without an
    # encoding TFDS stores integers as one varint each (slow to parse). Depths compress (zeros, smooth).
    return tfds.features.FeaturesDict({
        "clip_index": tensor((), np.int64, scalar), "t0": tensor((), np.int64, scalar),
        "caption_id": tensor((), np.int64, scalar),
        "target_latents": tensor((t, *hw, c), np.uint16, raw), "preceding_latents": tensor((p, *hw, c), np.uint16, raw),
        "preceding_available": tensor((), np.int64, scalar),
        "reference_latents": tensor((r, *hw, c), np.uint16, raw), "reference_available": tensor((), np.int64, scalar),
        "target_depth": tensor((t, *hw), np.float32), "memory_depth": tensor(hw, np.float32),
        "camera_intrinsics": tensor((t + p, 3, 3), np.float32, raw),
        "camera_c2w": tensor((t + p, 4, 4), np.float32, raw),
    })


class RecordWriter:
    """Serialises records of ``features`` to bytes that depend only on the record: protobuf writes the feature map
    in a per-process hash order unless asked for its deterministic (key-sorted) form, which TFDS does not ask."""

    def __init__(self, features):
        from tensorflow_datasets.core.example_serializer import ExampleSerializer  # noqa: PLC0415

        self.features = features
        self.serializer = ExampleSerializer(features.get_serialized_info())

    def __call__(self, record: dict) -> bytes:
        example = self.serializer.get_tf_example(self.features.encode_example(record))
        return example.SerializeToString(deterministic=True)


def to_record(window: dict, caption: str) -> dict:
    """An encoded window (``windows.encoded_window``) as a record: latents as bfloat16 bits."""
    record = dict(window, caption_id=np.int64(caption_id(caption)))
    for key in LATENT_FIELDS:
        record[key] = np.asarray(window[key], np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    return record


def from_record(record: dict) -> dict:
    """A stored record as an encoded window (latents as bfloat16 arrays)."""
    window = {k: np.asarray(v) for k, v in record.items()}
    for key in LATENT_FIELDS:
        window[key] = window[key].view(ml_dtypes.bfloat16)
    return window


def is_latent_dataset(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a dataset written by ``data encode`` (rather than a ``pose_clips`` one)."""
    return (Path(folder) / CONFIG_FILE).is_file() and (Path(folder) / "dataset_info.json").is_file()


class CaptionTable:
    """The encoded captions of a latent dataset: ``context(caption_id) -> [L, D]`` float32."""

    def __init__(self, folder: str | os.PathLike):
        folder = Path(folder)
        entries = json.loads((folder / CAPTIONS_FILE).read_text())
        self.rows = {int(e["id"]): i for i, e in enumerate(entries)}
        self.embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r", allow_pickle=False)
        if self.embeddings.shape[0] != len(entries):
            raise ValueError(f"{folder / EMBEDDINGS_FILE}: {self.embeddings.shape[0]} rows for {len(entries)} "
                             f"captions in {CAPTIONS_FILE}; re-run data encode")

    def context(self, caption_id: int) -> np.ndarray:
        row = self.rows.get(int(caption_id))
        if row is None:
            raise ValueError(f"caption_id {caption_id}: not in the dataset's caption table; re-run data encode")
        return np.asarray(self.embeddings[row]).view(ml_dtypes.bfloat16).astype(np.float32)

    def caption_context(self, caption: str) -> np.ndarray:
        """The context of a caption by its text (the empty prompt is always in the table)."""
        return self.context(caption_id(caption))


def write_caption_table(folder: Path, captions: list[str], embeddings: np.ndarray) -> None:
    """Writes ``captions.json`` and ``caption_embeddings.npy`` (``embeddings [N, L, D]``) atomically."""
    bits = np.asarray(embeddings, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    save_array_atomic(folder / EMBEDDINGS_FILE, bits)
    entries = [{"id": caption_id(c), "caption": c} for c in captions]
    write_text_atomic(folder / CAPTIONS_FILE, json.dumps(entries, indent=1))


def write_score_latent(folder: Path, score: np.ndarray) -> None:
    save_array_atomic(folder / SCORE_FILE, np.asarray(score, np.float32))


def score_latent(folder: str | os.PathLike, num_latents: int) -> np.ndarray:
    """The stored constant score latent's first ``num_latents`` latents ``[num_latents, h, w, C]``."""
    score = np.load(Path(folder) / SCORE_FILE, allow_pickle=False)
    if num_latents > score.shape[0]:
        raise ValueError(f"{Path(folder) / SCORE_FILE}: holds {score.shape[0]} latents, {num_latents} needed")
    return score[:num_latents]


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``path`` through a hidden temporary file and a rename: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_array_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` (no pickles) through a hidden temporary file and a rename, as ``write_text_atomic``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


def check_encoded_config(folder: str | os.PathLike, config) -> None:
    """``ValueError`` naming every field of ``ENCODED_FIELDS`` where ``config`` differs from the encode's."""
    stored, _ = config_from_json((Path(folder) / CONFIG_FILE).read_text())
    diff = differences(stored, config, ENCODED_FIELDS)
    if diff:
        raise ValueError(f"config.data.source: the latent dataset {str(folder)!r} was encoded with other settings: "
                         f"{describe_differences(diff, 'dataset', 'config')}; train with the encode's values or "
                         "encode again")


class LatentWindows:
    """Random-access source of a latent dataset split: ``[i]`` → ``(encoded window, caption_id)``."""

    def __init__(self, folder: str | os.PathLike, split: str = "train"):
        from mirage_jax.data.tfds_io import folder_source  # noqa: PLC0415  (TFDS import is slow)

        self.records = folder_source(folder, split)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        return from_record(self.records[index])
