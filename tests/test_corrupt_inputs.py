"""Corrupt or truncated input files (made by truncating real files the library wrote): a one-line ValueError
naming the file, never a BadZipFile / OSError / Riegeli error without a path."""

import re

import numpy as np
import pytest

from mirage_jax.data import load_geometry_npz, save_geometry_npz, tfds_io
from mirage_jax.data.pose_clips import pose_clips_dataset_builder as pcb
from mirage_jax.world.video import read_mp4, write_mp4, write_png


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(0)
    n, h, w = 5, 16, 24
    k = np.array([[20.0, 0, (w - 1) / 2], [0, 20.0, (h - 1) / 2], [0, 0, 1]], np.float32)
    return {"frames": rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
            "depths": rng.uniform(0.5, 5, (n, h, w)).astype(np.float32),
            "intrinsics": np.tile(k, (n, 1, 1)), "poses_c2w": np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))}


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "tail cut":
        path.write_bytes(data[:-30])
    elif how == "zeroed":  # the middle zeroed: a CRC or hash mismatch
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(64) + data[mid + 64:])
    else:
        path.write_bytes(b"not a file of this kind")


def _names(path) -> str:
    return f"^{re.escape(str(path))}: "


@pytest.mark.parametrize("how", ["truncated", "tail cut", "zeroed", "garbage"])
def test_corrupt_geometry_npz(tmp_path, clip, how):
    path = save_geometry_npz(tmp_path / "sample", clip)
    _damage(path, how)
    expected = r"not a readable \.npz file \(corrupt or truncated\?\): "
    with pytest.raises(ValueError, match=_names(path) + expected) as err:
        load_geometry_npz(path)
    assert "\n" not in str(err.value)


def _without_frames(tmp_path, clip):
    arrays = {k: clip[k] for k in ("depths", "intrinsics", "poses_c2w")}
    np.savez(tmp_path / "geometry.npz", **arrays)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_corrupt_clip_mp4_beside_the_npz(tmp_path, clip, how):
    _without_frames(tmp_path, clip)
    mp4 = write_mp4(tmp_path / "clip.mp4", clip["frames"])
    assert load_geometry_npz(tmp_path)["frames"].shape == clip["frames"].shape  # intact: readable
    _damage(mp4, how)
    expected = r"cannot read the image/video \(corrupt or truncated\?\): "
    with pytest.raises(ValueError, match=_names(mp4) + expected) as err:
        load_geometry_npz(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=_names(mp4) + r"cannot read the mp4 \(corrupt or truncated\?\)"):
        read_mp4(mp4)


def test_truncated_frame_image(tmp_path, clip):
    _without_frames(tmp_path, clip)
    pngs = [write_png(tmp_path / "frames" / f"{i:04d}.png", frame) for i, frame in enumerate(clip["frames"])]
    _damage(pngs[3], "truncated")
    with pytest.raises(ValueError, match=_names(pngs[3]) + "cannot read the image/video"):
        load_geometry_npz(tmp_path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A 3-clip procedural dataset written by the library: ``(config, data_dir, train shard file)``."""
    data_dir = tmp_path_factory.mktemp("data")
    config = pcb.make_config("procedural", num_clips=3, num_test_clips=1, num_frames=2, height=8, width=12)
    folder = tfds_io.build(config, data_dir)
    (shard,) = folder.glob("pose_clips-train.array_record-*")
    return config, data_dir, shard


@pytest.mark.parametrize("how", ["truncated", "garbage", "zeroed early"])
def test_corrupt_array_record(dataset, how):
    """Records are read lazily (by Grain): the failing read names the shard file and the record index."""
    config, data_dir, shard = dataset
    intact = shard.read_bytes()
    try:
        if how == "zeroed early":  # the first chunk's data: a Riegeli hash mismatch
            shard.write_bytes(intact[:100] + bytes(40) + intact[140:])
        else:
            _damage(shard, how)
        for source in (tfds_io.data_source(config, data_dir), tfds_io.folder_source(shard.parent)):
            assert len(source) == 3
            expected = r"record 0 of split 'train' is unreadable \(corrupt or truncated ArrayRecord file\?\): "
            with pytest.raises(ValueError, match=_names(shard) + expected) as err:
                source[0]
            assert "\n" not in str(err.value)
    finally:
        shard.write_bytes(intact)
    assert int(tfds_io.data_source(config, data_dir)[2]["clip_id"]) in (0, 1, 2)  # restored: readable again
