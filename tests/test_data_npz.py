"""geometry.npz read/write: round trip, official fallbacks, and one ValueError per kind of malformed input."""

import re

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


def test_float_frames_in_unit_range_are_scaled_to_uint8(tmp_path):
    """Float frames in [0, 1] were cast to uint8 as they were: all black (0 or 1)."""
    clip = _clip()
    clip["frames"] = np.array([0.0, 0.5, 1.0, 0.2])[np.arange(clip["frames"].size) % 4].reshape(
        clip["frames"].shape).astype(np.float32)
    np.savez(tmp_path / "geometry.npz", **clip)
    back = load_geometry_npz(tmp_path)
    assert back["frames"].dtype == np.uint8
    assert back["frames"].reshape(-1)[:4].tolist() == [0, 128, 255, 51]


@pytest.mark.parametrize("frames, found", [
    (np.full((3, 8, 12, 3), 200.0, np.float32), r"float32 values in \[200, 200\]"),
    (np.full((3, 8, 12, 3), -0.5, np.float64), r"float64 values in \[-0.5, -0.5\]"),
    (np.where(np.arange(3 * 8 * 12 * 3).reshape(3, 8, 12, 3) == 7, np.nan, 0.25),
     r"float64 values in \[0.25, 0.25\], and NaN or inf"),
    (np.full((3, 8, 12, 3), 7, np.int64), "dtype int64"),
    (np.full((3, 8, 12, 3), 7, np.uint16), "dtype uint16"),
])
def test_frames_outside_uint8_or_unit_floats_are_refused(tmp_path, frames, found):
    clip = _clip() | {"frames": frames}
    np.savez(tmp_path / "geometry.npz", **clip)
    expected = r"key 'frames' expected uint8 \(0..255\) or float in \[0, 1\], got "
    with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / 'geometry.npz'))}: {expected}{found}$"):
        load_geometry_npz(tmp_path)


def _generation_clip(tmp_path, no_depth=()):
    """A 9-frame geometry.npz at the tiny config's latent grid (16x24 px), ``no_depth`` frames without valid
    depth (zeros and NaN), loaded back."""
    clip = _clip(n=9, h=16, w=24)
    for i in no_depth:
        clip["depths"][i] = 0.0
        clip["depths"][i, 0, 0] = np.nan
    return load_geometry_npz(save_geometry_npz(tmp_path / "sample", clip))


def _tiny_config():
    from mirage_jax.config import load_config

    return load_config("tiny", ["--config.data.height=16", "--config.data.width=24"])


@pytest.mark.parametrize("cache", ["latent", "rgb"])
def test_generation_refuses_a_memory_seed_frame_without_depth(tmp_path, cache):
    """The first frame seeds the memory: without valid depth the memory would stay empty, silently."""
    from mirage_jax.world.generator import check_inputs

    clip = _generation_clip(tmp_path, no_depth=[0])
    path = re.escape(str(tmp_path / "sample" / "geometry.npz"))
    with pytest.raises(ValueError, match=f"^{path}: key 'depths' has no valid depth .* in frame 0, the frame that "
                                         "seeds the memory"):
        check_inputs(_tiny_config(), clip, 9, cache=cache)
    assert len(check_inputs(_tiny_config(), clip, 9, cache="none")) == 1  # no memory: nothing to seed
    with pytest.raises(ValueError, match="in frame 4, the frame that seeds"):
        check_inputs(_tiny_config(), _generation_clip(tmp_path, no_depth=[4]), 5, start=4, cache=cache)


def test_generation_warns_about_written_frames_without_depth(tmp_path):
    """Frames 4 and 8 are written back (latent frames); frame 2 is not, so it is not named."""
    from mirage_jax.world.generator import check_inputs

    clip = _generation_clip(tmp_path, no_depth=[2, 4, 8])
    with pytest.warns(UserWarning, match=r"key 'depths' has no valid depth .* in frames \[4, 8\]: the memory "
                                         "stores nothing from them"):
        check_inputs(_tiny_config(), clip, 9, cache="latent")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_inputs(_tiny_config(), clip, 9, cache="latent", depth_source=lambda *a: None)  # depth not from here
