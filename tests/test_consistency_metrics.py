"""The consistency protocols on cases with known answers (a 12x20 grid, so no shape constant passes by accident).

The scene is a fronto-parallel plane at depth 2 m seen by cameras with fx = fy = 10 px: moving the camera by
0.2 m along x moves the image by exactly 1 px (fx t / d), so warps land on whole cells.
"""

from __future__ import annotations

import numpy as np
import pytest

from mirage_jax import geometry
from mirage_jax.data.synthetic import render_clip
from mirage_jax.world.consistency import closed_loop, gap_pairs, per_chunk_mean, reprojection_error

H, W, DEPTH, FOCAL = 12, 20, 2.0, 10.0
PX_PER_M = FOCAL / DEPTH  # image shift (px) per metre of camera motion along x


def _cameras(shifts_m):
    """``intrinsics [N, 3, 3]`` and identity-rotation poses ``[N, 4, 4]`` at x = ``shifts_m``; depth planes."""
    n = len(shifts_m)
    k = np.repeat(np.asarray(geometry.make_intrinsics(FOCAL, FOCAL, (W - 1) / 2, (H - 1) / 2))[None], n, 0)
    poses = np.repeat(np.eye(4, dtype=np.float32)[None], n, 0)
    poses[:, 0, 3] = shifts_m
    return k, poses, np.full((n, H, W), DEPTH, np.float32)


def _ramp(offset_px=0):
    """uint8 ``[H, W, 3]`` image ``7 (u + offset) + 3 v``: a shift by s columns changes every pixel by 7 s."""
    v, u = np.mgrid[:H, :W]
    return np.repeat((7 * (u + offset_px) + 3 * v)[..., None], 3, -1).astype(np.uint8)


def _texture(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def test_identical_frames_and_cameras_have_zero_error_and_full_coverage():
    k, poses, depths = _cameras([0.0, 0.0])
    frames = np.stack([_texture(), _texture()])
    error, coverage = reprojection_error(frames, depths, k, poses, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(error, [0.0, 0.0])
    np.testing.assert_array_equal(coverage, [1.0, 1.0])


def test_known_shift_warps_exactly():
    """The camera moves 0.4 m right: the image moves 2 px left; the 2 columns that leave the view do not count."""
    k, poses, depths = _cameras([0.0, 0.4])
    first = _texture()
    second = np.zeros_like(first)
    second[:, : W - 2] = first[:, 2:]
    error, coverage = reprojection_error(np.stack([first, second]), depths, k, poses, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(error, [0.0, 0.0])
    np.testing.assert_allclose(coverage, [(W - 2) / W] * 2)


def test_frame_shifted_by_a_wrong_number_of_pixels_gives_the_known_error():
    """Shifted by 3 px where the cameras say 2: every covisible pixel is off by one column of the ramp, 7/255."""
    k, poses, depths = _cameras([0.0, 0.4])
    frames = np.stack([_ramp(), _ramp(offset_px=3)])
    error, _ = reprojection_error(frames, depths, k, poses, [[0, 1]])
    np.testing.assert_allclose(error, [7.0], atol=1e-4)
    as_float = frames.astype(np.float32) / 127.5 - 1  # [-1, 1] frames: the same error on the 0..255 scale
    np.testing.assert_allclose(reprojection_error(as_float, depths, k, poses, [[0, 1]])[0], [7.0], atol=1e-3)


@pytest.mark.parametrize("pose_error_m, expected", [(0.0, 0.0), (0.2, 7.0), (0.4, 14.0), (0.6, 21.0)])
def test_wrong_pose_error_grows_with_the_pose_error(pose_error_m, expected):
    """The frames moved 0.4 m; the pose of the second claims 0.4 m + the pose error (5 px per metre)."""
    k, poses, depths = _cameras([0.0, 0.4 + pose_error_m])
    frames = np.stack([_ramp(), _ramp(offset_px=2)])
    error, coverage = reprojection_error(frames, depths, k, poses, [[0, 1]])
    np.testing.assert_allclose(error, [expected], atol=1e-4)
    shift = round(2 + pose_error_m * PX_PER_M)
    np.testing.assert_allclose(coverage, [(W - shift) / W])


def test_occluded_and_invalid_pixels_do_not_count():
    """An occluder at 1 m in view 1 (columns 5..8) hides the plane there; garbage behind it does not count.
    Invalid depth (0, NaN) in view 0 drops those pixels; a pair with nothing covisible is NaN."""
    k, poses, depths = _cameras([0.0, 0.0])
    first = _texture()
    second = first.copy()
    second[:, 5:9] = 255 - first[:, 5:9]
    depths[1, :, 5:9] = 1.0
    depths[0, 0, :] = 0.0
    depths[0, 1, :] = np.nan
    error, coverage = reprojection_error(np.stack([first, second]), depths, k, poses, [[0, 1]])
    assert error[0] == 0.0
    np.testing.assert_allclose(coverage, [(H - 2) * (W - 4) / (H * W)])
    depths[0] = 0.0
    error, coverage = reprojection_error(np.stack([first, second]), depths, k, poses, [[0, 1]])
    assert np.isnan(error[0]) and coverage[0] == 0.0


def test_ground_truth_render_reprojects_better_than_a_frozen_video():
    """On a procedural clip (real geometry, exact depth): the ground-truth frames warp onto each other with a
    small error; a video that ignores the camera (frame 0 repeated) does not."""
    clip = render_clip(0, 17, H + 4, W + 4, "forward")
    args = (clip["depths"], clip["intrinsics"], clip["poses_c2w"], gap_pairs(17, 2))
    gt, coverage = reprojection_error(clip["frames"], *args)
    frozen, _ = reprojection_error(np.repeat(clip["frames"][:1], 17, 0), *args)
    assert (coverage > 0.5).all()
    assert gt.mean() < 0.5 * frozen.mean()


def test_reprojection_input_errors_name_the_field():
    k, poses, depths = _cameras([0.0, 0.4])
    frames = np.stack([_texture(), _texture()])
    with pytest.raises(ValueError, match=r"depths: expected shape \[2, 12, 20\]"):
        reprojection_error(frames, depths[:, :-1], k, poses, [[0, 1]])
    with pytest.raises(ValueError, match=r"pairs: expected .* in \[0, 2\)"):
        reprojection_error(frames, depths, k, poses, [[0, 2]])
    with pytest.raises(ValueError, match="rel_tol: expected 0 < rel_tol < 1"):
        reprojection_error(frames, depths, k, poses, [[0, 1]], rel_tol=0.0)


def test_gap_pairs():
    np.testing.assert_array_equal(gap_pairs(7, 4), [[0, 4], [1, 5], [2, 6]])
    with pytest.raises(ValueError, match="reprojection_gap: expected 1 <= gap < num_frames=4, got 4"):
        gap_pairs(4, 4)


def test_closed_loop_known_answers():
    first = _texture().clip(0, 200).astype(np.uint8)
    middle = _texture(1)
    same = closed_loop(np.stack([first, middle, first]))
    assert same["closed_loop_psnr"] == pytest.approx(100.0)  # the cap: MSE floored at 1e-10
    assert same["closed_loop_ssim"] == pytest.approx(1.0)
    brighter = closed_loop(np.stack([first, middle, first + 10]))  # every value off by 10/255
    assert brighter["closed_loop_psnr"] == pytest.approx(20 * np.log10(255 / 10), abs=1e-3)
    assert brighter["closed_loop_ssim"] < 1.0


def test_per_chunk_mean():
    values = [1.0, 2.0, 3.0, np.nan, 5.0]
    means = per_chunk_mean(values, [0, 1, 2, 3, 4], [(0, 2), (2, 4), (4, 5), (5, 9)])
    assert means[:3] == [1.5, 3.0, 5.0] and np.isnan(means[3])
