"""TFDS ``GeneratorBasedBuilder`` for pose-annotated clips, written as ArrayRecord and read without TensorFlow.

Only ``Tensor`` (ZLIB-encoded) and ``Text`` features are used: ``Video``/``Image`` from numpy need TensorFlow.
A :class:`PoseClipsConfig` fixes the source and the frame size; its ``name`` encodes every parameter and, for
the ``npz`` and ``re10k`` sources, a fingerprint of the input files (``sources.input_fingerprint``), so a
different configuration or changed inputs make a different dataset folder (``<data_dir>/pose_clips/<name>/<version>``).

The same builder runs on Apache Beam (the optional ``beam`` extra): with ``Builder.beam`` set, each split is a
Beam transform making one clip per element, which TFDS runs on the runner of its ``DownloadConfig``
(``tfds_io.build(..., beam_runner=...)``) and writes as the same records as the plain build.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mirage_jax.data import sources, synthetic

SOURCES = ("procedural", "npz", "re10k")
INPUT_FOLDERS = {"npz": ("input_dir",), "re10k": ("cameras_dir", "frames_dir")}  # the files a source reads


@dataclasses.dataclass(eq=False)
class PoseClipsConfig(tfds.core.BuilderConfig):
    """Source and size of a ``pose_clips`` dataset (build with :func:`make_config` for a consistent name)."""

    source: str = "procedural"
    height: int = 64
    width: int = 112
    num_frames: int = 49  # procedural clips; npz/re10k clips keep their length (capped by this if > 0)
    num_clips: int = 32  # procedural training clips
    num_test_clips: int = 4  # procedural test clips (seeds from sources.TEST_SEED_OFFSET)
    trajectories: tuple[str, ...] = synthetic.TRAJECTORIES
    dynamic_objects: int = 0
    seed: int = 0
    input_dir: str = ""  # npz: folder of geometry.npz samples
    cameras_dir: str = ""  # re10k: folder of <clip>.txt camera files
    frames_dir: str = ""  # re10k: folder of <clip>/ frame folders
    input_fingerprint: str = ""  # npz/re10k: digest of the input files (set by make_config)


def make_config(source: str = "procedural", **fields) -> PoseClipsConfig:
    """A config named after a hash of all its fields and of the input files (so caches never mix different
    datasets: a changed input folder builds a new one)."""
    if source not in SOURCES:
        raise ValueError(f"source: expected one of {SOURCES}, got {source!r}")
    probe = PoseClipsConfig(name="probe", source=source, **fields)
    if probe.height < 1 or probe.width < 1 or probe.num_frames < 1:
        raise ValueError(f"height/width/num_frames: expected positive, got {probe.height}/{probe.width}/"
                         f"{probe.num_frames}")
    if source == "procedural":
        if probe.num_clips < 1:
            raise ValueError(f"num_clips: expected >= 1, got {probe.num_clips}")
        bad = [t for t in probe.trajectories if t not in synthetic.TRAJECTORIES]
        if bad or not probe.trajectories:
            raise ValueError(f"trajectories: expected a non-empty subset of {synthetic.TRAJECTORIES}, got "
                             f"{probe.trajectories}")
    if source == "npz" and not probe.input_dir:
        raise ValueError("input_dir: required for source 'npz'")
    if source == "re10k" and not (probe.cameras_dir and probe.frames_dir):
        raise ValueError("cameras_dir and frames_dir: required for source 're10k'")
    folders = {name: getattr(probe, name) for name in INPUT_FOLDERS.get(source, ())}
    for name, folder in folders.items():
        if not Path(folder).is_dir():
            raise ValueError(f"{name}: no folder at {folder!r}")
    if folders:
        fields = fields | {"input_fingerprint": sources.input_fingerprint(*folders.values())}
        probe = PoseClipsConfig(name="probe", source=source, **fields)
    values = {f.name: getattr(probe, f.name) for f in dataclasses.fields(PoseClipsConfig)
              if f.name in fields or f.name == "source"}
    digest = hashlib.sha1(repr(sorted(values.items())).encode()).hexdigest()[:10]
    desc = f"{source} clips {probe.height}x{probe.width}: " + ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
    return PoseClipsConfig(name=f"{source}_{probe.height}x{probe.width}_{digest}", description=desc,
                           source=source, **fields)


class Builder(tfds.core.GeneratorBasedBuilder):
    """Pose-annotated clips. Features per record (N frames, fixed H x W per config):

    ``clip_id`` int64, ``frames`` uint8 [N,H,W,3], ``depths`` f32 [N,H,W] (metric z-depth, 0 = invalid),
    ``intrinsics`` f32 [N,3,3], ``poses_c2w`` f32 [N,4,4] (OpenCV c2w), ``masks`` bool [N,H,W] (True = static),
    ``caption`` text.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [make_config("procedural")]
    # Set by the CLI to wrap each split's example iterator (a tqdm progress bar); identity otherwise.
    progress: Callable[[Iterator, int | None, str], Iterator] | None = None
    # Set by tfds_io.build for a Beam build: splits are Beam transforms (progress is then Beam's to report).
    beam: bool = False

    def _info(self) -> tfds.core.DatasetInfo:
        h, w = self.builder_config.height, self.builder_config.width
        zlib = tfds.features.Encoding.ZLIB
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "clip_id": tfds.features.Tensor(shape=(), dtype=np.int64),
                "frames": tfds.features.Tensor(shape=(None, h, w, 3), dtype=np.uint8, encoding=zlib),
                "depths": tfds.features.Tensor(shape=(None, h, w), dtype=np.float32, encoding=zlib),
                "intrinsics": tfds.features.Tensor(shape=(None, 3, 3), dtype=np.float32),
                "poses_c2w": tfds.features.Tensor(shape=(None, 4, 4), dtype=np.float32),
                "masks": tfds.features.Tensor(shape=(None, h, w), dtype=np.bool_, encoding=zlib),
                "caption": tfds.features.Text(),
            }),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        c = self.builder_config
        if c.source == "procedural":
            splits = {
                "train": sources.procedural_clips(c.num_clips, c.num_frames, c.height, c.width, c.trajectories,
                                                  c.dynamic_objects, c.seed),
                "test": sources.procedural_clips(c.num_test_clips, c.num_frames, c.height, c.width, c.trajectories,
                                                 c.dynamic_objects, c.seed + sources.TEST_SEED_OFFSET),
            }
        elif c.source == "npz":
            splits = {"train": sources.npz_folder_clips(c.input_dir, c.height, c.width)}
        else:
            splits = {"train": sources.realestate10k_clips(c.cameras_dir, c.frames_dir, c.height, c.width,
                                                           c.num_frames)}
        return {split: self._generate_examples(clips, split) for split, clips in splits.items()}

    def _generate_examples(self, clips: sources.ClipSource, split: str):
        """The split's ``(clip_id, record)`` pairs: a generator, or with ``beam`` a Beam transform over the clip ids
        (TFDS tells the two apart by type), both made by :func:`clip_example`."""
        make = functools.partial(clip_example, clips)
        if self.beam:
            import apache_beam as beam  # noqa: PLC0415  (optional extra: only Beam builds need it)

            return "Clip ids" >> beam.Create(range(len(clips))) | "Make clips" >> beam.Map(make)
        examples = map(make, range(len(clips)))
        return examples if self.progress is None else self.progress(examples, len(clips), split)


def clip_example(clips: sources.ClipSource, clip_id: int) -> tuple[int, dict]:
    """Clip ``clip_id`` of ``clips`` as a TFDS ``(key, features)`` pair (module-level: Beam pickles it)."""
    clip = clips.clip(clip_id)
    return clip_id, {
        "clip_id": clip_id,
        "frames": clip["frames"],
        "depths": clip["depths"].astype(np.float32),
        "intrinsics": clip["intrinsics"].astype(np.float32),
        "poses_c2w": clip["poses_c2w"].astype(np.float32),
        "masks": clip["masks"].astype(bool),
        "caption": clip["caption"],
    }
