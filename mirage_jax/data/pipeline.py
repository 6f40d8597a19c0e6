"""The Grain input pipeline: records → training batches (``TrainingExample``s), sharded by JAX process, checkpointable.

Records are clips (``pose_clips``: each example samples a window and encodes it here, ``ExampleFromClip``) or
stored windows of a latent dataset (``data encode``: only the cheap latent-resolution memory write and read
run here, ``ExampleFromLatentWindow``); both make the same ``TrainingExample``.

Order (Grain Dataset API): ``MapDataset.source(clips).seed(S).shuffle()`` (the same global permutation on
every process) → ``repeat()`` → ``random_map(make_example)`` (per-element RNG from the seed and the element's
position in the global stream: reproducible, resumable) → ``[process_index::process_count]`` (disjoint
per-process shards: global batch ``i`` is the same examples whatever the number of processes) →
``batch(per_host_batch, drop_remainder=True)`` → ``to_iter_dataset(ReadOptions(...))`` with an explicit,
bounded prefetch. The iterator's state is a few integers; save it with Orbax alongside the model::

    ckpt.save(step, args=ocp.args.Composite(..., data=grain.checkpoint.CheckpointSave(it)))
    ckpt.restore(step, args=ocp.args.Composite(..., data=grain.checkpoint.CheckpointRestore(it)))

and the restored iterator yields exactly the batch that would have come next.
"""

from __future__ import annotations

import os
from pathlib import Path

import grain
import jax
import numpy as np

from mirage_jax import sharding
from mirage_jax.data import latent_dataset, tfds_io
from mirage_jax.data.examples import example_from_window, make_example
from mirage_jax.data.latent_cache import CachedLatentSpace
from mirage_jax.data.pose_clips import pose_clips_dataset_builder as pcb
from mirage_jax.data.windows import ExampleSpec
from mirage_jax.models.vace import constant_score_latent

BATCH_LOGICAL_AXES = ("batch",)


def dataset_config(config) -> pcb.PoseClipsConfig:
    """The procedural ``pose_clips`` config matching a training config's ``data`` section."""
    d = config.data
    return pcb.make_config("procedural", height=d.height, width=d.width, num_frames=d.clip_frames,
                           num_clips=d.num_clips, num_test_clips=max(1, d.num_clips // 8),
                           trajectories=tuple(d.trajectories), dynamic_objects=d.dynamic_objects, seed=config.seed)


def clip_source(config, split: str = "train", progress=None):
    """Random-access clip records for ``config.data``: procedural (built on first use, then reused) or a
    prepared TFDS dataset folder (``config.data.source`` = the folder holding ``dataset_info.json``)."""
    d = config.data
    if d.source == "procedural":
        ds_config = dataset_config(config)
        _build_once_per_job(lambda: tfds_io.build(ds_config, d.data_dir or None, progress=progress))
        return tfds_io.data_source(ds_config, d.data_dir or None, split)
    folder = Path(os.path.expanduser(d.source))
    if not (folder / "dataset_info.json").is_file():
        raise ValueError(f"config.data.source: expected 'procedural' or a prepared TFDS dataset folder (with "
                         f"dataset_info.json), got {d.source!r}")
    return tfds_io.folder_source(folder, split)


def _build_once_per_job(build) -> None:
    """Runs ``build`` on JAX process 0 first, then on the others (a no-op there when the folder is shared,
    a local build of the same deterministic dataset otherwise): no two processes write one folder at once."""
    if jax.process_count() == 1:
        build()
        return
    from jax.experimental import multihost_utils  # noqa: PLC0415

    if jax.process_index() == 0:
        build()
    multihost_utils.sync_global_devices("mirage_jax.data: procedural dataset built")
    if jax.process_index() != 0:
        build()


class ExampleFromClip(grain.transforms.RandomMap):
    """Grain transform: clip record → training example, encoded here (``examples.make_example``)."""

    def __init__(self, spec: ExampleSpec, latent_space, text_encoder):
        self.spec, self.latent_space, self.text_encoder = spec, latent_space, text_encoder

    def random_map(self, record, rng: np.random.Generator):
        clip = tfds_io.record_to_clip(record)
        return make_example(clip, int(clip["clip_id"]), rng, self.spec, self.latent_space, self.text_encoder)


class ExampleFromLatentWindow(grain.transforms.RandomMap):
    """Grain transform: stored window (``latent_dataset``) → training example; no encoder runs."""

    def __init__(self, spec: ExampleSpec, captions: latent_dataset.CaptionTable):
        self.spec, self.captions = spec, captions

    def random_map(self, window, rng: np.random.Generator):
        return example_from_window(window, self.captions.context(window["caption_id"]), rng, self.spec)


def make_dataset(source, transform: grain.transforms.RandomMap, *, batch_size: int, seed: int, process_index: int,
                 process_count: int, num_epochs: int | None = None) -> grain.MapDataset:
    """The batched ``MapDataset`` of one process (``batch_size`` = per-process batch): records of ``source`` turned
    into examples by ``transform``. See module docstring."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index: expected 0 <= index < process_count={process_count}, got {process_index}")
    if len(source) < process_count:
        raise ValueError(f"source: {len(source)} records cannot be sharded over {process_count} processes")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1 per process, got {batch_size}")
    ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(num_epochs)
    ds = ds.random_map(transform)  # randomness by global stream position
    ds = ds[process_index::process_count]
    return ds.batch(batch_size, drop_remainder=True)


def latent_source_folder(config) -> Path | None:
    """The folder of ``config.data.source`` when it is a latent dataset (``data encode``), else None."""
    if config.data.source == "procedural":
        return None
    folder = Path(os.path.expanduser(config.data.source))
    return folder if latent_dataset.is_latent_dataset(folder) else None


def training_encoders(config):
    """``(latent_space, text_encoder)`` the pipeline needs: both ``None`` for a latent dataset (nothing is
    encoded while training, and the umT5 and VAE weights are never loaded)."""
    if latent_source_folder(config) is not None:
        return None, None
    from mirage_jax.models.latent_space import make_latent_space  # noqa: PLC0415
    from mirage_jax.models.text import make_text_encoder  # noqa: PLC0415

    return make_latent_space(config), make_text_encoder(config)


def empty_context(config, text_encoder) -> np.ndarray:
    """The empty prompt's context ``[L, D]`` (classifier-free guidance dropout): from the latent dataset's
    caption table, else encoded by ``text_encoder``."""
    folder = latent_source_folder(config)
    if folder is not None:
        return latent_dataset.CaptionTable(folder).caption_context("")
    return np.asarray(text_encoder.encode([""])[0], np.float32)


def score_latent(config, latent_space, num_latents: int) -> np.ndarray:
    """The constant "score" control latent ``[num_latents, h, w, C]`` (``model.score_source="constant"``): stored
    by the latent dataset, else encoded by ``latent_space``."""
    folder = latent_source_folder(config)
    if folder is not None:
        return latent_dataset.score_latent(folder, num_latents)
    return np.asarray(constant_score_latent(latent_space, num_latents, (int(config.data.height),
                                                                        int(config.data.width))))


def make_train_iterator(config, latent_space, text_encoder, *, split: str = "train", process_index: int | None = None,
                        process_count: int | None = None, source=None, num_threads: int = 2):
    """The trainer's entry point: an infinite, checkpointable Grain ``DatasetIterator`` of training batches.

    Each batch holds this process's ``config.train.batch_size // process_count`` examples (numpy); turn it
    into global arrays with :func:`global_batch`. ``process_index/count`` default to JAX's (override them to
    simulate hosts). ``source`` overrides the clip source (default :func:`clip_source`). Prefetch is bounded
    by ``config.data.prefetch`` batches' worth of elements and ``num_threads`` threads. With
    ``config.data.latent_cache_dir`` set, latents come from that on-disk cache when present. When
    ``config.data.source`` is a latent dataset (``data encode``) the examples are made from its stored windows
    and ``latent_space`` and ``text_encoder`` are not used (pass ``None``).
    """
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if config.train.batch_size % pc:
        raise ValueError(f"config.train.batch_size={config.train.batch_size} is not divisible by {pc} processes")
    spec = ExampleSpec.from_config(config)
    folder = latent_source_folder(config)
    if folder is not None:
        latent_dataset.check_encoded_config(folder, config)
        source = latent_dataset.LatentWindows(folder, split) if source is None else source
        transform = ExampleFromLatentWindow(spec, latent_dataset.CaptionTable(folder))
    else:
        source = clip_source(config, split) if source is None else source
        if config.data.latent_cache_dir:
            latent_space = CachedLatentSpace(latent_space, os.path.expanduser(config.data.latent_cache_dir))
        transform = ExampleFromClip(spec, latent_space, text_encoder)
    ds = make_dataset(source, transform, batch_size=config.train.batch_size // pc, seed=config.data.shuffle_seed,
                      process_index=pi, process_count=pc)
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(1, config.data.prefetch))
    return iter(ds.to_iter_dataset(read))


def global_batch(batch: dict, mesh: jax.sharding.Mesh, rules=None) -> dict:
    """Host-local batch → global ``jax.Array`` s sharded on the batch axis (``rules`` default: ``batch`` over
    ``("data", "fsdp")``), via ``jax.make_array_from_process_local_data``."""
    rules = rules if rules is not None else (("batch", ("data", "fsdp")),)

    def put(x):
        x = np.asarray(x)
        spec = sharding.named_sharding(mesh, BATCH_LOGICAL_AXES + (None,) * (x.ndim - 1), rules)
        return jax.make_array_from_process_local_data(spec, x)

    return {k: put(v) for k, v in batch.items()}
