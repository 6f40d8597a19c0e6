"""geometry.npz read/write: round trip, official fallbacks, and one ValueError per kind of malformed input."""

import imageio.v3 as iio
import numpy as np
import pytest

from mirage_jax.data import load_geometry_npz, save_geometry_npz


def _clip(n=3, h=8, w=12):
    rng = np.random.default_rng(0)
    k = np.array([[10.0, 0, (w - 1) / 2], [0, 10.0, (h - 1) / 2], [0, 0, 1]], np.float32)
    poses = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    poses[:, :3, 3] = rng.normal(size=(n, 3))
    return {"frames": rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
            "depths": rng.uniform(0.5, 5, (n, h, w)).astype(np.float32),
            "intrinsics": np.tile(k, (n, 1, 1)), "poses_c2w": poses,
            "masks": rng.random((n, h, w)) > 0.2, "caption": "a room"}


def test_round_trip(tmp_path):
    clip = _clip()
    path = save_geometry_npz(tmp_path / "s1", clip)
    assert path.name == "geometry.npz"
    back = load_geometry_npz(tmp_path / "s1")
    for key in ("frames", "depths", "intrinsics", "poses_c2w", "masks"):
        np.testing.assert_array_equal(back[key], clip[key])
    assert back["caption"] == "a room"


def test_missing_masks_default_static_and_frames_from_folder(tmp_path):
    clip = _clip()
    arrays = {k: clip[k] for k in ("depths", "intrinsics", "poses_c2w")}
    np.savez(tmp_path / "geometry.npz", **arrays)
    (tmp_path / "frames").mkdir()
    for i, frame in enumerate(clip["frames"]):
        iio.imwrite(tmp_path / "frames" / f"{i:04d}.png", frame)
    back = load_geometry_npz(tmp_path / "geometry.npz")
    np.testing.assert_array_equal(back["frames"], clip["frames"])
    assert back["masks"].all()


def _corrupt(key, value):
    clip = _clip()
    if value is None:
        del clip[key]
    else:
        clip[key] = value(clip[key])
    return clip


def _non_rigid(poses):
    poses = poses.copy()
    poses[1, :3, :3] *= 2.0
    return poses


def _negative(depths):
    depths = depths.copy()
    depths[0, 0, 0] = -1.0
    return depths


@pytest.mark.parametrize("key, value, match", [
    ("frames", None, "missing key"),
    ("depths", None, "missing key"),
    ("intrinsics", None, "missing key"),
    ("poses_c2w", None, "missing key"),
    ("frames", lambda f: f[..., :2], "'frames' expected shape"),
    ("frames", lambda f: f[:2], "'frames' has 2 frames"),
    ("depths", lambda d: d[:, :-1], "'depths' expected shape"),
    ("depths", _negative, "'depths' has negative"),
    ("intrinsics", lambda k: k[:, :2], "'intrinsics' expected shape"),
    ("poses_c2w", lambda p: p[:-1], "'poses_c2w' expected shape"),
    ("poses_c2w", _non_rigid, "'poses_c2w'.*not rigid"),
    ("masks", lambda m: m[:, :, :-1], "'masks' expected shape"),
])
def test_malformed_npz_raises_naming_the_key(tmp_path, key, value, match):
    clip = _corrupt(key, value)
    np.savez(tmp_path / "geometry.npz", **clip)
    with pytest.raises(ValueError, match=match):
        load_geometry_npz(tmp_path / "geometry.npz")
    with pytest.raises(ValueError, match=match):
        save_geometry_npz(tmp_path / "out.npz", clip)


def test_single_first_frame_official_layout(tmp_path):
    clip = _clip()
    clip["frames"] = clip["frames"][:1]
    np.savez(tmp_path / "geometry.npz", **clip)
    back = load_geometry_npz(tmp_path)
    assert back["frames"].shape[0] == 1 and back["poses_c2w"].shape[0] == 3
    with pytest.raises(ValueError, match="'frames' has 1 frames, expected 3"):
        load_geometry_npz(tmp_path, require_all_frames=True)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_geometry_npz(tmp_path / "nothing.npz")
