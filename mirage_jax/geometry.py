"""Camera geometry in the project's one convention (docs/design.md §2), and the only converters from others.

Convention: OpenCV camera axes (x right, y down, z forward); poses are camera-to-world ``[4,4]``; depth is
metric z-depth; intrinsics ``[3,3]`` describe the pixel grid of the array they come with, with pixel centres
at integer coordinates (pixel ``(u, v)`` is column ``u``, row ``v``). Projection rounds to the nearest cell.

Array functions are written with ``jax.numpy`` and work on numpy or JAX arrays, under ``jit`` and ``vmap``;
the ``validate_*`` functions run on concrete (host) arrays and raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

# Right-multiplying an OpenGL/Blender camera-to-world pose (x right, y up, z backward) by this flips the
# camera's y and z axes, giving the OpenCV pose of the same camera.
OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0]).astype(np.float32)

# Tolerances of the validators: rotation orthonormality / det / pose last row, and the intrinsics' last row.
RIGID_ATOL = 1e-3
INTRINSICS_ROW_ATOL = 1e-6


# ----------------------------------------------------------------------------------------------------------
# Validation (host side, concrete arrays)
# ----------------------------------------------------------------------------------------------------------


def validate_poses(poses, name: str = "cam2world", atol: float = RIGID_ATOL) -> np.ndarray:
    """Checks ``poses [..., 4, 4]`` are finite rigid transforms; returns them as a float32 numpy array.

    Rigid means: rotation block orthonormal with determinant +1 (within ``atol``) and last row
    ``[0, 0, 0, 1]``. Raises ``ValueError`` naming ``name`` and the first offending index otherwise.
    """
    arr = np.asarray(poses)
    if arr.ndim < 2 or arr.shape[-2:] != (4, 4):
        raise ValueError(f"{name}: expected shape [..., 4, 4], got {list(arr.shape)}")
    arr = arr.astype(np.float64)
    flat = arr.reshape(-1, 4, 4)
    bad = ~np.isfinite(flat).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{name}: pose {int(np.argmax(bad))} has non-finite entries")
    rot = flat[:, :3, :3]
    ortho_err = np.abs(rot @ np.swapaxes(rot, 1, 2) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(rot)
    last_row_err = np.abs(flat[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1)
    bad = (ortho_err > atol) | (np.abs(det - 1.0) > atol) | (last_row_err > atol)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name}: pose {i} is not rigid (|R R^T - I| = {ortho_err[i]:.2e}, det R = {det[i]:.4f}, "
            f"last row {flat[i, 3].tolist()}); expected a camera-to-world rotation+translation"
        )
    return arr.astype(np.float32)


def validate_intrinsics(intrinsics, name: str = "intrinsics") -> np.ndarray:
    """Checks ``intrinsics [..., 3, 3]`` are finite pinhole matrices with positive focal lengths."""
    arr = np.asarray(intrinsics)
    if arr.ndim < 2 or arr.shape[-2:] != (3, 3):
        raise ValueError(f"{name}: expected shape [..., 3, 3], got {list(arr.shape)}")
    flat = arr.reshape(-1, 3, 3).astype(np.float64)
    bad = ~np.isfinite(flat).all(axis=(1, 2))
    if bad.any():
        raise ValueError(f"{name}: matrix {int(np.argmax(bad))} has non-finite entries")
    bad = (flat[:, 0, 0] <= 0) | (flat[:, 1, 1] <= 0)
    if bad.any():
        raise ValueError(f"{name}: matrix {int(np.argmax(bad))} has a non-positive focal length")
    bad = np.abs(flat[:, 2] - np.array([0.0, 0.0, 1.0])).max(axis=1) > INTRINSICS_ROW_ATOL
    if bad.any():
        raise ValueError(f"{name}: matrix {int(np.argmax(bad))} has last row != [0, 0, 1]")
    return arr.astype(np.float32)


def camera_faults(intrinsics, cam2world):
    """Device screen of ``intrinsics [T, 3, 3]`` and ``cam2world [T, 4, 4]``: ``[2]`` bool, whether some
    intrinsics / some pose may be invalid (works under ``jit``).

    The tests of :func:`validate_intrinsics` / :func:`validate_poses` in float32 with every tolerance halved
    (float32 rounding is ~1e-6 of them), so each camera those host checks reject is flagged; where a flag is
    raised the caller runs them, and they decide and name the fault. Lets ``memory.write`` check its cameras
    in the same compiled pass and host transfer as its latents instead of copying the cameras to the host.
    """
    k, pose = intrinsics, cam2world
    k_bad = ~jnp.isfinite(k).all(axis=(1, 2)) | (k[:, 0, 0] <= 0) | (k[:, 1, 1] <= 0)
    k_bad |= jnp.abs(k[:, 2] - jnp.asarray([0.0, 0.0, 1.0])).max(axis=1) > INTRINSICS_ROW_ATOL / 2
    rot = pose[:, :3, :3]
    ortho = jnp.abs(jnp.einsum("tij,tkj->tik", rot, rot) - jnp.eye(3)).max(axis=(1, 2))
    det = jnp.einsum("ti,ti->t", rot[:, 0], jnp.cross(rot[:, 1], rot[:, 2]))
    last = jnp.abs(pose[:, 3] - jnp.asarray([0.0, 0.0, 0.0, 1.0])).max(axis=1)
    tol = RIGID_ATOL / 2
    p_bad = ~jnp.isfinite(pose).all(axis=(1, 2)) | ~((ortho <= tol) & (jnp.abs(det - 1) <= tol) & (last <= tol))
    return jnp.stack([k_bad.any(), p_bad.any()])


# ----------------------------------------------------------------------------------------------------------
# Intrinsics and poses
# ----------------------------------------------------------------------------------------------------------


def make_intrinsics(fx, fy, cx, cy):
    """Builds ``[..., 3, 3]`` pinhole matrices from broadcastable ``fx, fy, cx, cy``."""
    fx, fy, cx, cy = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.float32) for v in (fx, fy, cx, cy)))
    zero, one = jnp.zeros_like(fx), jnp.ones_like(fx)
    rows = [jnp.stack([fx, zero, cx], -1), jnp.stack([zero, fy, cy], -1), jnp.stack([zero, zero, one], -1)]
    return jnp.stack(rows, -2)


def scale_intrinsics(intrinsics, src_hw: Sequence[int], dst_hw: Sequence[int]):
    """Rescales ``intrinsics [..., 3, 3]`` from a ``src_hw`` pixel grid to ``dst_hw``.

    fx and cx are multiplied by ``w'/w``, fy and cy by ``h'/h`` (the official convention; e.g. 704×1280 px
    intrinsics become 44×80 latent-grid intrinsics).
    """
    sy = dst_hw[0] / src_hw[0]
    sx = dst_hw[1] / src_hw[1]
    scale = jnp.asarray([[sx, sx, sx], [sy, sy, sy], [1.0, 1.0, 1.0]], jnp.float32)
    return jnp.asarray(intrinsics, jnp.float32) * scale


def invert_rigid(pose):
    """Inverse of rigid transforms ``[..., 4, 4]``: ``[R^T, -R^T t]`` (exact, unlike a general inverse)."""
    pose = jnp.asarray(pose, jnp.float32)
    rot_t = jnp.swapaxes(pose[..., :3, :3], -1, -2)
    trans = -jnp.einsum("...ij,...j->...i", rot_t, pose[..., :3, 3])
    top = jnp.concatenate([rot_t, trans[..., None]], axis=-1)
    bottom = jnp.broadcast_to(jnp.asarray([0.0, 0.0, 0.0, 1.0], jnp.float32), top.shape[:-2] + (1, 4))
    return jnp.concatenate([top, bottom], axis=-2)


def transform_points(pose, points):
    """Applies ``pose [..., 4, 4]`` to ``points [..., N, 3]`` (broadcast over leading axes)."""
    pose = jnp.asarray(pose, jnp.float32)
    points = jnp.asarray(points, jnp.float32)
    # per output component over the [..., N] planes: on CPU this fuses into one elementwise loop, many times
    # faster than a batched matmul with a contraction of 3
    rows = [
        pose[..., i, 0, None] * points[..., 0] + pose[..., i, 1, None] * points[..., 1]
        + pose[..., i, 2, None] * points[..., 2] + pose[..., i, 3, None]
        for i in range(3)
    ]
    return jnp.stack(rows, axis=-1)


def look_at(eye, target, up=(0.0, -1.0, 0.0)):
    """OpenCV camera-to-world pose ``[4, 4]`` of a camera at ``eye`` looking at ``target``.

    ``up`` is the world direction that should appear up in the image (default: world -y, so a world with
    y pointing down, like OpenCV camera space, renders upright).
    """
    eye, target, up = (jnp.asarray(v, jnp.float32) for v in (eye, target, up))
    forward = target - eye
    forward = forward / jnp.linalg.norm(forward)
    right = jnp.cross(forward, up)
    right = right / jnp.linalg.norm(right)
    down = jnp.cross(forward, right)
    rot = jnp.stack([right, down, forward], axis=-1)  # columns are the camera axes in world space
    top = jnp.concatenate([rot, eye[:, None]], axis=-1)
    return jnp.concatenate([top, jnp.asarray([[0.0, 0.0, 0.0, 1.0]], jnp.float32)], axis=0)


# ----------------------------------------------------------------------------------------------------------
# Lifting and projection
# ----------------------------------------------------------------------------------------------------------


def pixel_grid(hw: Sequence[int]):
    """Integer pixel-centre coordinates ``(u [h, w], v [h, w])`` as float32 (u = column, v = row)."""
    v, u = jnp.meshgrid(jnp.arange(hw[0], dtype=jnp.float32), jnp.arange(hw[1], dtype=jnp.float32), indexing="ij")
    return u, v


def backproject(depth, intrinsics):
    """Camera-space points ``[..., H, W, 3]`` of every pixel of ``depth [..., H, W]``.

    ``X = (u - cx) d / fx``, ``Y = (v - cy) d / fy``, ``Z = d`` with integer pixel centres ``(u, v)``;
    ``intrinsics [..., 3, 3]`` are at the depth map's resolution.
    """
    depth = jnp.asarray(depth, jnp.float32)
    k = jnp.asarray(intrinsics, jnp.float32)[..., None, None, :, :]
    u, v = pixel_grid(depth.shape[-2:])
    x = (u - k[..., 0, 2]) * depth / k[..., 0, 0]
    y = (v - k[..., 1, 2]) * depth / k[..., 1, 1]
    return jnp.stack([x, y, depth], axis=-1)


def backproject_to_world(depth, intrinsics, cam2world):
    """World-space points ``[..., H, W, 3]`` of ``depth [..., H, W]`` seen from ``cam2world [..., 4, 4]``."""
    cam = backproject(depth, intrinsics)
    shape = cam.shape
    flat = cam.reshape(shape[:-3] + (-1, 3))
    return transform_points(cam2world, flat).reshape(shape)


def project(points_world, intrinsics, cam2world):
    """Projects ``points_world [..., N, 3]`` into cameras; returns ``(uv [..., N, 2] float, z [..., N])``.

    ``uv`` are continuous pixel coordinates (round them for the cell); ``z`` is the camera-space depth.
    Points with ``z <= 0`` get meaningless ``uv``: callers mask them with ``z``.
    """
    cam = transform_points(invert_rigid(cam2world), points_world)
    k = jnp.asarray(intrinsics, jnp.float32)[..., None, :, :]
    z = cam[..., 2]
    safe_z = jnp.where(jnp.abs(z) > 1e-12, z, 1e-12)
    u = cam[..., 0] * k[..., 0, 0] / safe_z + k[..., 0, 2]
    v = cam[..., 1] * k[..., 1, 1] / safe_z + k[..., 1, 2]
    return jnp.stack([u, v], axis=-1), z


# ----------------------------------------------------------------------------------------------------------
# Converters from other conventions (the only place that converts)
# ----------------------------------------------------------------------------------------------------------


def opengl_to_opencv_c2w(c2w_opengl, name: str = "c2w_opengl") -> np.ndarray:
    """OpenGL/Blender camera-to-world ``[..., 4, 4]`` (x right, y up, z back) -> OpenCV camera-to-world."""
    poses = validate_poses(c2w_opengl, name)
    return (poses @ OPENGL_TO_OPENCV).astype(np.float32)


def opencv_to_opengl_c2w(c2w, name: str = "cam2world") -> np.ndarray:
    """OpenCV camera-to-world ``[..., 4, 4]`` -> OpenGL/Blender camera-to-world (the inverse converter)."""
    poses = validate_poses(c2w, name)
    return (poses @ OPENGL_TO_OPENCV).astype(np.float32)


def from_realestate10k(w2c, normalized_intrinsics, hw: Sequence[int], name: str = "w2c"):
    """RealEstate10K camera rows -> ``(intrinsics [N, 3, 3], cam2world [N, 4, 4])`` in our convention.

    ``w2c [N, 3, 4]`` (or ``[N, 12]``, row-major) are OpenCV world-to-camera matrices;
    ``normalized_intrinsics [N, 4]`` are ``fx, fy, cx, cy`` divided by the image width/height, with the
    principal point in continuous coordinates (pixel corners at integers). ``hw`` is the frames' size.
    Our pixel centres sit at integer coordinates, so the principal point moves by half a pixel.
    """
    w2c = np.asarray(w2c, np.float64)
    if w2c.ndim == 2 and w2c.shape[1] == 12:
        w2c = w2c.reshape(-1, 3, 4)
    if w2c.ndim != 3 or w2c.shape[1:] != (3, 4):
        raise ValueError(f"{name}: expected shape [N, 3, 4] or [N, 12], got {list(w2c.shape)}")
    norm = np.asarray(normalized_intrinsics, np.float64)
    if norm.shape != (w2c.shape[0], 4):
        raise ValueError(f"normalized_intrinsics: expected shape [{w2c.shape[0]}, 4], got {list(norm.shape)}")
    if not np.isfinite(norm).all() or (norm[:, :2] <= 0).any():
        raise ValueError("normalized_intrinsics: entries must be finite with positive fx, fy")
    h, w = hw
    bottom = np.broadcast_to(np.array([[[0.0, 0.0, 0.0, 1.0]]]), (w2c.shape[0], 1, 4))
    w2c4 = validate_poses(np.concatenate([w2c, bottom], axis=1), name)
    cam2world = np.asarray(invert_rigid(w2c4))
    intrinsics = np.asarray(
        make_intrinsics(norm[:, 0] * w, norm[:, 1] * h, norm[:, 2] * w - 0.5, norm[:, 3] * h - 0.5)
    )
    return intrinsics.astype(np.float32), cam2world.astype(np.float32)
