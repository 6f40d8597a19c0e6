"""Reading, writing and validating clips in the official ``geometry.npz`` layout (docs/design.md §7).

Keys: ``frames`` uint8 ``[N,H,W,3]`` (or float in [0, 1], scaled to 0..255), ``depths`` float32 ``[N,H,W]``
(metric z-depth, 0 = invalid), ``intrinsics`` float32 ``[N,3,3]`` (at the frames' resolution), ``poses_c2w``
float32 ``[N,4,4]`` (OpenCV camera-to-world), optional ``masks`` bool ``[N,H,W]`` (True = static) and optional
``caption`` (a 0-d string). Every loader path goes through :func:`validate_clip`, so a malformed file is a
``ValueError`` naming the key, never a wrong array handed to the model; a corrupt or truncated file is a
``ValueError`` naming the file.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from mirage_jax import geometry, memory
from mirage_jax.memory.state import DEFAULT_DEDUP_VOXEL

REQUIRED_KEYS = ("frames", "depths", "intrinsics", "poses_c2w")
OPTIONAL_KEYS = ("masks", "caption")


def validate_clip(clip: dict, source: str = "clip", allow_single_frame: bool = False) -> dict:
    """Checks a clip dict's keys, dtypes, shapes and values; returns a normalised copy.

    ``allow_single_frame``: accept ``frames [1,H,W,3]`` with ``N > 1`` poses (the official inference layout,
    where only the first frame is given); otherwise frames must be ``[N,H,W,3]``.

    Normalised: ``frames`` uint8 (``frames_as_uint8``), ``depths``/``intrinsics``/``poses_c2w`` float32,
    ``masks`` bool (all True when absent), ``caption`` str ("" when absent). Non-finite depth is treated as
    invalid and set to 0. Raises ``ValueError`` naming ``source`` and the offending key.
    """
    missing = [k for k in REQUIRED_KEYS if k not in clip]
    if missing:
        raise ValueError(f"{source}: missing key(s) {missing}; expected keys {list(REQUIRED_KEYS)} (+ optional masks)")
    frames = np.asarray(clip["frames"])
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"{source}: key 'frames' expected shape [N,H,W,3], got {list(frames.shape)}")
    frames = frames_as_uint8(frames, source)
    _, h, w, _ = frames.shape
    depths = np.asarray(clip["depths"])
    if depths.ndim != 3 or depths.shape[1:] != (h, w):
        raise ValueError(f"{source}: key 'depths' expected shape [N, {h}, {w}] (frame size), got {list(depths.shape)}")
    n = depths.shape[0]
    if frames.shape[0] != n and not (allow_single_frame and frames.shape[0] == 1):
        allowed = f"1 or {n}" if allow_single_frame else f"{n}"
        raise ValueError(f"{source}: key 'frames' has {frames.shape[0]} frames, expected {allowed} (as depths)")
    depths = depths.astype(np.float32)
    finite = np.isfinite(depths)
    if (depths[finite] < 0).any():
        raise ValueError(f"{source}: key 'depths' has negative values (min {depths[finite].min():.4g}); "
                         "expected metric z-depth >= 0 (0 = invalid)")
    depths = np.where(finite, depths, 0.0).astype(np.float32)
    intrinsics = np.asarray(clip["intrinsics"])
    if intrinsics.shape != (n, 3, 3):
        raise ValueError(f"{source}: key 'intrinsics' expected shape {[n, 3, 3]}, got {list(intrinsics.shape)}")
    intrinsics = geometry.validate_intrinsics(intrinsics, name=f"{source}: key 'intrinsics'")
    poses = np.asarray(clip["poses_c2w"])
    if poses.shape != (n, 4, 4):
        raise ValueError(f"{source}: key 'poses_c2w' expected shape {[n, 4, 4]}, got {list(poses.shape)}")
    poses = geometry.validate_poses(poses, name=f"{source}: key 'poses_c2w'")
    if clip.get("masks") is not None:
        masks = np.asarray(clip["masks"])
        if masks.shape != (n, h, w):
            raise ValueError(f"{source}: key 'masks' expected shape {[n, h, w]}, got {list(masks.shape)}")
        if masks.dtype != bool and not np.isin(masks, (0, 1)).all():
            raise ValueError(f"{source}: key 'masks' expected bool (True = static), got dtype {masks.dtype}")
        masks = masks.astype(bool)
    else:
        masks = np.ones((n, h, w), bool)
    caption = clip.get("caption", "")
    caption = str(np.asarray(caption).item() if isinstance(caption, np.ndarray) else caption)
    return {"frames": frames, "depths": depths, "intrinsics": intrinsics, "poses_c2w": poses,
            "masks": masks, "caption": caption}


def frames_as_uint8(frames: np.ndarray, source: str) -> np.ndarray:
    """``frames [N,H,W,3]`` as uint8: uint8 as is, float in [0, 1] scaled to 0..255 (rounded); any other dtype,
    a float outside [0, 1] or a non-finite float is refused, naming ``source`` and the range found."""
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"{source}: key 'frames' expected uint8 (0..255) or float in [0, 1], got dtype {frames.dtype}")
    finite = np.isfinite(frames)
    low, high = (frames[finite].min(), frames[finite].max()) if finite.any() else (np.nan, np.nan)
    if not finite.all() or low < 0 or high > 1:
        extra = ", and NaN or inf" if not finite.all() else ""
        raise ValueError(f"{source}: key 'frames' expected uint8 (0..255) or float in [0, 1], got {frames.dtype} "
                         f"values in [{low:.4g}, {high:.4g}]{extra}")
    return np.rint(frames.astype(np.float32) * 255).astype(np.uint8)


def frames_without_depth(depths: np.ndarray) -> np.ndarray:
    """Indices of the frames of ``depths [N, H, W]`` with no valid depth (no finite value > 0): a memory write
    of such a frame stores nothing."""
    depths = np.asarray(depths)
    return np.flatnonzero(~(np.isfinite(depths) & (depths > 0)).any(axis=(1, 2)))


def check_depth_for_memory(depths: np.ndarray, seed: int, later: Sequence[int] = (), source: str = "geometry") -> None:
    """A memory is seeded from frame ``seed`` of ``depths [N, H, W]``: no valid depth there is a ``ValueError``
    (the memory would start, and stay, empty); ``later`` frames (those written back) without valid depth get a
    warning naming them."""
    frames = [seed, *later]
    empty = [frames[i] for i in frames_without_depth(np.asarray(depths)[frames])]
    if seed in empty:
        raise ValueError(f"{source}: key 'depths' has no valid depth (all zero or non-finite) in frame {seed}, the "
                         f"frame that seeds the memory, which would stay empty; give it depth or use cache 'none'")
    if empty:
        warnings.warn(f"{source}: key 'depths' has no valid depth (all zero or non-finite) in frames "
                      f"{sorted(set(empty))}: the memory stores nothing from them", stacklevel=2)


def save_geometry_npz(path: str | os.PathLike, clip: dict, compress: bool = True) -> Path:
    """Validates ``clip`` and writes it as ``geometry.npz`` (``path`` may be a file or a folder)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path / "geometry.npz"
    clip = validate_clip(clip, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(clip)
    arrays["caption"] = np.asarray(clip["caption"])
    (np.savez_compressed if compress else np.savez)(path, **arrays)
    return path


def read_frames_beside(folder: Path) -> np.ndarray | None:
    """Frames ``uint8 [N,H,W,3]`` stored next to a ``geometry.npz`` without a ``frames`` key, or None.

    Looks (in this order) for ``clip.mp4``, a ``frames/`` folder of PNG/JPEG images (sorted by name) and
    ``first_frame.png`` (the official fallbacks).
    """
    if (folder / "clip.mp4").is_file():
        return read_image(folder / "clip.mp4", index=None)[..., :3]
    images = sorted(p for p in (folder / "frames").glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if images:
        return np.stack([read_image(p)[..., :3] for p in images])
    if (folder / "first_frame.png").is_file():
        return read_image(folder / "first_frame.png")[None, ..., :3]
    return None


def read_image(path: Path, **kwargs) -> np.ndarray:
    """An image or video file as an array (``imageio``); a corrupt or truncated file is a ``ValueError`` naming it."""
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(path, **kwargs))
    except (OSError, EOFError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: cannot read the image/video (corrupt or truncated?): {error_reason(err)}") from err


def error_reason(err: BaseException) -> str:
    """The first line of a low-level error's message (ffmpeg appends its whole log), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of the npz at ``path`` (no pickles); a corrupt or truncated file is a ``ValueError`` naming it."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npz file (corrupt or truncated?): {error_reason(err)}") from err


def load_geometry_npz(path: str | os.PathLike, *, require_all_frames: bool = False) -> dict:
    """Loads and validates a ``geometry.npz`` (file, or folder holding one); returns the clip dict.

    Without pickles (``allow_pickle=False``). When the npz has no ``frames`` key they are read from
    ``clip.mp4`` / ``frames/`` / ``first_frame.png`` beside it. As in the official layout, ``frames`` may hold
    only the first frame (``[1,H,W,3]``) unless ``require_all_frames`` (training data needs every frame).
    The clip's ``source`` is the file's path (for messages). Raises ``ValueError`` naming the file for a corrupt
    or truncated npz / mp4 / image, and the key for missing keys, wrong shapes, non-rigid poses or negative depth.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "geometry.npz"
    if not path.is_file():
        raise ValueError(f"geometry npz {str(path)!r} does not exist")
    clip = read_npz_arrays(path)
    if "frames" not in clip:
        frames = read_frames_beside(path.parent)
        if frames is not None:
            clip["frames"] = frames
    clip = validate_clip(clip, source=str(path), allow_single_frame=not require_all_frames)
    return clip | {"source": str(path)}


def memory_from_geometry_npz(path: str | os.PathLike, first_latent, capacity: int, *, frame: int = 0,
                             dtype=jnp.float32, depth_downsample: str = "bilinear",
                             voxel_size: float = DEFAULT_DEDUP_VOXEL) -> memory.LatentMemory:
    """A new memory holding frame ``frame`` of an official ``geometry.npz`` (the memory's "init" step).

    ``first_latent [h, w, C]`` is that frame's latent; the npz's depth (``[N, H, W]``, H, W integer multiples
    of h, w), intrinsics (at depth resolution), ``poses_c2w`` and optional ``masks`` (True = static) are read
    with ``load_geometry_npz`` (validated, no pickles).
    """
    clip = load_geometry_npz(path)
    first_latent = jnp.asarray(first_latent)
    if first_latent.ndim != 3:
        raise ValueError(f"first_latent: expected shape [h, w, C], got {list(first_latent.shape)}")
    n = clip["depths"].shape[0]
    if not 0 <= frame < n:
        raise ValueError(f"frame: expected 0 <= frame < {n} (frames in {str(path)!r}), got {frame}")
    pick = slice(frame, frame + 1)
    mem = memory.init(capacity, int(first_latent.shape[-1]), dtype, voxel_size=voxel_size)
    return memory.write(mem, first_latent[None], clip["depths"][pick], clip["intrinsics"][pick],
                        clip["poses_c2w"][pick], clip["masks"][pick], depth_downsample=depth_downsample)
