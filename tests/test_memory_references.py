"""Reference selection by voxel IoU against set-based numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from mirage_jax import memory
from tests.memory_reference import ref_visible, ref_voxel_iou
from tests.memory_scenes import intrinsics, memory_from_points, off_boundaries, points_in_view, random_poses

HW = (6, 8)


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(10)
    hist_p = random_poses(rng, 6, radius=1.0)
    hist_p[4:, :3, :3] = -hist_p[4:, :3, :3] * np.array([1, -1, 1])[None]  # turned away (rigid: diag(-1,1,-1))
    tgt_p = random_poses(rng, 3, radius=0.5)
    k = intrinsics(1, HW, f=6.0)[0]
    pts = np.concatenate([points_in_view(rng, k, p, HW, 150, depth_range=(1.0, 6.0)) for p in tgt_p[:2]])
    all_poses = np.concatenate([hist_p, tgt_p])
    pts = pts[off_boundaries(pts, [k] * len(all_poses), all_poses)].astype(np.float32)
    return pts, np.stack([k] * 6), hist_p, np.stack([k] * 3), tgt_p


@pytest.mark.parametrize("occlusion_aware", [False, True])
def test_visible_matches_reference(scene, occlusion_aware):
    pts, hk, hp, _, _ = scene
    key = np.random.default_rng(0).permutation(len(pts)).astype(np.int32)
    got = memory.visible(pts, np.ones(len(pts), bool), hk, hp, HW, occlusion_aware=occlusion_aware, key=key)
    np.testing.assert_array_equal(np.asarray(got), ref_visible(pts, hk, hp, HW, occlusion_aware, key))


def test_voxel_iou_matches_sets(scene):
    pts = scene[0]
    rng = np.random.default_rng(1)
    hist = rng.random((5, len(pts))) < np.array([0.0, 0.1, 0.5, 0.9, 1.0])[:, None]
    tgt = rng.random((2, len(pts))) < 0.3
    for voxel in (0.1, 0.5):
        got = memory.voxel_iou(pts, hist, tgt, voxel)
        np.testing.assert_allclose(np.asarray(got), ref_voxel_iou(pts, hist, tgt, voxel), rtol=1e-6)


@pytest.mark.parametrize("occlusion_aware", [False, True])
def test_select_references_from_memory(scene, occlusion_aware):
    pts, hk, hp, tk, tp = scene
    mem = memory_from_points(pts, np.zeros((len(pts), 2), np.float32), np.arange(len(pts)), capacity=len(pts) + 5)
    refs = memory.select_references(mem, hk, hp, tk, tp, HW, occlusion_aware=occlusion_aware)
    valid = np.ones(len(pts), bool)
    hist_seen = ref_visible(pts, hk, hp, HW, occlusion_aware)
    iou = ref_voxel_iou(pts, hist_seen, ref_visible(pts, tk, tp, HW, occlusion_aware))
    np.testing.assert_allclose(np.asarray(refs.iou), iou, rtol=1e-6)
    assert iou[4] == iou[5] == 0 and (iou[:4] > 0.04).sum() >= 2  # the turned-away cameras see nothing
    order = [i for i in np.argsort(-iou, kind="stable") if iou[i] >= 0.04][:4]
    want = np.full(4, -1)
    want[: len(order)] = order
    np.testing.assert_array_equal(np.asarray(refs.indices), want)
    np.testing.assert_allclose(np.asarray(refs.scores)[: len(order)], iou[order], rtol=1e-6)
    # points given directly, one candidate masked out, k larger than F, a high threshold
    masked = memory.select_references(pts, hk, hp, tk, tp, HW, valid=valid, occlusion_aware=occlusion_aware,
                                      history_mask=np.arange(6) != order[0], k=8, threshold=0.0)
    idx = np.asarray(masked.indices)
    assert order[0] not in idx and idx.shape == (8,) and (idx[:5] >= 0).all() and (idx[5:] == -1).all()
    none = memory.select_references(pts, hk, hp, tk, tp, HW, threshold=1.01)
    assert (np.asarray(none.indices) == -1).all()


def test_select_references_rejects_bad_input(scene):
    pts, hk, hp, tk, tp = scene
    with pytest.raises(ValueError, match="source"):
        memory.select_references(pts[:, :2], hk, hp, tk, tp, HW)
    with pytest.raises(ValueError, match="history_cam2world"):
        memory.select_references(pts, hk, hp[:2], tk, tp, HW)
    with pytest.raises(ValueError, match="history_mask"):
        memory.select_references(pts, hk, hp, tk, tp, HW, history_mask=np.ones(3, bool))
