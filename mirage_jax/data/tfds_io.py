"""Building and reading ``pose_clips`` TFDS datasets (ArrayRecord, no TensorFlow needed).

``build(config, data_dir)`` prepares the dataset once (a later call with the same config reuses it; processes
building the same dataset at once take turns, and all but the first reuse its result);
``data_source(config, data_dir, split)`` returns a random-access source of clip dicts for Grain.
``build(..., beam_runner="DirectRunner")`` (or ``beam_options="--runner=DataflowRunner ..."``) builds with Apache
Beam instead: the same records, made by the runner's workers (the optional ``beam`` extra).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shlex
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.utils import tqdm_utils

from mirage_jax.data.npz import error_reason
from mirage_jax.data.pose_clips import pose_clips_dataset_builder as pcb

DEFAULT_DATA_DIR = Path(os.environ.get("MIRAGE_DATA_DIR", Path.home() / ".cache" / "mirage_jax" / "tfds"))


def builder(config: pcb.PoseClipsConfig, data_dir: str | os.PathLike | None = None) -> pcb.Builder:
    """The ``pose_clips`` builder for ``config`` writing ArrayRecord under ``data_dir``."""
    with _without_notice("absl", CUSTOM_CONFIG_NOTICE):
        return pcb.Builder(config=config, data_dir=str(data_dir or DEFAULT_DATA_DIR), file_format="array_record")


# TFDS's absl warning "Using custom data configuration: <the whole config>" (~560 characters, at every builder
# made): every pose_clips config is a custom one by design, so it tells nothing.
CUSTOM_CONFIG_NOTICE = "Using custom data configuration"
# Beam's warning at import when its Google Cloud clients are absent: nothing here uses BigQuery.
BEAM_GCP_NOTICE = "apitools not found"


class _DropNotice(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


@contextlib.contextmanager
def _without_notice(logger_name: str | None, prefix: str):
    """Inside the block, the logger ``logger_name`` (None: the root logger) drops only that one notice."""
    logger, notice_filter = logging.getLogger(logger_name), _DropNotice(prefix)
    logger.addFilter(notice_filter)
    try:
        yield
    finally:
        logger.removeFilter(notice_filter)


def _without_tfds_announcements(b: pcb.Builder) -> None:
    """TFDS prints "Downloading and preparing dataset Unknown size (...)" and "Dataset ... prepared ...
    Subsequent calls will reuse this data." to stdout at every build (nothing is downloaded here, no size is
    known, and stdout is the commands' answer): ``b`` prints neither."""
    b._log_download_bytes = b._log_download_done = lambda: None  # noqa: SLF001  (TFDS has no switch for them)


def build(config: pcb.PoseClipsConfig, data_dir: str | os.PathLike | None = None, progress=None,
          beam_runner: str | None = None, beam_options: str = "") -> epath.Path:
    """Prepares the dataset (no-op when already there); returns its folder. ``progress`` wraps clip iterators
    (our progress bar: TFDS's own bars are silenced meanwhile).

    With ``beam_runner`` (a Beam runner name) or ``beam_options`` (Beam pipeline options as on a command line,
    ``--runner`` included) the clips are made and written by an Apache Beam pipeline; ``data_dir`` must then be
    writable by its workers (``gs://...`` on Dataflow).

    Safe to call from several processes at once on a local or POSIX-shared ``data_dir``: an exclusive ``flock``
    on ``<data_dir>/pose_clips/<name>.lock`` serialises them, and the builder is made inside it, so a process
    that waited finds the dataset prepared and reuses it (TFDS alone races on the rename of its temporary
    folder: ``FileExistsError``). Object-store URLs (``gs://...``) are not locked.
    """
    download_config = _beam_download_config(beam_runner, beam_options) if beam_runner or beam_options else None
    with _build_lock(data_dir or DEFAULT_DATA_DIR, config.name), _tfds_progress_bars(False):
        b = builder(config, data_dir)
        b.progress = progress
        b.beam = download_config is not None
        _without_tfds_announcements(b)
        b.download_and_prepare(download_config=download_config)
        return epath.Path(b.data_dir)  # keeps a gs:// folder's scheme (pathlib would make it gs:/)


def _beam_download_config(runner: str | None, options: str) -> tfds.download.DownloadConfig:
    """TFDS's settings for a Beam build on ``runner`` with pipeline ``options`` (a command-line string)."""
    try:
        with _without_notice(None, BEAM_GCP_NOTICE):
            import apache_beam as beam  # noqa: PLC0415  (optional extra)
    except ImportError as err:
        raise ValueError('beam_runner/beam_options: Apache Beam is not installed; pip install -e ".[beam]"') from err
    return tfds.download.DownloadConfig(
        beam_runner=runner, beam_options=beam.options.pipeline_options.PipelineOptions(shlex.split(options)))


@contextlib.contextmanager
def _build_lock(data_dir: str | os.PathLike, name: str):
    """Holds an exclusive lock on ``<data_dir>/pose_clips/<name>.lock`` (none for URLs) inside the block."""
    if "://" in str(data_dir):
        yield
        return
    path = Path(data_dir) / pcb.Builder.name / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        yield


@contextlib.contextmanager
def _tfds_progress_bars(enable: bool):
    """Shows or hides TFDS's own progress bars inside the block, then restores the caller's setting."""
    before = tqdm_utils._active  # noqa: SLF001  (TFDS keeps the setting in this module global only)
    tqdm_utils.display_progress_bar(enable)
    try:
        yield
    finally:
        tqdm_utils.display_progress_bar(before)


def data_source(config: pcb.PoseClipsConfig, data_dir: str | os.PathLike | None = None, split: str = "train"):
    """Random-access source (``len``, ``[i]`` → record dict of numpy arrays) of a prepared dataset."""
    b = builder(config, data_dir)
    if not b.is_prepared():
        raise ValueError(f"data_dir: dataset {config.name!r} is not prepared under {b.data_dir!r}; build it first")
    return CheckedRecords(b.as_data_source(split=split))


def folder_source(folder: str | os.PathLike, split: str = "train"):
    """Random-access source of the prepared dataset in ``folder`` (the one holding ``dataset_info.json``)."""
    return CheckedRecords(tfds.builder_from_directory(str(folder)).as_data_source(split=split))


class CheckedRecords:
    """A TFDS ArrayRecord data source whose unreadable records raise a ``ValueError`` naming the shard file and
    the record index (a truncated or corrupt file otherwise fails inside Riegeli, without a path)."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        try:
            return self.source[index]
        except (RuntimeError, ValueError, OSError, EOFError) as err:
            raise ValueError(f"{self.shard_path(index)}: record {index} of split {self.source.split!r} is unreadable "
                             f"(corrupt or truncated ArrayRecord file?): {error_reason(err)}") from err

    def shard_path(self, index: int) -> str:
        """The file holding record ``index`` (the split's folder when the split is a slice of its files)."""
        info = self.source.dataset_info.splits[self.source.split]
        ends = np.cumsum(info.shard_lengths)
        shard = int(np.searchsorted(ends, index, side="right"))
        if len(self) != int(ends[-1]) or shard >= len(info.filepaths):
            return str(Path(info.filepaths[0]).parent)
        return str(info.filepaths[shard])


def record_to_clip(record: dict) -> dict:
    """A stored record as a clip dict (numpy arrays, ``caption`` as str)."""
    clip = {k: np.asarray(v) for k, v in record.items() if k != "caption"}
    caption = record["caption"]
    clip["caption"] = caption.decode() if isinstance(caption, bytes) else str(caption)
    return clip
