"""A bird's-eye map of a scene memory: its points seen from above in their colours, the camera path and frusta.

``memory_map(points [N,3], colors [N,3] uint8, poses_c2w [K,4,4], intrinsics [K,3,3], image_hw) -> uint8
[size, size, 3]`` is an orthographic view down the world's vertical. World y points down (OpenCV cameras,
docs/design.md §2; the procedural worlds put the floor at +y), so the map is the world x–z plane seen from
above: x to the right, z up the image (not mirrored). Where points overlap the highest is drawn, as a viewer
above would see; points more than ``above_camera_m`` above the highest camera are left out, since a ceiling
would hide the room. The scale is fixed by the data (points and camera positions) with a margin, the same in
x and z, and a scale bar in metres sits at the bottom left. Drawn with numpy and Pillow, in milliseconds.

``memory_points_and_colors(mem, space)`` turns a ``LatentMemory`` into those points and colours: each stored
latent feature is decoded as a 1×1 latent image (an s×s pixel patch for the patchify space) and its mean
colour taken; ``PointColors`` does the same for a memory that grows, decoding each point once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mirage_jax import geometry, memory
from mirage_jax.world.video import to_uint8

BACKGROUND = (24, 24, 28)
PATH_COLOR = (255, 64, 64)
FRUSTUM_COLOR = (255, 210, 0)
CURRENT_COLOR = (80, 220, 255)  # the last camera's frustum: where the viewer is now
TEXT_COLOR = (235, 235, 235)
MIN_SPAN_M = 1.0  # the map shows at least this many metres (a single camera or point has no extent)
MAP_SIZES = (64, 4096)


@dataclasses.dataclass(frozen=True)
class MapFrame:
    """Where the world x–z plane lies on the map: ``centre`` (x, z) metres at the map's centre, ``metres_per_pixel``
    and the map's ``size`` in pixels (square)."""

    centre: tuple[float, float]
    metres_per_pixel: float
    size: int

    def pixels(self, xz: np.ndarray) -> np.ndarray:
        """Continuous map coordinates ``[N, 2]`` (column, row) of world ``xz [N, 2]``; pixel ``(c, r)`` covers
        ``[c, c+1) × [r, r+1)``, so ``floor`` gives the pixel."""
        xz = np.asarray(xz, np.float64).reshape(-1, 2)
        col = (xz[:, 0] - self.centre[0]) / self.metres_per_pixel + self.size / 2
        row = (self.centre[1] - xz[:, 1]) / self.metres_per_pixel + self.size / 2
        return np.stack([col, row], -1)


def map_frame(xz: np.ndarray, size: int, margin: float) -> MapFrame:
    """The frame that fits every ``xz [N, 2]`` (at least ``MIN_SPAN_M`` wide) with ``margin`` of the span on each
    side; centred at the origin when there is nothing to show."""
    if len(xz) == 0:
        return MapFrame((0.0, 0.0), MIN_SPAN_M * (1 + 2 * margin) / size, size)
    lo, hi = xz.min(0), xz.max(0)
    span = max(float((hi - lo).max()), MIN_SPAN_M) * (1 + 2 * margin)
    centre = (lo + hi) / 2
    return MapFrame((float(centre[0]), float(centre[1])), span / size, size)


def _check_inputs(points, colors, poses_c2w, intrinsics, image_hw, size, margin):
    points = np.asarray(points, np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points: expected shape [N, 3] (world xyz), got {list(points.shape)}")
    if not np.isfinite(points).all():
        raise ValueError("points: expected finite world positions, got NaN or inf")
    colors = np.asarray(colors)
    if colors.shape != points.shape or colors.dtype != np.uint8:
        raise ValueError(f"colors: expected uint8 [{len(points)}, 3] (one colour per point), got {colors.dtype} "
                         f"{list(colors.shape)}")
    poses = np.asarray(poses_c2w)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        raise ValueError(f"poses_c2w: expected shape [K, 4, 4] (camera-to-world), got {list(poses.shape)}")
    k = np.asarray(intrinsics)
    if k.shape != (len(poses), 3, 3):
        raise ValueError(f"intrinsics: expected shape [{len(poses)}, 3, 3] (one per pose), got {list(k.shape)}")
    poses = geometry.validate_poses(poses, "poses_c2w")
    k = geometry.validate_intrinsics(k, "intrinsics")
    hw = tuple(np.asarray(image_hw).reshape(-1).tolist())
    if len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
        raise ValueError(f"image_hw: expected (height, width) of positive ints, got {image_hw!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MAP_SIZES[0] <= size <= MAP_SIZES[1]:
        raise ValueError(f"size: expected an int in [{MAP_SIZES[0]}, {MAP_SIZES[1]}] pixels, got {size!r}")
    if not 0 <= margin < 1:
        raise ValueError(f"margin: expected a fraction in [0, 1), got {margin!r}")
    return points, colors, poses, k, hw


def memory_map(points, colors, poses_c2w, intrinsics, image_hw: Sequence[int], *, size: int = 256,
               margin: float = 0.08, point_px: int = 2, frusta: int = 4, above_camera_m: float | None = 0.5
               ) -> np.ndarray:
    """The bird's-eye map, uint8 ``[size, size, 3]`` (see the module docstring).

    Args:
      points: ``[N, 3]`` world positions (metres); colors: uint8 ``[N, 3]``.
      poses_c2w: ``[K, 4, 4]`` the camera path, oldest first; intrinsics: ``[K, 3, 3]`` at ``image_hw``.
      size: map edge in pixels; margin: free border as a fraction of the data's span.
      point_px: edge of each point's square in pixels; frusta: how many cameras, spread over the path, get
        their horizontal field-of-view wedge drawn (the last camera always does, in ``CURRENT_COLOR``).
      above_camera_m: points higher than this above the highest camera are left out (None keeps all).
    """
    points, colors, poses, k, hw = _check_inputs(points, colors, poses_c2w, intrinsics, image_hw, size, margin)
    eyes = poses[:, :3, 3]
    if above_camera_m is not None and len(eyes):
        keep = points[:, 1] >= eyes[:, 1].min() - above_camera_m  # y points down: higher = smaller y
        points, colors = points[keep], colors[keep]
    frame = map_frame(np.concatenate([points[:, [0, 2]], eyes[:, [0, 2]]]), int(size), margin)
    image = np.empty((frame.size, frame.size, 3), np.uint8)
    image[:] = BACKGROUND
    _draw_points(image, frame, points, colors, point_px)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    if len(eyes) > 1:
        draw.line([tuple(p) for p in frame.pixels(eyes[:, [0, 2]])], fill=PATH_COLOR, width=2)
    for i in _frustum_cameras(len(poses), frusta):
        color = CURRENT_COLOR if i == len(poses) - 1 else FRUSTUM_COLOR
        draw.line(_wedge(frame, poses[i], k[i], hw[1]), fill=color, width=1)
    _draw_scale_bar(draw, frame)
    return np.asarray(canvas)


def _draw_points(image: np.ndarray, frame: MapFrame, points: np.ndarray, colors: np.ndarray, point_px: int) -> None:
    """Each point as a ``point_px`` square; on a shared pixel the highest point (smallest y) wins, ties to the
    earlier point, so the map does not depend on scatter order."""
    if len(points) == 0:
        return
    corner = np.floor(frame.pixels(points[:, [0, 2]]) - (point_px - 1) / 2).astype(np.int64)  # [N, 2]
    offsets = np.stack(np.meshgrid(np.arange(point_px), np.arange(point_px)), -1).reshape(-1, 2)
    cells = (corner[:, None] + offsets[None]).reshape(-1, 2)  # [N * p², 2] (column, row)
    owner = np.repeat(np.arange(len(points)), len(offsets))
    inside = ((cells >= 0) & (cells < frame.size)).all(1)
    cells, owner = cells[inside], owner[inside]
    pixel = cells[:, 1] * frame.size + cells[:, 0]
    order = np.lexsort((owner, points[owner, 1], pixel))  # by pixel, then highest first, then earliest
    first = np.unique(pixel[order], return_index=True)[1]
    winners = order[first]
    image.reshape(-1, 3)[pixel[winners]] = colors[owner[winners]]


def _frustum_cameras(count: int, frusta: int) -> list[int]:
    """``frusta`` camera indices spread evenly over ``count`` cameras, the last one included."""
    if count == 0 or frusta <= 0:
        return []
    return sorted({int(i) for i in np.round(np.linspace(count - 1, 0, frusta))} | {count - 1})


def _wedge(frame: MapFrame, c2w: np.ndarray, k: np.ndarray, width: int) -> list[tuple[float, float]]:
    """The closed outline eye → left edge → right edge → eye of a camera's horizontal field of view: the rays
    through the left and right image borders at the principal row, a tenth of the map's width long."""
    length = 0.1 * frame.size * frame.metres_per_pixel
    ends = []
    for u in (-0.5, width - 0.5):
        ray = c2w[:3, :3] @ np.array([(u - k[0, 2]) / k[0, 0], 0.0, 1.0])
        flat = ray[[0, 2]]
        norm = np.linalg.norm(flat)
        ends.append(c2w[[0, 2], 3] + (flat / norm * length if norm > 1e-6 else 0.0))
    eye = c2w[[0, 2], 3]
    return [tuple(p) for p in frame.pixels(np.stack([eye, ends[0], ends[1], eye]))]


def _draw_scale_bar(draw: ImageDraw.ImageDraw, frame: MapFrame) -> None:
    """A bar of 1, 2 or 5 × 10^k metres, at most a quarter of the map wide, labelled, at the bottom left."""
    span = frame.size * frame.metres_per_pixel / 4
    exponent = np.floor(np.log10(span))
    metres = max(m * 10**exponent for m in (1, 2, 5) if m * 10**exponent <= span)
    length = metres / frame.metres_per_pixel
    x0, y = 6, frame.size - 6
    draw.line([(x0, y), (x0 + length, y)], fill=TEXT_COLOR, width=2)
    draw.line([(x0, y - 3), (x0, y + 1)], fill=TEXT_COLOR)
    draw.line([(x0 + length, y - 3), (x0 + length, y + 1)], fill=TEXT_COLOR)
    draw.text((x0, y - 14), f"{metres:g} m", fill=TEXT_COLOR, font=ImageFont.load_default())


def decode_colors(features: np.ndarray, space, batch: int = 1024) -> np.ndarray:
    """Colours uint8 ``[N, 3]`` of latent ``features [N, C]``: each decoded by ``space`` (a ``LatentSpace``) as
    a one-frame 1×1 latent image, the mean of its pixels. ``batch`` at a time, the last batch padded, so the
    decoder compiles once."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected a positive int, got {batch!r}")
    colors = np.empty((len(features), 3), np.uint8)
    for start in range(0, len(features), batch):
        part = features[start:start + batch]
        padded = np.zeros((batch, space.channels), np.float32)
        padded[:len(part)] = part
        decoded = np.asarray(space.decode(padded[:, None, None, None, :]), np.float32)  # [B, 1, s, s, 3]
        colors[start:start + len(part)] = to_uint8(decoded.mean(axis=(1, 2, 3)))[:len(part)]
    return colors


class PointColors:
    """``(points, colors)`` of a memory that grows, each point decoded once: a stored point's feature never
    changes (a refreshed surface is a new point with a new ``write_id``), so colours are kept by write id and
    only points not seen before are decoded. Call it with the memory after every write."""

    def __init__(self, space, batch: int = 1024):
        self.space, self.batch = space, batch
        self.ids = np.zeros((0,), np.int64)  # sorted write ids of the points last seen
        self.colors = np.zeros((0, 3), np.uint8)

    def __call__(self, mem: memory.LatentMemory) -> tuple[np.ndarray, np.ndarray]:
        """``(points [N, 3] f32, colors [N, 3] uint8)`` of the ``N`` stored points of ``mem``."""
        if mem.channels != self.space.channels:
            raise ValueError(f"mem: features have {mem.channels} channels but the latent space has "
                             f"{self.space.channels}")
        memory.num_points(mem)  # refuses a memory given up to a donating write
        valid = np.asarray(mem.valid)
        points = np.asarray(mem.points, np.float32)[valid]
        ids = np.asarray(mem.write_id, np.int64)[valid]
        at = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
        known = self.ids[at] == ids if len(self.ids) else np.zeros(len(ids), bool)
        colors = np.empty((len(ids), 3), np.uint8)
        colors[known] = self.colors[at[known]]
        colors[~known] = decode_colors(np.asarray(mem.features, np.float32)[valid][~known], self.space, self.batch)
        order = np.argsort(ids)
        self.ids, self.colors = ids[order], colors[order]
        return points, colors


def memory_points_and_colors(mem: memory.LatentMemory, space, *, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(points [N, 3] f32, colors [N, 3] uint8)`` of the ``N`` stored points of ``mem``, each feature decoded
    by ``space`` (a ``LatentSpace``) as a 1×1 latent image (``decode_colors``). To follow a memory as it grows,
    keep a ``PointColors``: it decodes each point once."""
    return PointColors(space, batch)(mem)
