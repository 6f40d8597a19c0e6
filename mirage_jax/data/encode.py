"""``encode_dataset``: a ``pose_clips`` dataset → a latent dataset (``latent_dataset``), encoded once.

Per clip, ``data.windows_per_clip`` training windows are sampled (``windows.sample_window``, from a generator
seeded by ``config.seed``, the split and the clip's position, so a window does not depend on which process
or run encodes it), their video parts are encoded with the latent space (each part on its own: the encoder is
causal) and the clip's caption with the text encoder. The encoders run as the jit programs of
``models.latent_space`` over this process's devices, the window batch split across them; each JAX process
encodes its own shards of clips (shard ``s`` of ``process_index = s mod process_count``), so a multi-host
job (the launchers) needs no other coordination than a shared output folder.

Safe to kill and resume: a shard (``clips_per_shard`` clips) is written to a temporary file and renamed when
complete, then its sidecar (``<shard>.json``: record count, skipped clips, captions; ``<shard>.captions.npy``:
their embeddings) is renamed beside it; a resumed encode skips the shards whose sidecar exists, so nothing is
encoded twice and no half-written record is visible. Two encodes of one folder (same process index) refuse.
Process 0 writes the caption table, the constant score latent and the TFDS metadata last, once every shard
is there. Deterministic: the same inputs, config and job settings give byte-identical records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mirage_jax.data import latent_dataset as lds
from mirage_jax.data.examples import encode_frames, fit_clip
from mirage_jax.data.progress import clip_progress
from mirage_jax.data.tfds_io import folder_source, record_to_clip
from mirage_jax.data.training_example import ExampleSizes
from mirage_jax.data.windows import ExampleSpec, encoded_window, sample_window, window_videos
from mirage_jax.models.vace import constant_score_latent

JOB_FILE = "encode_job.json"
FILE_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
SPLIT_SEEDS = {"train": 0, "test": 1}  # windows of different splits come from different streams


@dataclasses.dataclass(frozen=True)
class EncodeJob:
    """What an encode of one folder must keep across resumes (``encode_job.json``)."""

    source: str  # the pose_clips dataset folder (holding dataset_info.json)
    windows_per_clip: int
    clips_per_shard: int
    batch: int  # windows per encoder call on this process
    seed: int


def shard_name(split: str, shard: int, num_shards: int) -> str:
    return f"{lds.DATASET_NAME}-{split}.array_record-{shard:05d}-of-{num_shards:05d}"


class WindowEncoder:
    """The latent space and text encoder of ``config``, the window batch split over this process's devices."""

    def __init__(self, config, batch: int):
        from mirage_jax.models.latent_space import make_latent_space  # noqa: PLC0415
        from mirage_jax.models.text import make_text_encoder  # noqa: PLC0415

        self.space, self.text = make_latent_space(config), make_text_encoder(config)
        devices = np.asarray(jax.local_devices())
        self.sharding = NamedSharding(Mesh(devices, ("data",)), PartitionSpec("data"))
        self.space.replicate(self.sharding.mesh)
        self.batch = batch

    def latents(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[B, T, H, W, 3]`` → float32 latents ``[B, 1+(T-1)//4, h, w, C]`` (B padded to the devices)."""
        b = frames.shape[0]
        pad = -b % self.sharding.mesh.size
        if pad:
            frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
        return encode_frames(self.space, frames, self.sharding)[:b]

    def windows(self, items: list[tuple]) -> list[dict]:
        """``[(window, videos)]`` → encoded windows (``windows.encoded_window``)."""
        target = self.latents(np.stack([v["target"] for _, v in items]))
        if items[0][1]["preceding"].shape[0]:
            preceding = self.latents(np.stack([v["preceding"] for _, v in items]))
        else:
            preceding = np.zeros((len(items), 0) + target.shape[2:], np.float32)
        refs = self.latents(np.concatenate([v["references"] for _, v in items]))[:, 0]
        refs = refs.reshape(len(items), -1, *refs.shape[1:])
        return [encoded_window(w, target[i], preceding[i], refs[i]) for i, (w, _) in enumerate(items)]


def encode_dataset(config, source: str | os.PathLike, out: str | os.PathLike, *, clips_per_shard: int = 16,
                   batch: int = 8, skip_bad_clips: bool = False, progress: bool = True, encoder=None) -> Path:
    """Encodes the ``pose_clips`` dataset in ``source`` into ``out`` (see the module docstring); returns ``out``.

    ``skip_bad_clips``: a clip that cannot be read or is too short is skipped and listed in its shard's
    sidecar (and in ``dataset_info.json``'s description) instead of stopping the encode with its name.
    ``encoder``: what encodes (``space``, ``text`` and ``windows(items)`` as :class:`WindowEncoder`); default
    the config's latent space and text encoder over this process's devices.
    """
    source, out = Path(os.path.expanduser(source)), Path(os.path.expanduser(out))
    _check_arguments(config, source, clips_per_shard, batch)
    job = EncodeJob(str(source.resolve()), int(config.data.windows_per_clip), clips_per_shard, batch, int(config.seed))
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        _start_or_resume(out, config, job)
        if (out / "dataset_info.json").is_file():
            return out
        encoder = WindowEncoder(config, batch) if encoder is None else encoder
        spec, serialize = ExampleSpec.from_config(config), lds.RecordWriter(lds.features(config))
        splits = _source_splits(source)
        plan = [(split, s, n) for split, n in splits.items() for s in range(_num_shards(n, clips_per_shard))
                if s % jax.process_count() == jax.process_index()]
        total = sum(len(_shard_clips(s, n, clips_per_shard)) for _, s, n in plan)
        done = sum(len(_shard_clips(s, n, clips_per_shard)) for split, s, n in plan
                   if _shard_done(out, split, s, _num_shards(n, clips_per_shard)))
        bar = clip_progress(range(total - done), total, "encoded", done_before=done) if progress else None
        clips = {split: folder_source(source, split) for split in splits}  # opened once, not per shard
        for split, shard, n in plan:
            num_shards = _num_shards(n, clips_per_shard)
            if not _shard_done(out, split, shard, num_shards):
                _encode_shard(out, split, shard, num_shards, _shard_clips(shard, n, clips_per_shard),
                              clips[split], encoder, spec, serialize, job, skip_bad_clips, bar)
        if bar is not None:
            for _ in bar:  # the bar's final line
                pass
        _sync("mirage_jax.data.encode: all shards written")
        if jax.process_index() == 0:
            _finish(out, config, splits, clips_per_shard, encoder)
        _sync("mirage_jax.data.encode: metadata written")
    return out


def _check_arguments(config, source: Path, clips_per_shard: int, batch: int) -> None:
    if not (source / "dataset_info.json").is_file():
        raise ValueError(f"--source: expected a pose_clips dataset folder (with dataset_info.json, as printed by "
                         f"data build), got {str(source)!r}")
    if lds.is_latent_dataset(source):
        raise ValueError(f"--source: {str(source)!r} is already a latent dataset")
    if clips_per_shard < 1 or batch < 1:
        raise ValueError(f"--clips-per-shard/--batch: expected >= 1, got {clips_per_shard}/{batch}")
    if int(config.data.windows_per_clip) < 1:
        raise ValueError(f"config.data.windows_per_clip: expected >= 1, got {config.data.windows_per_clip}")


@contextlib.contextmanager
def _exclusive(out: Path):
    """Holds ``out/.encode-<process>.lock``; a second encode of the folder by the same process index refuses."""
    path = out / f".encode-{jax.process_index()}.lock"
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"--out {str(out)!r}: another data encode is writing this folder (it holds "
                             f"{path.name}); wait for it or choose another --out") from None
        yield


def _start_or_resume(out: Path, config, job: EncodeJob) -> None:
    """Records the config and job in a new folder; in an existing one, refuses other settings."""
    job_path, config_path = out / JOB_FILE, out / lds.CONFIG_FILE
    fresh = not job_path.is_file()  # every process looks before any writes (the sync below)
    locks = {f".encode-{i}.lock" for i in range(jax.process_count())}
    other_files = fresh and any(p.name not in locks for p in out.iterdir())
    _sync("mirage_jax.data.encode: folder checked by every process before any writes")
    if fresh:
        if other_files:
            raise ValueError(f"--out {str(out)!r} holds other files: encode into a new folder")
        if jax.process_index() == 0:
            lds.write_text_atomic(config_path, config.to_json_best_effort(indent=1))
            lds.write_text_atomic(job_path, json.dumps(dataclasses.asdict(job), indent=1))
        _sync("mirage_jax.data.encode: settings written")
        return
    stored = EncodeJob(**json.loads(job_path.read_text()))
    diff = {k: (v, getattr(job, k)) for k, v in dataclasses.asdict(stored).items() if v != getattr(job, k)}
    if diff:
        raise ValueError(f"--out {str(out)!r} holds an encode with other settings: "
                         + "; ".join(f"{k}: {a!r} (folder) vs {b!r} (now)" for k, (a, b) in diff.items())
                         + "; resume with the same settings or encode into a new folder")
    lds.check_encoded_config(out, config)


def _source_splits(source: Path) -> dict[str, int]:
    import tensorflow_datasets as tfds  # noqa: PLC0415

    info = tfds.builder_from_directory(str(source)).info
    return {name: int(split.num_examples) for name, split in sorted(info.splits.items())}


def _num_shards(num_clips: int, clips_per_shard: int) -> int:
    return max(1, -(-num_clips // clips_per_shard))


def _shard_clips(shard: int, num_clips: int, clips_per_shard: int) -> range:
    return range(shard * clips_per_shard, min(num_clips, (shard + 1) * clips_per_shard))


def _shard_done(out: Path, split: str, shard: int, num_shards: int) -> bool:
    name = shard_name(split, shard, num_shards)
    return (out / f"{name}.json").is_file() and (out / name).is_file()


def _encode_shard(out: Path, split: str, shard: int, num_shards: int, clip_positions: range, source, encoder,
                  spec: ExampleSpec, serialize, job: EncodeJob, skip_bad_clips: bool, bar) -> None:
    """Samples, encodes and writes one shard, then its sidecar (both atomically)."""
    from array_record.python.array_record_module import ArrayRecordWriter  # noqa: PLC0415

    name = shard_name(split, shard, num_shards)
    pending, records, skipped, captions = [], [], [], set()
    tmp = out / f".{name}.tmp"
    writer = ArrayRecordWriter(str(tmp), "group_size:1")

    def flush():
        for window, caption in zip(encoder.windows([(w, v) for w, v, _ in pending]), [c for *_, c in pending]):
            writer.write(serialize(lds.to_record(window, caption)))
            records.append(int(window["clip_index"]))
        pending.clear()

    for position in clip_positions:
        if bar is not None:
            next(bar, None)
        try:
            clip = record_to_clip(source[position])
            clip = fit_clip(clip, spec.height, spec.width)
            rng = np.random.default_rng((job.seed, SPLIT_SEEDS.get(split, 2), position))
            windows = [sample_window(clip, int(clip["clip_id"]), rng, spec, encoder.space.spatial_factor)
                       for _ in range(job.windows_per_clip)]
        except ValueError as err:
            if not skip_bad_clips:
                raise ValueError(f"--source: {split} clip {position}: {err} (--skip-bad-clips skips such "
                                 "clips)") from err
            skipped.append({"position": position, "error": str(err)})
            continue
        captions.add(clip["caption"])
        pending.extend((w, window_videos(clip, w), clip["caption"]) for w in windows)
        if len(pending) >= job.batch:
            flush()
    if pending:
        flush()
    writer.close()
    os.replace(tmp, out / name)
    texts = sorted(captions)
    embeddings = encoder.text.encode(texts) if texts else np.zeros((0, 0, 0), np.float32)
    lds.save_array_atomic(out / f"{name}.captions.npy", np.asarray(embeddings, np.float32))
    lds.write_text_atomic(out / f"{name}.json", json.dumps(
        {"records": len(records), "skipped": skipped, "captions": texts}, indent=1))


def _finish(out: Path, config, splits: dict[str, int], clips_per_shard: int, encoder) -> None:
    """Process 0, once every shard is there: the caption table, then the TFDS metadata (written last)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    table, split_infos, skipped = {"": encoder.text.encode([""])[0]}, [], []
    for split, n in splits.items():
        num_shards = _num_shards(n, clips_per_shard)
        lengths = []
        for shard in range(num_shards):
            name = shard_name(split, shard, num_shards)
            if not _shard_done(out, split, shard, num_shards):
                raise ValueError(f"--out {str(out)!r}: shard {name} is missing (did a process fail?); run the "
                                 "encode again to finish it")
            side = json.loads((out / f"{name}.json").read_text())
            lengths.append(side["records"])
            skipped += [dict(s, split=split) for s in side["skipped"]]
            embeddings = np.load(out / f"{name}.captions.npy", allow_pickle=False)
            table.update({c: e for c, e in zip(side["captions"], embeddings) if c not in table})
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=sum(
            (out / shard_name(split, s, num_shards)).stat().st_size for s in range(num_shards))))
    captions = sorted(table)
    lds.write_caption_table(out, captions, np.stack([table[c] for c in captions]))
    sizes = ExampleSizes.from_config(config)
    hw = (int(config.data.height), int(config.data.width))
    lds.write_score_latent(out, constant_score_latent(encoder.space, sizes.targets + sizes.preceding, hw))
    template = tfds.core.ShardedFileTemplate(data_dir=str(out), template=FILE_TEMPLATE,
                                             dataset_name=lds.DATASET_NAME, filetype_suffix="array_record")
    note = f"; skipped clips: {json.dumps(skipped)}" if skipped else ""
    tfds.folder_dataset.write_metadata(data_dir=str(out), features=lds.features(config), split_infos=split_infos,
                                       filename_template=template, check_data=False,
                                       description=f"Encoded training windows (mirage-jax data encode){note}")


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(name)
