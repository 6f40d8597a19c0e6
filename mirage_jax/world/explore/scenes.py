"""Where an exploration starts: the input image with its depth and camera, and the depth of the cameras to come.

Two kinds. A procedural world (``data.synthetic``) renders exact metric depth for any camera, so every
generated chunk is written back to the memory with ground-truth depth, and its room bounds where the camera
may go. A ``geometry.npz`` frame gives the start only: the frames after it have no depth of their own (zero,
so the memory keeps what the start frame saw) unless the model's depth head predicts it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from mirage_jax.data import synthetic
from mirage_jax.data.npz import load_geometry_npz


@dataclasses.dataclass(frozen=True)
class Scene:
    """The start of an exploration.

    ``frame`` uint8 ``[H, W, 3]`` (the input image), ``depth [H, W]`` (metric z-depth, seeds the memory),
    ``mask [H, W]`` bool or None (True = static), ``intrinsics [3, 3]`` at ``[H, W]`` (every camera's),
    ``pose [4, 4]`` OpenCV camera-to-world, ``caption``; ``bounds``: ``(low [2], high [2])`` x–z limits of the
    camera, or None; ``depth_at(poses [T, 4, 4]) -> (depth [T, H, W], keep [T, H, W] or None)``.
    """

    frame: np.ndarray
    depth: np.ndarray
    mask: np.ndarray | None
    intrinsics: np.ndarray
    pose: np.ndarray
    caption: str
    bounds: tuple[np.ndarray, np.ndarray] | None
    depth_at: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.frame.shape[0]), int(self.frame.shape[1])

    def depth_source(self, poses: np.ndarray):
        """A write-back depth source (``world.depth``) along the camera path ``poses [N, 4, 4]``: the depth at
        the poses it is asked for, by index. ``poses`` is read when asked, so the path may grow meanwhile."""
        return lambda latents, frames, pose_indices: self.depth_at(poses[np.asarray(pose_indices)])


def procedural_scene(seed: int, height: int, width: int) -> Scene:
    """The world of ``seed`` from the first camera of its ``revisit`` path; the camera stays in the room's
    middle (``synthetic.CAMERA_REGION``), where it never enters an object."""
    world = synthetic.make_world(seed)
    eyes, yaws, pitches, _ = synthetic.camera_path(world, 1, "revisit")
    pose = synthetic.poses_from_angles(eyes, yaws, pitches)[0]
    k = synthetic.default_intrinsics(seed, height, width)
    hw = (height, width)

    def depth_at(poses):
        _, depths, masks = world.render(np.repeat(k[None], len(poses), 0), poses, hw)
        return depths, masks

    frames, depths, masks = world.render(k[None], pose[None], hw)
    region = synthetic.CAMERA_REGION * world.room_half_extent[[0, 2]]
    return Scene(frames[0], depths[0], masks[0], k, pose, f"Inside {world.description}.", (-region, region),
                 depth_at)


def geometry_scene(path: str, start: int = 0) -> Scene:
    """Frame ``start`` of a ``geometry.npz`` (its image, depth, intrinsics and pose); later cameras get no depth."""
    clip = load_geometry_npz(path)
    count = len(clip["frames"])
    if not 0 <= start < count:
        raise ValueError(f"--start: expected a frame of {path} in [0, {count - 1}], got {start}")
    hw = clip["frames"].shape[1:3]

    def depth_at(poses):
        return np.zeros((len(poses), *hw), np.float32), None

    return Scene(clip["frames"][start], clip["depths"][start], clip["masks"][start], clip["intrinsics"][start],
                 clip["poses_c2w"][start], clip["caption"], None, depth_at)
