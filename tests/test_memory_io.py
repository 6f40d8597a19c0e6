"""Orbax save/restore round trip and import of the official geometry.npz first frame."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from mirage_jax import geometry, memory
from mirage_jax.data import memory_from_geometry_npz, save_geometry_npz
from tests.memory_scenes import intrinsics, random_poses

HW = (6, 8)


def test_orbax_round_trip(tmp_path):
    rng = np.random.default_rng(30)
    mem = memory.init(200, 4, dtype="bfloat16", voxel_size=0.2)
    depths = rng.uniform(1.0, 3.0, (2, 12, 16)).astype(np.float32)
    mem = memory.write(mem, rng.standard_normal((2, *HW, 4)).astype(np.float32), depths,
                       intrinsics(2, (12, 16)), random_poses(rng, 2))
    path = memory.save(tmp_path / "mem", mem)
    back = memory.restore(path)
    assert back.voxel_size == mem.voxel_size and back.features.dtype == mem.features.dtype
    for a, b in zip(jax.tree.leaves(mem), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="path"):
        memory.restore(tmp_path / "nothing")


def test_from_geometry_npz_first_frame(tmp_path):
    rng = np.random.default_rng(31)
    n, big = 3, (HW[0] * 4, HW[1] * 4)
    depths = rng.uniform(1.0, 5.0, (n, *big)).astype(np.float32)
    masks = np.ones((n, *big), bool)
    masks[0, :4, :4] = False  # a dynamic object in the top-left block of frame 0
    clip = dict(frames=np.zeros((n, *big, 3), np.uint8), depths=depths, intrinsics=intrinsics(n, big, f=20.0),
                poses_c2w=random_poses(rng, n), masks=masks)
    path = save_geometry_npz(tmp_path / "clip", clip)
    latent = rng.standard_normal((*HW, 48)).astype(np.float32)
    mem = memory_from_geometry_npz(path, latent, capacity=100)
    assert memory.num_points(mem) == HW[0] * HW[1] - 1
    k_latent = geometry.scale_intrinsics(clip["intrinsics"][:1], big, HW)
    feats, hit = memory.read(mem, k_latent, clip["poses_c2w"][:1], HW)
    assert not bool(hit[0, 0, 0]) and int(hit.sum()) == HW[0] * HW[1] - 1
    np.testing.assert_array_equal(np.asarray(feats)[0, 1:], latent[1:])
    with pytest.raises(ValueError, match="first_latent"):
        memory_from_geometry_npz(path, latent[0], capacity=100)
