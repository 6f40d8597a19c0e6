"""Clip sources for the TFDS builder: each is a :class:`ClipSource` of clip dicts as in ``npz.validate_clip``.

Three sources (docs/design.md §7): procedural worlds (:mod:`mirage_jax.data.synthetic`), a folder of official
``geometry.npz`` samples (one sample per sub-folder, frames in the npz or as ``clip.mp4`` / ``frames/``), and
RealEstate10K-style camera files with frame folders (converted by ``geometry.from_realestate10k``). Clips
whose size differs from the dataset's are resized (nearest neighbour, intrinsics rescaled), so every record of
a dataset has the same frame size.

A source lists its clips' keys up front (cheap: indices, file paths) and makes clip ``i`` alone, so the plain
build makes them one after another and a Beam build (``pose_clips_dataset_builder``) one per worker task.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np

from mirage_jax import geometry
from mirage_jax.data import synthetic
from mirage_jax.data.npz import load_geometry_npz, validate_clip

TEST_SEED_OFFSET = 1_000_000  # procedural test clips use seeds from here, disjoint from training seeds


@dataclasses.dataclass(frozen=True)
class ClipSource:
    """The clips of one split, each made alone: clip ``i`` (its clip id) is ``make(keys[i])``.

    Keys are small and picklable, and ``make`` is a module-level function (with bound arguments), so the source
    pickles to a Beam worker, which makes the clips it is given and no others.
    """

    keys: tuple[Hashable, ...]
    make: Callable[[Hashable], dict]

    def __len__(self) -> int:
        return len(self.keys)

    def clip(self, clip_id: int) -> dict:
        return self.make(self.keys[clip_id])


def resize_clip(clip: dict, height: int, width: int) -> dict:
    """Nearest-neighbour resize of frames/depths/masks to ``height x width``; intrinsics rescaled to match.

    Nearest (not bilinear) keeps depth exact: no mixing of foreground and background or of invalid zeros.
    """
    n, h, w = clip["depths"].shape
    if (h, w) == (height, width):
        return clip
    # Pixel centres of the new grid in the old grid's coordinates, consistent with scale_intrinsics.
    rows = np.clip(np.round(np.arange(height) * h / height).astype(int), 0, h - 1)
    cols = np.clip(np.round(np.arange(width) * w / width).astype(int), 0, w - 1)
    out = dict(clip)
    for key in ("frames", "depths", "masks"):
        out[key] = clip[key][:, rows][:, :, cols]
    out["intrinsics"] = np.asarray(geometry.scale_intrinsics(clip["intrinsics"], (h, w), (height, width)))
    return out


def input_fingerprint(*folders: str | Path) -> str:
    """A digest of every file under ``folders``: relative path, size and modification time (ns), sorted.

    A dataset built from these folders is named after it, so adding, removing or rewriting a file builds a new
    dataset and unchanged inputs reuse the old one. File metadata rather than content hashes: this runs at every
    ``make_config`` and costs one ``stat`` per file, where hashing would read the whole input (at real sizes,
    gigabytes) only to find the dataset already built. The cost of the choice: a file touched without change (or
    copied without keeping its times) rebuilds the dataset once; a stale dataset needs a rewrite with the same
    size within the file system's timestamp resolution.
    """
    lines = []
    for i, folder in enumerate(folders):
        root = Path(folder)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            stat = path.stat()
            lines.append(f"{i}:{path.relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()[:12]


def procedural_clips(num_clips: int, num_frames: int, height: int, width: int,
                     trajectories: Sequence[str] = synthetic.TRAJECTORIES, dynamic_objects: int = 0,
                     seed: int = 0) -> ClipSource:
    """Clip ``i`` is world ``seed + i`` along ``trajectories[i % len(trajectories)]``."""
    return ClipSource(tuple(range(num_clips)), functools.partial(
        _procedural_clip, num_frames=num_frames, height=height, width=width, trajectories=tuple(trajectories),
        dynamic_objects=dynamic_objects, seed=seed))


def _procedural_clip(i: int, num_frames: int, height: int, width: int, trajectories: tuple[str, ...],
                     dynamic_objects: int, seed: int) -> dict:
    traj = trajectories[i % len(trajectories)]
    return synthetic.render_clip(seed + i, num_frames, height, width, traj, dynamic_objects)


def npz_folder_clips(input_dir: str | Path, height: int, width: int) -> ClipSource:
    """Every ``geometry.npz`` under ``input_dir`` (sorted by path); a ``clip.txt`` beside it is the caption."""
    paths = sorted(Path(input_dir).rglob("geometry.npz"))
    if not paths:
        raise ValueError(f"input_dir: no geometry.npz found under {str(input_dir)!r}")
    return ClipSource(tuple(paths), functools.partial(_npz_clip, height=height, width=width))


def _npz_clip(path: Path, height: int, width: int) -> dict:
    clip = load_geometry_npz(path, require_all_frames=True)
    if not clip["caption"] and (path.parent / "clip.txt").is_file():
        clip["caption"] = (path.parent / "clip.txt").read_text().strip()
    return resize_clip(clip, height, width)


def read_realestate10k_cameras(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parses a RealEstate10K camera file: ``(timestamps [N] int64, normalised fx fy cx cy [N,4], w2c [N,12])``.

    Format: first line the video URL, then one line per frame: ``timestamp fx fy cx cy 0 0`` and the 12 entries
    of the 3x4 world-to-camera matrix, row-major.
    """
    lines = [ln.split() for ln in Path(path).read_text().splitlines()[1:] if ln.strip()]
    if not lines or any(len(ln) != 19 for ln in lines):
        raise ValueError(f"cameras file {str(path)!r}: expected a URL line, then rows of 19 numbers")
    table = np.asarray(lines, np.float64)
    return table[:, 0].astype(np.int64), table[:, 1:5], table[:, 7:19]


def realestate10k_clips(cameras_dir: str | Path, frames_dir: str | Path, height: int, width: int,
                        max_frames: int | None = None) -> ClipSource:
    """RealEstate10K-style clips: ``cameras_dir/<clip>.txt`` with frames in ``frames_dir/<clip>/``.

    Frames are images named by timestamp (``<timestamp>.png|jpg``) or, failing that, any images sorted by name
    (one per camera row). No depth is available: depths are 0 (invalid), so the memory stores nothing from
    these clips unless depth is added later; masks are all True. Caption: the clip name.
    """
    files = sorted(Path(cameras_dir).glob("*.txt"))
    if not files:
        raise ValueError(f"cameras_dir: no *.txt camera files under {str(cameras_dir)!r}")
    return ClipSource(tuple(files), functools.partial(_realestate10k_clip, frames_dir=Path(frames_dir),
                                                      height=height, width=width, max_frames=max_frames))


def _realestate10k_clip(cam_file: Path, frames_dir: Path, height: int, width: int, max_frames: int | None) -> dict:
    import imageio.v3 as iio

    stamps, norm_k, w2c = read_realestate10k_cameras(cam_file)
    folder = frames_dir / cam_file.stem
    images = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    by_stamp = {p.stem: p for p in images}
    if all(str(s) in by_stamp for s in stamps):
        images = [by_stamp[str(s)] for s in stamps]
    elif len(images) != len(stamps):
        raise ValueError(f"frames_dir: {str(folder)!r} has {len(images)} images for {len(stamps)} cameras")
    if max_frames is not None:
        images, norm_k, w2c = images[:max_frames], norm_k[:max_frames], w2c[:max_frames]
    frames = np.stack([np.asarray(iio.imread(p))[..., :3] for p in images])
    n, h, w = frames.shape[:3]
    intrinsics, c2w = geometry.from_realestate10k(w2c, norm_k, (h, w), name=f"{cam_file.name}: w2c")
    clip = validate_clip({"frames": frames, "depths": np.zeros((n, h, w), np.float32),
                          "intrinsics": intrinsics, "poses_c2w": c2w, "caption": cam_file.stem},
                         source=str(cam_file))
    return resize_clip(clip, height, width)
