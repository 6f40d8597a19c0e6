"""The bird's-eye memory map: known points land on known pixels in their colours, the path and frusta are drawn,
the memory's points decode to their colours, and bad inputs are one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from mirage_jax import geometry, memory
from mirage_jax.models.latent_space import PatchifyLatentSpace
from mirage_jax.world import memory_map as memory_map_module
from mirage_jax.world.memory_map import (
    BACKGROUND,
    CURRENT_COLOR,
    PATH_COLOR,
    PointColors,
    map_frame,
    memory_map,
    memory_points_and_colors,
)

HW = (32, 56)
SIZE = 256


def _camera(eye, yaw=0.0):
    """OpenCV c2w at ``eye`` looking along +z turned by ``yaw`` (towards +x)."""
    eye = np.asarray(eye, np.float32)
    return np.asarray(geometry.look_at(eye, eye + np.array([np.sin(yaw), 0.0, np.cos(yaw)], np.float32)))


def _k(count):
    return np.repeat(np.asarray(geometry.make_intrinsics(28.0, 28.0, 27.5, 15.5), np.float32)[None], count, 0)


def test_a_point_lands_on_its_pixel_in_its_colour():
    # Corners fix the extent: x and z in [-2, 2], so the centre is the origin and a pixel is 4 m * 1.16 / 256.
    points = np.array([[-2, 0, -2], [2, 0, 2], [1.0, 0.5, -0.5], [-1.0, 0.2, 1.5]], np.float32)
    colors = np.array([[1, 1, 1], [2, 2, 2], [200, 30, 40], [10, 220, 90]], np.uint8)
    poses = _camera([0, 0, 0])[None]
    image = memory_map(points, colors, poses, _k(1), HW, size=SIZE, margin=0.08, point_px=1, frusta=0)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    mpp = 4.0 * 1.16 / SIZE
    for (x, _, z), color in zip(points[2:], colors[2:]):
        col, row = int(np.floor(x / mpp + SIZE / 2)), int(np.floor(-z / mpp + SIZE / 2))
        np.testing.assert_array_equal(image[row, col], color)
    # +x is to the right and +z is up the image: the red point (x>0, z<0) is right of and below the centre.
    assert image[int(0.5 / mpp + 128), int(1.0 / mpp + 128)].tolist() == [200, 30, 40]


def test_the_highest_point_wins_and_the_ceiling_is_left_out():
    points = np.array([[0.5, 1.0, 0.5], [0.5, 0.2, 0.5], [0.5, 0.6, 0.5], [-0.5, -2.0, 0.5]], np.float32)
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
    poses = _camera([0, 0, 0])[None]
    image = memory_map(points, colors, poses, _k(1), HW, size=SIZE, point_px=1, frusta=0, above_camera_m=0.5)
    frame = map_frame(np.array([[0.5, 0.5], [0.0, 0.0]]), SIZE, 0.08)  # the ceiling point does not set the extent
    col, row = np.floor(frame.pixels(np.array([[0.5, 0.5]]))[0]).astype(int)
    assert image[row, col].tolist() == [0, 255, 0]  # y = 0.2 is the highest (y points down)
    assert not (image == 255).all(-1).any()  # the point 2 m above the camera is not drawn
    everything = memory_map(points, colors, poses, _k(1), HW, size=SIZE, point_px=1, frusta=0, above_camera_m=None)
    assert (everything == 255).all(-1).any()


def test_the_camera_path_and_the_current_frustum_are_drawn():
    eyes = np.stack([np.linspace(-1.5, 1.5, 7), np.zeros(7), np.zeros(7)], -1)
    poses = np.stack([_camera(e, yaw=np.pi / 2) for e in eyes])  # walking along +x, looking along +x
    image = memory_map(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), poses, _k(7), HW, size=SIZE,
                       frusta=1)
    frame = map_frame(eyes[:, [0, 2]], SIZE, 0.08)
    row = int(np.floor(frame.pixels(eyes[:1, [0, 2]])[0, 1]))
    start, end = np.floor(frame.pixels(eyes[[0, -1]][:, [0, 2]])[:, 0]).astype(int)
    band = image[row - 1:row + 2, start + 2:end - 2]  # the polyline between the first and last eye
    assert (band == PATH_COLOR).all(-1).any(0).all()
    # The current camera's wedge opens towards +x, i.e. to the right of the last eye.
    wedge = np.argwhere((image == CURRENT_COLOR).all(-1))
    assert len(wedge) > 10 and wedge[:, 1].max() > end + 5 and wedge[:, 1].min() >= end - 2


def test_empty_memory_and_no_cameras_give_a_background_map():
    image = memory_map(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros((0, 4, 4)), np.zeros((0, 3, 3)), HW,
                       size=64)
    assert image.shape == (64, 64, 3)
    assert (image[:32] == BACKGROUND).all()  # the scale bar is at the bottom


@pytest.mark.parametrize("kwargs, field", [
    (dict(points=np.zeros((4, 2))), "points: expected shape [N, 3]"),
    (dict(points=np.full((4, 3), np.nan)), "points: expected finite"),
    (dict(colors=np.zeros((4, 3), np.float32)), "colors: expected uint8 [4, 3]"),
    (dict(colors=np.zeros((3, 3), np.uint8)), "colors: expected uint8 [4, 3]"),
    (dict(poses_c2w=np.zeros((2, 3, 4))), "poses_c2w: expected shape [K, 4, 4]"),
    (dict(poses_c2w=np.zeros((2, 4, 4))), "poses_c2w: pose 0 is not rigid"),
    (dict(intrinsics=np.zeros((3, 3, 3))), "intrinsics: expected shape [2, 3, 3]"),
    (dict(image_hw=(32,)), "image_hw: expected (height, width)"),
    (dict(size=8), "size: expected an int in [64, 4096]"),
])
def test_bad_inputs_are_one_line_errors(kwargs, field):
    args = dict(points=np.zeros((4, 3)), colors=np.zeros((4, 3), np.uint8),
                poses_c2w=np.stack([np.eye(4)] * 2), intrinsics=_k(2), image_hw=HW)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        memory_map(args.pop("points"), args.pop("colors"), args.pop("poses_c2w"), args.pop("intrinsics"),
                   args.pop("image_hw"), **args)
    assert str(err.value).startswith(field) and "\n" not in str(err.value)


def _patch_frame(seed: int):
    """A frame of flat 4x4 patches (uint8 ``[1, 32, 56, 3]``), its patchify latents ``[1, 8, 14, 48]`` and the
    latent-resolution intrinsics."""
    rng = np.random.default_rng(seed)
    image = np.repeat(np.repeat(rng.integers(0, 256, (1, 8, 14, 3)), 4, 1), 4, 2).astype(np.uint8)
    latents = PatchifyLatentSpace(4).encode(image[None].astype(np.float32) / 127.5 - 1.0)[0]
    return image, latents, geometry.scale_intrinsics(_k(1), HW, (8, 14))


def test_memory_points_decode_to_their_patch_colours():
    space = PatchifyLatentSpace(4)
    image, latents, k = _patch_frame(0)
    depth = np.full((1, 8, 14), 2.0, np.float32)
    depth[0, 0, 0] = 0.0  # one invalid cell: not stored
    mem = memory.write(memory.init(256, 48), latents, depth, k, np.eye(4, dtype=np.float32)[None])
    points, colors = memory_points_and_colors(mem, space, batch=50)  # 111 points: 3 batches, the last padded
    assert points.shape == (8 * 14 - 1, 3) and colors.dtype == np.uint8
    u = np.round(points[:, 0] * k[0, 0, 0] / points[:, 2] + k[0, 0, 2]).astype(int)
    v = np.round(points[:, 1] * k[0, 1, 1] / points[:, 2] + k[0, 1, 2]).astype(int)
    np.testing.assert_allclose(colors.astype(int), image[0, 4 * v, 4 * u].astype(int), atol=1)
    empty_points, empty_colors = memory_points_and_colors(memory.init(16, 48), space)
    assert empty_points.shape == (0, 3) and empty_colors.shape == (0, 3)
    with pytest.raises(ValueError, match="mem: features have 12 channels"):
        memory_points_and_colors(memory.init(16, 12), space)


def test_point_colors_decode_each_point_once(monkeypatch):
    space = PatchifyLatentSpace(4)
    decoded = []
    decode = memory_map_module.decode_colors
    monkeypatch.setattr(memory_map_module, "decode_colors", lambda f, *a: decoded.append(len(f)) or decode(f, *a))
    colors_of = PointColors(space, batch=32)
    depth = np.full((1, 8, 14), 2.0, np.float32)
    _, first, k = _patch_frame(1)
    mem = memory.write(memory.init(512, 48), first, depth, k, np.eye(4, dtype=np.float32)[None])
    colors_of(mem)
    _, second, _ = _patch_frame(2)
    away = np.eye(4, dtype=np.float32)
    away[0, 3] = 10.0  # far from the first frame's points: nothing is de-duplicated
    mem = memory.write(mem, second, depth, k, away[None])
    points, colors = colors_of(mem)
    assert decoded == [112, 112]  # the second call decodes only the new frame's points
    monkeypatch.undo()
    all_points, all_colors = memory_points_and_colors(mem, space)
    np.testing.assert_array_equal(points, all_points)
    np.testing.assert_array_equal(colors, all_colors)
