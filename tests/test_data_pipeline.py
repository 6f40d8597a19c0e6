"""Grain pipeline: the training example's contract, determinism, exact Orbax resume, process shards."""

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mirage_jax import sharding
from mirage_jax.config import load_config
from mirage_jax.data import pipeline, tfds_io
from mirage_jax.data.latent_cache import CachedLatentSpace
from mirage_jax.data.training_example import MODEL_INPUTS, ExampleSizes, TrainingExample, check_batch
from mirage_jax.data.windows import ExampleSpec
from mirage_jax.models.latent_space import make_latent_space
from mirage_jax.models.text import make_text_encoder

OVERRIDES = ["data.height=16", "data.width=32", "data.clip_frames=21", "data.target_frames=9", "data.num_clips=6",
             "train.batch_size=2", "memory.capacity=1024", "data.trajectories=('revisit','orbit','pan')"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = load_config("tiny", OVERRIDES + [f"data.data_dir={tmp_path_factory.mktemp('tfds')}"])
    source = pipeline.clip_source(config)  # builds the procedural dataset on first use
    return config, source, make_latent_space(config), make_text_encoder(config)


def single(latent_space, frame):
    """Latent of one frame [H, W, 3] in [-1, 1] (a 1-frame video)."""
    return np.asarray(latent_space.encode(frame[None, None]))[0, 0]


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_training_example_structure_matches_the_pipeline(setup):
    """The typed structure is what the pipeline produces: every field, in the shapes the config implies (these
    overrides make Tl=3, P=2, R=4, h x w = 4x8, L x D = 8x32, so no size coincides with another)."""
    config, source, ls, te = setup
    batch = next(pipeline.make_train_iterator(config, ls, te, source=source))
    sizes = ExampleSizes.from_config(config)
    assert (sizes.targets, sizes.preceding, sizes.references, sizes.height, sizes.width) == (3, 2, 4, 4, 8)
    assert set(batch) == set(TrainingExample.__annotations__) == set(sizes.shapes())
    check_batch(batch, sizes, 2, required=tuple(TrainingExample.__annotations__))
    for key, (shape, dtype) in sizes.shapes(2).items():
        assert batch[key].shape == shape and batch[key].dtype == dtype, key


def test_check_batch_names_the_field_and_the_expected_shape(setup):
    config = setup[0]
    sizes = ExampleSizes.from_config(config)
    good = {k: np.zeros(shape, dtype) for k, (shape, dtype) in sizes.shapes(2).items()}
    check_batch(good, sizes, 2)
    wrong_width = dict(good, target_scene=np.zeros((2, 3, 4, 9, 48), np.float32))
    with pytest.raises(ValueError, match=r"'target_scene' is float32 \[2, 3, 4, 9, 48\], expected float32 "
                                         r"\[2, 3, 4, 8, 48\]"):
        check_batch(wrong_width, sizes, 2)
    with pytest.raises(ValueError, match=r"'preceding_mask' is float32 .*expected bool \[2, 2\]"):
        check_batch(dict(good, preceding_mask=np.zeros((2, 2), np.float32)), sizes, 2)
    with pytest.raises(ValueError, match=r"missing field 'context' \(expected float32 \[2, 8, 32\]\)"):
        check_batch({k: v for k, v in good.items() if k != "context"}, sizes, 2)
    with pytest.raises(ValueError, match=r"'target_latents' is float32 \[3, 3"):  # batch of 3, 2 expected
        check_batch({k: np.zeros((3, *v.shape[1:]), v.dtype) for k, v in good.items()}, sizes, 2)
    partial = {k: good[k] for k in MODEL_INPUTS}  # target_depth and clip_index are optional for the step
    check_batch(partial, sizes, 2)


def test_batch_contract_and_content(setup):
    config, source, ls, te = setup
    it = pipeline.make_train_iterator(config, ls, te, source=source)
    batch = next(it)
    b, tl, h, w, c = 2, 3, 4, 8, 48
    shapes = {"target_latents": (b, tl, h, w, c), "target_scene": (b, tl, h, w, c), "target_hit": (b, tl, h, w),
              "target_depth": (b, tl, h, w), "preceding_latents": (b, 2, h, w, c),
              "preceding_scene": (b, 2, h, w, c), "preceding_hit": (b, 2, h, w), "preceding_mask": (b, 2),
              "reference_latents": (b, 4, h, w, c), "reference_mask": (b, 4), "context": (b, 8, 32),
              "clip_index": (b,)}
    assert {k: v.shape for k, v in batch.items()} == shapes
    assert batch["target_hit"].dtype == bool and batch["clip_index"].dtype == np.int32
    clips = {int(r["clip_id"]): tfds_io.record_to_clip(r) for r in (source[i] for i in range(len(source)))}
    for i in range(b):
        clip = clips[int(batch["clip_index"][i])]
        lat = batch["target_latents"][i]
        # Latent 0 is frame t0: find t0 and check every target latent is frame t0 + 4k (patchify is exact).
        frames = clip["frames"].astype(np.float32) / 127.5 - 1.0
        t0 = [t for t in range(len(frames)) if np.allclose(single(ls, frames[t]), lat[0])]
        assert t0, "latent 0 is a clip frame"
        t0 = t0[0]
        for k in range(tl):
            np.testing.assert_allclose(single(ls, frames[t0 + 4 * k]), lat[k], atol=1e-6)
        # The memory was written from frame t0: read back at t0, the hit cells are t0's own latents.
        hit = batch["target_hit"][i, 0]
        assert hit.mean() > 0.9
        np.testing.assert_allclose(batch["target_scene"][i, 0][hit], lat[0][hit], atol=1e-6)
        assert (batch["target_depth"][i] > 0).all()
        # The k kept preceding latents are the newest, oldest first in the first k slots: slot j is frame
        # t0 - 4(k - j) (the official positions T..T+k-1); absent entries are zero-filled.
        mask = batch["preceding_mask"][i]
        k = int(mask.sum())
        assert list(mask) == [True] * k + [False] * (2 - k), "real preceding latents fill the first slots"
        for j in range(2):
            if mask[j]:
                ref = single(ls, frames[t0 - 4 * (k - j)])
                np.testing.assert_allclose(batch["preceding_latents"][i, j], ref, atol=1e-6)
            else:
                assert not batch["preceding_latents"][i, j].any() and not batch["preceding_hit"][i, j].any()
        refs = batch["reference_mask"][i]
        assert list(refs) == sorted(refs), "real references fill the last slots (positions -k..-1)"
        assert not batch["reference_latents"][i][~refs].any()
    it.close()


def test_same_seed_same_batches_and_exact_resume(setup, tmp_path):
    config, source, ls, te = setup
    first = pipeline.make_train_iterator(config, ls, te, source=source)
    reference = _take(first, 5)
    again = pipeline.make_train_iterator(config, ls, te, source=source)
    _assert_batches_equal(_take(again, 5), reference)
    # Save after 3 batches with Orbax, restore into a fresh iterator: the next batches are batches 4 and 5.
    saver = pipeline.make_train_iterator(config, ls, te, source=source)
    _take(saver, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as manager:
        manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(saver)))
        manager.wait_until_finished()
        restored = pipeline.make_train_iterator(config, ls, te, source=source)
        manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
    _assert_batches_equal(_take(restored, 2), reference[3:])
    for it in (first, again, saver, restored):
        it.close()
    other = config.copy_and_resolve_references()
    other.data.shuffle_seed = 1
    it = pipeline.make_train_iterator(other, ls, te, source=source)
    assert not all(np.array_equal(x["clip_index"], y["clip_index"]) for x, y in zip(_take(it, 3), reference))
    it.close()


def test_process_shards_are_disjoint_and_cover(setup):
    config, source, ls, te = setup
    spec = ExampleSpec.from_config(config)
    seen = []
    for pi in range(2):
        ds = pipeline.make_dataset(source, pipeline.ExampleFromClip(spec, ls, te), batch_size=1, seed=0,
                                   process_index=pi, process_count=2, num_epochs=1)
        seen.append([int(ds[i]["clip_index"][0]) for i in range(len(ds))])
    assert len(seen[0]) == len(seen[1]) == 3
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(6))


def test_global_batch_on_mesh(setup):
    config, source, ls, te = setup
    it = pipeline.make_train_iterator(config, ls, te, source=source)
    batch = next(it)
    it.close()
    devices = jax.devices()[:2]  # 2 of the 8 simulated CPU devices in CI (1 when run without XLA_FLAGS)
    mesh = sharding.make_mesh(data=1, fsdp=len(devices), tensor=1, devices=devices)
    arrays = pipeline.global_batch(batch, mesh)
    assert arrays["target_latents"].shape == batch["target_latents"].shape
    assert arrays["target_latents"].sharding.spec[0] in ("fsdp", ("data", "fsdp"))
    assert len(arrays["target_latents"].sharding.device_set) == len(devices)
    np.testing.assert_array_equal(np.asarray(arrays["target_scene"]), batch["target_scene"])


def test_bad_arguments(setup, tmp_path):
    config, source, ls, te = setup
    spec = ExampleSpec.from_config(config)
    with pytest.raises(ValueError, match="process_index"):
        pipeline.make_dataset(source, pipeline.ExampleFromClip(spec, ls, te), batch_size=1, seed=0, process_index=2,
                              process_count=2)
    with pytest.raises(ValueError, match="batch_size"):
        pipeline.make_train_iterator(config, ls, te, source=source, process_index=0, process_count=3)
    bad = config.copy_and_resolve_references()
    bad.data.source = str(tmp_path)
    with pytest.raises(ValueError, match="config.data.source"):
        pipeline.clip_source(bad)
    bad.data.target_frames = 10
    with pytest.raises(ValueError, match="target_frames"):
        ExampleSpec.from_config(bad)


def test_latent_cache_reused_and_identical(setup, tmp_path):
    config, source, ls, te = setup
    plain = pipeline.make_train_iterator(config, ls, te, source=source)
    reference = _take(plain, 2)
    plain.close()
    cached = config.copy_and_resolve_references()
    cached.data.latent_cache_dir = str(tmp_path / "latents")
    for _ in range(2):  # first pass fills the cache, second reads it
        it = pipeline.make_train_iterator(cached, ls, te, source=source)
        _assert_batches_equal(_take(it, 2), reference)
        it.close()
    assert len(list((tmp_path / "latents").glob("*.npy"))) > 0

    space = CachedLatentSpace(ls, tmp_path / "direct")
    video = np.zeros((1, 5, 16, 32, 3), np.float32)
    first, again = space.encode(video), space.encode(video)
    np.testing.assert_array_equal(first, again)
    assert (space.misses, space.hits) == (1, 1)
