"""memory.write / memory.read against the numpy reference and analytic cases (docs/design.md §3)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from mirage_jax import geometry, memory
from tests.memory_reference import ref_downsample, ref_init, ref_read, ref_write
from tests.memory_scenes import intrinsics, memory_from_points, off_boundaries, points_in_view, random_poses, stored

HW = (6, 8)
C = 5
CAP = 150  # one capacity for all tests here: fewer compilations


@pytest.fixture(scope="module")
def random_scene():
    """~1500 points seen by 3 cameras, incl. 40 copies of one point (exact depth ties) in one cell."""
    rng = np.random.default_rng(0)
    ks, poses = intrinsics(3, HW, f=6.0), random_poses(rng, 3)
    pts = np.concatenate([points_in_view(rng, ks[i], poses[i], HW, 500) for i in range(3)])
    pts = pts[off_boundaries(pts, ks, poses)]
    crowd = points_in_view(rng, ks[0], poses[0], HW, 1, depth_range=(0.3, 0.3), margin=-2).repeat(30, 0)
    centre = np.asarray(poses[0], np.float64)[:3, 3]
    deeper = centre + (crowd - centre) * rng.uniform(1.01, 3.0, (30, 1))  # same ray, farther
    pts = np.concatenate([pts, crowd, deeper])
    n = len(pts)
    feats = rng.standard_normal((n, C)).astype(np.float32)
    wid = rng.permutation(10 * n)[:n]  # unique, unordered write ids
    return pts.astype(np.float32), feats, wid, ks, poses


def test_read_matches_reference_random(random_scene):
    pts, feats, wid, ks, poses = random_scene
    mem = memory_from_points(pts, feats, wid, capacity=len(pts) + 7)
    got_f, got_hit = memory.read(mem, ks, poses, HW)
    ref_f, ref_hit, ref_win = ref_read(pts, feats, wid, ks, poses, HW)
    assert ref_hit.sum() > 0.5 * ref_hit.size
    np.testing.assert_array_equal(np.asarray(got_hit), ref_hit)
    np.testing.assert_array_equal(np.asarray(got_f), ref_f)
    # the crowded cell: winner is the lowest write id among the 30 exact copies (nearest depth)
    crowd = np.arange(len(pts) - 60, len(pts) - 30)
    crowd_cells = np.argwhere(np.isin(ref_win[0], crowd))
    assert len(crowd_cells) == 1
    v, u = crowd_cells[0]
    assert ref_win[0, v, u] == crowd[np.argmin(wid[crowd])]
    np.testing.assert_array_equal(np.asarray(got_f)[0, v, u], feats[crowd[np.argmin(wid[crowd])]])


def test_permuting_points_changes_nothing(random_scene):
    pts, feats, wid, ks, poses = random_scene
    perm = np.random.default_rng(1).permutation(len(pts))
    a = memory.read(memory_from_points(pts, feats, wid), ks, poses, HW)
    b = memory.read(memory_from_points(pts[perm], feats[perm], wid[perm]), ks, poses, HW)
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))


def _random_frames(rng, t, hw, factor, holes=0.1):
    h, w = hw
    depths = rng.uniform(1.0, 4.0, (t, h * factor, w * factor)).astype(np.float32)
    depths[rng.random(depths.shape) < holes] = 0.0
    depths[rng.random(depths.shape) < 0.01] = np.nan
    depths[rng.random(depths.shape) < 0.01] = np.inf
    keep = rng.random(depths.shape) > 0.02
    latents = rng.standard_normal((t, h, w, C)).astype(np.float32)
    return latents, depths, keep


@pytest.mark.parametrize("mode", ["bilinear", "robust"])
def test_write_matches_reference(mode):
    """Three writes into a small memory (dedup + eviction both happen); stored sets equal the reference.

    The same writes done in place (``donate=True``) give bit-identical states.
    """
    rng = np.random.default_rng(2)
    cap, factor = CAP, 2
    mem, ref = memory.init(cap, C, voxel_size=0.3), ref_init(cap, C, voxel_size=0.3)
    in_place = memory.init(cap, C, voxel_size=0.3)
    for step in range(3):
        latents, depths, keep = _random_frames(rng, 2, HW, factor)
        ks = intrinsics(2, (HW[0] * factor, HW[1] * factor), f=10.0)
        poses = random_poses(rng, 2, radius=0.2)
        mem = memory.write(mem, latents, depths, ks, poses, keep, depth_downsample=mode)
        in_place = memory.write(in_place, latents, depths, ks, poses, keep, depth_downsample=mode, donate=True)
        ref = ref_write(ref, latents, depths, ks, poses, keep, mode)
        for a, b in zip(jax.tree_util.tree_leaves(mem), jax.tree_util.tree_leaves(in_place)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        got = stored(mem)
        assert sorted(got) == sorted(ref["write_id"].tolist()), step
        for i, wid in enumerate(ref["write_id"]):
            p, f, fr = got[int(wid)]
            np.testing.assert_allclose(p, ref["points"][i], rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(f, ref["features"][i])
            assert fr == ref["frame_id"][i]
        assert int(mem.next_write_id) == ref["next_write_id"]
        assert memory.num_points(mem) == len(ref["write_id"]) <= cap
    assert ref["next_write_id"] > cap  # eviction was exercised


@pytest.mark.parametrize("mode", ["bilinear", "robust"])
def test_downsample_matches_reference(mode):
    rng = np.random.default_rng(3)
    for factor in (1, 3, 4):
        _, depths, keep = _random_frames(rng, 2, HW, factor)
        got_d, got_ok = memory.downsample_depth(depths, keep, HW, mode)
        ref_d, ref_ok = ref_downsample(depths, keep, HW, mode)
        np.testing.assert_array_equal(np.asarray(got_ok), ref_ok)
        np.testing.assert_array_equal(np.asarray(got_d), ref_d)


def test_bilinear_downsample_equals_torch_interpolate():
    from tests.conftest import require_torch_stack

    torch = require_torch_stack()
    rng = np.random.default_rng(4)
    depths = rng.uniform(0.5, 9.0, (2, 6 * 16, 8 * 16)).astype(np.float32)
    depths[:, ::7, ::5] = 0.0  # holes get mixed in, exactly as the official
    want = torch.nn.functional.interpolate(torch.from_numpy(depths)[:, None], size=HW, mode="bilinear",
                                           align_corners=False)[:, 0].numpy()
    got, ok = memory.downsample_depth(depths, None, HW, "bilinear")
    np.testing.assert_array_equal(np.where(want > 0, want, 0), np.asarray(got))
    np.testing.assert_array_equal(want > 0, np.asarray(ok))


def test_write_then_read_at_writing_camera_is_exact():
    rng = np.random.default_rng(5)
    latents, depths, keep = _random_frames(rng, 1, HW, 2, holes=0.0)
    ks, poses = intrinsics(1, (HW[0] * 2, HW[1] * 2), f=10.0), random_poses(rng, 1)
    mem = memory.write(memory.init(CAP, C), latents, depths, ks, poses, keep, depth_downsample="robust")
    _, ok = memory.downsample_depth(depths, keep, HW, "robust")
    assert 0 < int(ok.sum()) < ok.size  # some cells invalid (NaN, inf, masked)
    feats, hit = memory.read(mem, geometry.scale_intrinsics(ks, depths.shape[1:], HW), poses, HW)
    np.testing.assert_array_equal(np.asarray(hit), np.asarray(ok))
    np.testing.assert_array_equal(np.asarray(feats), np.where(np.asarray(ok)[..., None], latents, 0))


def _plane(depth, t=1, factor=2):
    return np.full((t, HW[0] * factor, HW[1] * factor), depth, np.float32)


def test_fronto_parallel_plane_shifts_by_predicted_cells():
    """Plane at z=2, latent fx=10: moving the camera 0.6 m right shifts content 10·0.6/2 = 3 cells left."""
    rng = np.random.default_rng(6)
    latents = rng.standard_normal((1, *HW, C)).astype(np.float32)
    k_latent = intrinsics(1, HW, f=10.0)
    k_depth = np.asarray(geometry.scale_intrinsics(k_latent, HW, (HW[0] * 2, HW[1] * 2)))
    pose = np.eye(4, dtype=np.float32)[None]
    mem = memory.write(memory.init(CAP, C), latents, _plane(2.0), k_depth, pose)
    moved = pose.copy()
    moved[0, 0, 3] = 0.6
    feats, hit = memory.read(mem, k_latent, moved, HW)
    np.testing.assert_array_equal(np.asarray(feats)[0, :, : HW[1] - 3], latents[0, :, 3:])
    assert np.asarray(hit)[0, :, : HW[1] - 3].all() and not np.asarray(hit)[0, :, HW[1] - 3 :].any()


@pytest.mark.parametrize("near_first", [True, False])
def test_occluder_in_front_wins(near_first):
    k_latent = intrinsics(1, HW, f=10.0)
    k_depth = np.asarray(geometry.scale_intrinsics(k_latent, HW, (HW[0] * 2, HW[1] * 2)))
    pose = np.eye(4, dtype=np.float32)[None]
    far = np.full((1, *HW, C), 1.0, np.float32)
    near = np.full((1, *HW, C), 7.0, np.float32)
    square = np.zeros((1, HW[0] * 2, HW[1] * 2), bool)
    square[:, 4:8, 6:12] = True  # cells rows 2-3, cols 3-5
    writes = [(near, _plane(1.0), square), (far, _plane(4.0), None)]
    mem = memory.init(CAP, C)
    for lat, dep, keep in writes if near_first else writes[::-1]:
        mem = memory.write(mem, lat, dep, k_depth, pose, keep)
    feats, hit = memory.read(mem, k_latent, pose, HW)
    want = np.ones(HW)
    want[2:4, 3:6] = 7.0
    assert np.asarray(hit).all()
    np.testing.assert_array_equal(np.asarray(feats)[0, ..., 0], want)


def test_permuted_slots_write_and_read_identically():
    rng = np.random.default_rng(7)
    mem = memory.init(CAP, C, voxel_size=0.3)
    ks = intrinsics(2, (HW[0] * 2, HW[1] * 2), f=10.0)
    for _ in range(2):
        latents, depths, keep = _random_frames(rng, 2, HW, 2)
        mem = memory.write(mem, latents, depths, ks, random_poses(rng, 2, 0.2), keep)
    perm = rng.permutation(mem.capacity)
    permuted = dataclasses.replace(
        mem, **{f: getattr(mem, f)[perm] for f in ("points", "features", "valid", "write_id", "frame_id")}
    )
    latents, depths, keep = _random_frames(rng, 2, HW, 2)
    poses = random_poses(rng, 2, 0.2)
    a = memory.write(mem, latents, depths, ks, poses, keep)
    b = memory.write(permuted, latents, depths, ks, poses, keep)
    assert stored(a).keys() == stored(b).keys()
    read_k = intrinsics(3, HW, f=5.0)
    read_p = random_poses(rng, 3, 0.3)
    fa, ha = memory.read(a, read_k, read_p, HW)
    fb, hb = memory.read(b, read_k, read_p, HW)
    assert np.asarray(ha).any()
    np.testing.assert_array_equal(np.asarray(ha), np.asarray(hb))
    np.testing.assert_array_equal(np.asarray(fa), np.asarray(fb))


def test_bfloat16_features_and_bytes_per_point():
    mem32, mem16 = memory.init(10, 48), memory.init(10, 48, dtype="bfloat16")
    assert memory.bytes_per_point(mem32) == 12 + 48 * 4 + 1 + 4 + 4 == 213
    assert memory.bytes_per_point(mem16) == 117
    assert memory.memory_bytes(mem32) == 10 * 213 + 8
    latents = np.full((1, *HW, 48), 1.5, np.float32)
    k = intrinsics(1, HW)
    mem16 = memory.write(memory.init(100, 48, dtype="bfloat16"), latents, _plane(2.0, factor=1), k, np.eye(4)[None])
    feats, hit = memory.read(mem16, k, np.eye(4)[None], HW)
    assert feats.dtype == mem16.features.dtype and np.asarray(hit).all()
    np.testing.assert_array_equal(np.asarray(feats, np.float32), latents)


def test_points_behind_or_at_the_camera_are_not_drawn():
    """A point behind the camera whose projection falls inside the grid, and one nearer than the near plane,
    are not drawn; the same cell is hit by a point just beyond it."""
    k = intrinsics(1, HW)
    pose = np.eye(4, dtype=np.float32)[None]
    cx, cy = k[0, 0, 2], k[0, 1, 2]
    points = np.array([[0.0, 0.0, -2.0], [0.0, 0.0, 0.5 * memory.NEAR]], np.float32)  # behind / too near
    mem = memory_from_points(points, np.ones((2, C), np.float32), np.arange(2), capacity=4)
    _, hit = memory.read(mem, k, pose, HW)
    assert not np.asarray(hit).any()
    beyond = np.array([[0.0, 0.0, 2.0 * memory.NEAR]], np.float32)
    mem = memory_from_points(beyond, np.ones((1, C), np.float32), np.arange(1), capacity=4)
    _, hit = memory.read(mem, k, pose, HW)
    assert np.asarray(hit)[0, int(round(cy)), int(round(cx))] and np.asarray(hit).sum() == 1
