"""``data encode`` and training from latents (tiny patchify config): the stored window makes the example the raw
frames make, the encode is resumable to the same bytes, refuses a second writer and other settings, names or
skips bad clips; training checks the encode's settings. The real component kinds (Wan2.2 VAE, umT5) run the
same path in tests/test_real_path.py."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import numpy as np
import pytest

from mirage_jax.config import load_config
from mirage_jax.data import encode, latent_dataset, pipeline, tfds_io
from mirage_jax.data.examples import example_from_window, fit_clip, make_example
from mirage_jax.data.pose_clips import pose_clips_dataset_builder as pcb
from mirage_jax.data.synthetic import render_clip
from mirage_jax.data.windows import ExampleSpec, sample_window, window_videos

# 3 preceding slots and 5 reference slots: sizes that differ from the defaults, on a 24x40 frame (6x10 latents)
OVERRIDES = ["data.height=24", "data.width=40", "data.target_frames=9", "data.clip_frames=29", "memory.capacity=1024",
             "memory.num_preceding=3", "train.max_preceding=3", "memory.max_references=5", "train.max_references=5",
             "data.max_reference_candidates=6", "data.windows_per_clip=2", "train.batch_size=2"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = load_config("tiny", OVERRIDES)
    root = tmp_path_factory.mktemp("encode")
    ds = pcb.make_config("procedural", height=24, width=40, num_frames=29, num_clips=5, num_test_clips=1, seed=3,
                         trajectories=("revisit", "pan", "loop"))
    folder = tfds_io.build(ds, root / "tfds")
    return config, root, folder


def _encode(config, source, out, **kwargs):
    return encode.encode_dataset(config, source, out, clips_per_shard=2, batch=3, progress=False, **kwargs)


@pytest.fixture(scope="module")
def encoded(setup):
    config, root, source = setup
    return _encode(config, source, root / "latents")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_a_stored_window_makes_the_example_the_raw_frames_make(setup):
    """Same clip, same rng: the window sampled, encoded over the devices, stored (bf16) and read back gives the
    raw path's example: identical geometry, hits and masks; latents and scene reads within bf16 rounding."""
    from mirage_jax.models.latent_space import make_latent_space
    from mirage_jax.models.text import make_text_encoder

    config, _, _ = setup
    spec, space, text = ExampleSpec.from_config(config), make_latent_space(config), make_text_encoder(config)
    clip = fit_clip(render_clip(11, 29, 24, 40, "revisit"), 24, 40)
    clip["caption"] = "a red room"
    encoder = encode.WindowEncoder(config, batch=2)
    features = latent_dataset.features(config)
    checked = 0
    for seed in range(4):
        raw = make_example(clip, 7, np.random.default_rng(seed), spec, space, text)
        rng = np.random.default_rng(seed)
        window = sample_window(clip, 7, rng, spec, space.spatial_factor)
        (encoded,) = encoder.windows([(window, window_videos(clip, window))])
        record = features.deserialize_example_np(features.serialize_example(latent_dataset.to_record(encoded,
                                                                                                    "a red room")))
        stored = latent_dataset.from_record(record)
        example = example_from_window(stored, text.encode(["a red room"])[0], rng, spec)
        assert set(example) == set(raw)
        for key, value in raw.items():
            if key.endswith(("_latents", "_scene")):
                np.testing.assert_allclose(example[key], value, atol=1e-2, rtol=1e-2, err_msg=key)
            else:
                np.testing.assert_array_equal(example[key], value, err_msg=key)
        checked += int(raw["preceding_mask"].sum() + raw["reference_mask"].sum())
    assert checked > 0  # some seeds keep preceding latents and references, so their slots were compared


def test_the_dataset_holds_every_window_and_the_caption_table(setup, encoded):
    config, _, source = setup
    info = json.loads((encoded / "dataset_info.json").read_text())
    lengths = {s["name"]: sum(int(n) for n in s["shardLengths"]) for s in info["splits"]}
    assert lengths == {"train": 5 * 2, "test": 1 * 2}
    windows = latent_dataset.LatentWindows(encoded, "train")
    clips = tfds_io.folder_source(source, "train")
    # windows follow the source's record order, two per clip
    assert [int(windows[i]["clip_index"]) for i in range(10)] == [int(clips[i // 2]["clip_id"]) for i in range(10)]
    table = latent_dataset.CaptionTable(encoded)
    for i in range(0, 10, 3):
        caption = tfds_io.record_to_clip(clips[i // 2])["caption"]
        assert int(windows[i]["caption_id"]) == latent_dataset.caption_id(caption)
        assert table.context(windows[i]["caption_id"]).shape == (config.text.max_length, config.text.dim)
    assert table.caption_context("").shape == (config.text.max_length, config.text.dim)
    assert len({int(windows[i]["t0"]) for i in range(10)}) > 1  # windows start at different frames
    # the stored score latent: Tl + P = 3 + 3 latents of a white video; a shorter one is its prefix
    from mirage_jax.models.latent_space import make_latent_space
    from mirage_jax.models.vace import constant_score_latent

    for n in (6, 4):
        np.testing.assert_array_equal(latent_dataset.score_latent(encoded, n),
                                      constant_score_latent(make_latent_space(config), n, (24, 40)))
    with pytest.raises(ValueError, match="holds 6 latents, 7 needed"):
        latent_dataset.score_latent(encoded, 7)


def test_an_encode_stopped_midway_resumes_to_the_same_bytes(setup, encoded, monkeypatch):
    """Stopped inside a shard (after 5 records): the rerun skips the finished shards, rewrites the partial one,
    and every file equals the uninterrupted encode's."""
    config, root, source = setup
    out = root / "stopped"
    original, calls = latent_dataset.to_record, []

    def stop_after_five(*args):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(latent_dataset, "to_record", stop_after_five)
    with pytest.raises(KeyboardInterrupt):
        _encode(config, source, out)
    monkeypatch.setattr(latent_dataset, "to_record", original)
    assert not (out / "dataset_info.json").exists()
    finished = [p.name for p in out.glob("*.json") if p.name.startswith("latent_clips")]
    assert len(finished) == 1  # shard 0 (4 windows) was done; shard 1 stopped at its second record
    mtime = (out / finished[0]).stat().st_mtime_ns
    _encode(config, source, out)
    assert (out / finished[0]).stat().st_mtime_ns == mtime  # not encoded twice
    assert _files(out) == _files(encoded)


def test_a_second_encode_of_the_folder_and_other_settings_are_refused(setup, encoded, tmp_path):
    config, _, source = setup
    out = tmp_path / "busy"
    out.mkdir()
    with open(out / ".encode-0.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another data encode is writing this folder"):
            _encode(config, source, out)
    other = load_config("tiny", OVERRIDES + ["data.windows_per_clip=3"])
    with pytest.raises(ValueError, match=r"windows_per_clip: 2 \(folder\) vs 3 \(now\)"):
        _encode(other, source, encoded)
    fewer_slots = load_config("tiny", OVERRIDES + ["memory.num_preceding=2", "train.max_preceding=2",
                                                   f"data.source={encoded}"])
    with pytest.raises(ValueError, match=r"memory.num_preceding: 3 \(dataset\) vs 2 \(config\)"):
        pipeline.make_train_iterator(fewer_slots, None, None)
    with pytest.raises(ValueError, match="holds other files"):
        _encode(config, source, Path(source))
    with pytest.raises(ValueError, match="--source: expected a pose_clips dataset folder"):
        _encode(config, tmp_path, tmp_path / "x")


def test_a_corrupt_source_clip_is_named_or_skipped(setup, tmp_path):
    """A source shard with damaged bytes in its middle: the encode stops naming the split, the clip and the
    file; with ``skip_bad_clips`` the unreadable clip is skipped and listed in the dataset's description."""
    import shutil

    config, _, source = setup
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (shard,) = broken.glob("*train.array_record*")
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"--source: train clip \d+: .*array_record.*unreadable"):
        _encode(config, broken, tmp_path / "strict")
    out = _encode(config, broken, tmp_path / "lenient", skip_bad_clips=True)
    info = json.loads((out / "dataset_info.json").read_text())
    train = sum(int(n) for s in info["splits"] if s["name"] == "train" for n in s["shardLengths"])
    assert train == 8 and "skipped clips" in info["description"]  # one clip of 5 (2 windows) lost


def test_training_batches_from_latents_use_no_encoder(setup, encoded):
    """The pipeline over the latent dataset gets no latent space and no text encoder and still makes batches of
    the training contract, the same on a second iterator (reproducible)."""
    from mirage_jax.data.training_example import ExampleSizes, check_batch

    config = load_config("tiny", OVERRIDES + [f"data.source={encoded}"])
    assert pipeline.training_encoders(config) == (None, None)
    first, again = (next(pipeline.make_train_iterator(config, None, None)) for _ in range(2))
    check_batch(first, ExampleSizes.from_config(config), 2)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    np.testing.assert_array_equal(pipeline.empty_context(config, None),
                                  latent_dataset.CaptionTable(encoded).caption_context(""))
