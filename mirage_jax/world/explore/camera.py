"""Keyboard moves as camera paths: each move carries the camera through one chunk's new frames.

A move starts at the current camera (OpenCV camera-to-world ``[4, 4]``; world y points down, docs/design.md §2)
and ends ``STEP_M`` metres further (``forward``, ``back``, ``left``, ``right``: along the camera's forward or
right axis, kept horizontal so looking down does not walk into the floor), turned ``TURN_DEG`` about the world
vertical (``turn_left``, ``turn_right``), or tilted ``LOOK_DEG`` about the camera's own x axis (``look_up``,
``look_down``, stopping at ``MAX_PITCH_DEG``). The frames in between move at constant speed, so consecutive
moves join without a stop. ``bounds`` keep the camera inside a region of the x–z plane (a procedural room's
middle, where it never enters an object).
"""

from __future__ import annotations

import numpy as np

STEP_M = 0.5
TURN_DEG = 30.0
LOOK_DEG = 10.0
MAX_PITCH_DEG = 60.0

# action -> (metres along the camera's (right, forward) axes, degrees of turn to the right, degrees of tilt down)
ACTIONS: dict[str, tuple[tuple[float, float], float, float]] = {
    "forward": ((0.0, STEP_M), 0.0, 0.0),
    "back": ((0.0, -STEP_M), 0.0, 0.0),
    "left": ((-STEP_M, 0.0), 0.0, 0.0),
    "right": ((STEP_M, 0.0), 0.0, 0.0),
    "turn_left": ((0.0, 0.0), -TURN_DEG, 0.0),
    "turn_right": ((0.0, 0.0), TURN_DEG, 0.0),
    "look_up": ((0.0, 0.0), 0.0, -LOOK_DEG),
    "look_down": ((0.0, 0.0), 0.0, LOOK_DEG),
}


def _turn(angle: float) -> np.ndarray:
    """Rotation ``[3, 3]`` about the world vertical by ``angle`` radians; positive turns +z towards +x (right)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _tilt(angle: float) -> np.ndarray:
    """Rotation ``[3, 3]`` about the camera's x axis by ``angle`` radians; positive tilts +z towards +y (down)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


def _horizontal(axis: np.ndarray) -> np.ndarray:
    """``axis [3]`` without its vertical part, unit length (zero when it points straight up or down)."""
    flat = np.array([axis[0], 0.0, axis[2]])
    norm = np.linalg.norm(flat)
    return flat / norm if norm > 1e-6 else np.zeros(3)


def move_poses(c2w: np.ndarray, action: str, frames: int, bounds: tuple[np.ndarray, np.ndarray] | None = None
               ) -> np.ndarray:
    """The ``frames`` poses ``[frames, 4, 4]`` (float32) after ``c2w`` of one ``action`` (one of ``ACTIONS``);
    the last is where the move ends. ``bounds``: ``(low [2], high [2])`` x–z limits of the camera, or None."""
    if action not in ACTIONS:
        raise ValueError(f"action: expected one of {sorted(ACTIONS)}, got {action!r}")
    if frames < 1:
        raise ValueError(f"frames: expected >= 1, got {frames}")
    (right_m, forward_m), turn_deg, tilt_deg = ACTIONS[action]
    c2w = np.asarray(c2w, np.float64)
    rot, eye = c2w[:3, :3], c2w[:3, 3]
    end = eye + right_m * _horizontal(rot[:, 0]) + forward_m * _horizontal(rot[:, 2])
    if bounds is not None:
        end[[0, 2]] = np.clip(end[[0, 2]], bounds[0], bounds[1])
    pitch = np.degrees(np.arcsin(np.clip(rot[1, 2], -1.0, 1.0)))  # of the forward axis; > 0 looks down
    tilt = np.clip(pitch + tilt_deg, -MAX_PITCH_DEG, MAX_PITCH_DEG) - pitch
    poses = np.repeat(np.eye(4)[None], frames, 0)
    for i, s in enumerate(np.arange(1, frames + 1) / frames):
        poses[i, :3, :3] = _turn(np.radians(s * turn_deg)) @ rot @ _tilt(np.radians(s * tilt))
        poses[i, :3, 3] = eye + s * (end - eye)
    return poses.astype(np.float32)
