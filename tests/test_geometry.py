"""Camera geometry: conventions, inverses, lifting/projection round trips, converters, validation."""

import numpy as np
import pytest

from mirage_jax import geometry


def random_pose(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    pose = np.eye(4, dtype=np.float32)
    pose[:3, :3] = q
    pose[:3, 3] = rng.normal(size=3)
    return pose


def test_scale_intrinsics_maps_pixel_to_latent_grid():
    k = np.asarray(geometry.make_intrinsics(500.0, 510.0, 640.0, 352.0))
    k_lat = np.asarray(geometry.scale_intrinsics(k, (704, 1280), (44, 80)))
    np.testing.assert_allclose(k_lat[0], [500 / 16, 0, 40.0], rtol=1e-6)
    np.testing.assert_allclose(k_lat[1], [0, 510 / 16, 22.0], rtol=1e-6)
    np.testing.assert_allclose(k_lat[2], [0, 0, 1], rtol=0)


def test_scale_intrinsics_scales_each_axis_by_its_own_factor():
    """A grid change with different factors per axis (20 -> 4 columns: 1/5; 10 -> 5 rows: 1/2)."""
    k = np.asarray(geometry.make_intrinsics(30.0, 40.0, 9.5, 4.5))
    k_new = np.asarray(geometry.scale_intrinsics(k, (10, 20), (5, 4)))
    np.testing.assert_allclose(k_new, [[6.0, 0, 1.9], [0, 20.0, 2.25], [0, 0, 1]], rtol=1e-6)


def test_invert_rigid_matches_general_inverse():
    rng = np.random.default_rng(0)
    poses = np.stack([random_pose(rng) for _ in range(5)])
    np.testing.assert_allclose(np.asarray(geometry.invert_rigid(poses)), np.linalg.inv(poses), atol=1e-5)


def test_backproject_then_project_returns_pixel_grid():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 5.0, size=(6, 8)).astype(np.float32)
    k = np.asarray(geometry.make_intrinsics(7.0, 6.5, 3.5, 2.5))
    c2w = random_pose(rng)
    world = np.asarray(geometry.backproject_to_world(depth, k, c2w)).reshape(-1, 3)
    uv, z = geometry.project(world, k, c2w)
    u, v = geometry.pixel_grid((6, 8))
    np.testing.assert_allclose(np.asarray(uv)[:, 0], np.asarray(u).ravel(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(uv)[:, 1], np.asarray(v).ravel(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(z), depth.ravel(), rtol=1e-5)


def test_backproject_uses_integer_pixel_centres():
    k = np.asarray(geometry.make_intrinsics(2.0, 4.0, 1.0, 0.0))
    pts = np.asarray(geometry.backproject(np.full((2, 3), 2.0, np.float32), k))
    # pixel (u=2, v=1): X = (2-1)*2/2 = 1, Y = (1-0)*2/4 = 0.5, Z = 2
    np.testing.assert_allclose(pts[1, 2], [1.0, 0.5, 2.0])


def test_look_at_faces_target_with_opencv_axes():
    pose = np.asarray(geometry.look_at([0.0, 0.0, -3.0], [0.0, 0.0, 0.0]))
    geometry.validate_poses(pose)
    np.testing.assert_allclose(pose[:3, 2], [0, 0, 1], atol=1e-6)  # camera z (forward) -> world +z
    np.testing.assert_allclose(pose[:3, 1], [0, 1, 0], atol=1e-6)  # camera y (down) = -up = world +y
    _, z = geometry.project(np.array([[0.0, 0.0, 0.0]]), geometry.make_intrinsics(1, 1, 0, 0), pose)
    assert float(z[0]) == pytest.approx(3.0)


def test_opengl_converter_keeps_the_camera_and_flips_axes():
    rng = np.random.default_rng(2)
    c2w_cv = random_pose(rng)
    c2w_gl = geometry.opencv_to_opengl_c2w(c2w_cv)
    np.testing.assert_allclose(c2w_gl[:3, 3], c2w_cv[:3, 3])  # same camera centre
    np.testing.assert_allclose(c2w_gl[:3, 2], -c2w_cv[:3, 2], atol=1e-6)  # GL looks down -z
    np.testing.assert_allclose(geometry.opengl_to_opencv_c2w(c2w_gl), c2w_cv, atol=1e-6)


def test_realestate10k_converter_matches_continuous_projection():
    rng = np.random.default_rng(3)
    c2w = random_pose(rng)
    w2c = np.linalg.inv(c2w)[:3].reshape(1, 12)
    norm = np.array([[0.9, 1.6, 0.5, 0.48]])
    h, w = 90, 160
    k, c2w_ours = geometry.from_realestate10k(w2c, norm, (h, w))
    np.testing.assert_allclose(c2w_ours[0], c2w, atol=1e-5)
    point_cam = np.array([0.3, -0.2, 2.0])
    world = (c2w[:3, :3] @ point_cam + c2w[:3, 3])[None]
    # RE10K's convention: continuous coordinates, pixel corners at integers.
    u_cont = norm[0, 0] * w * point_cam[0] / point_cam[2] + norm[0, 2] * w
    v_cont = norm[0, 1] * h * point_cam[1] / point_cam[2] + norm[0, 3] * h
    uv, _ = geometry.project(world, k[0], c2w_ours[0])
    np.testing.assert_allclose(np.asarray(uv)[0], [u_cont - 0.5, v_cont - 0.5], atol=1e-3)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.eye(3), "expected shape"),
        (np.full((4, 4), np.nan), "non-finite"),
        (np.diag([2.0, 1.0, 1.0, 1.0]), "not rigid"),
        (np.diag([-1.0, 1.0, 1.0, 1.0]), "not rigid"),  # a reflection, det -1
    ],
)
def test_validate_poses_names_the_argument(bad, message):
    with pytest.raises(ValueError, match=f"my_poses.*{message}"):
        geometry.validate_poses(bad, "my_poses")


def test_validate_intrinsics_rejects_bad_matrices():
    with pytest.raises(ValueError, match="K: expected shape"):
        geometry.validate_intrinsics(np.eye(4), "K")
    with pytest.raises(ValueError, match="K: matrix 1 has non-finite"):
        geometry.validate_intrinsics(np.stack([np.eye(3), np.full((3, 3), np.inf)]), "K")
    with pytest.raises(ValueError, match="non-positive focal"):
        geometry.validate_intrinsics(np.diag([0.0, 1.0, 1.0]), "K")


def test_realestate10k_rejects_bad_shapes():
    with pytest.raises(ValueError, match="w2c: expected shape"):
        geometry.from_realestate10k(np.zeros((2, 11)), np.ones((2, 4)), (8, 8))
    with pytest.raises(ValueError, match="normalized_intrinsics"):
        geometry.from_realestate10k(np.tile(np.eye(4)[:3].ravel(), (2, 1)), np.ones((3, 4)), (8, 8))
