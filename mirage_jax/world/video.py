"""Writing videos and images: mp4 through imageio-ffmpeg (H.264, yuv420p), PNG contact sheets (plain or with
row and column labels, tiles enlarged to a readable size)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _imageio_ffmpeg():
    """``imageio_ffmpeg``, set to start ffmpeg without a Python-level fork.

    By default it starts ffmpeg with ``preexec_fn`` (to keep Ctrl-C away from it), which makes Python fork the
    whole multithreaded process: JAX warns "os.fork() was called ... deadlock" at every video, and a fork with
    threads running can deadlock. Its environment switch turns that off (ffmpeg then stops on Ctrl-C too)."""
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    import imageio_ffmpeg  # noqa: PLC0415 (only needed for videos)

    return imageio_ffmpeg


def to_uint8(frames) -> np.ndarray:
    """``[..., 3]`` float in [-1, 1] (or uint8) -> uint8."""
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        return frames
    return np.round((np.clip(frames.astype(np.float32), -1, 1) + 1) * 127.5).astype(np.uint8)


def write_mp4(path: str | Path, frames, fps: int = 16) -> Path:
    """Writes ``frames [T, H, W, 3]`` (uint8 or [-1, 1]) to an H.264 mp4; odd sizes are padded by edge pixels."""
    imageio_ffmpeg = _imageio_ffmpeg()
    frames = to_uint8(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames: expected [T>0, H, W, 3], got {frames.shape}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=8, macro_block_size=1,
        ffmpeg_log_level="error",
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    return path


def read_mp4(path: str | Path) -> np.ndarray:
    """Reads an mp4 back as uint8 ``[T, H, W, 3]`` (for tests and tools); a corrupt or truncated file is a
    ``ValueError`` naming it."""
    from mirage_jax.data.npz import error_reason  # noqa: PLC0415

    try:
        reader = _imageio_ffmpeg().read_frames(str(path))
        meta = reader.__next__()
        w, h = meta["size"]
        frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    except (OSError, RuntimeError, StopIteration, ValueError) as err:
        raise ValueError(f"{path}: cannot read the mp4 (corrupt or truncated?): {error_reason(err)}") from err
    if not frames:
        raise ValueError(f"{path}: the mp4 holds no frames")
    return np.stack(frames)


def write_png(path: str | Path, image) -> Path:
    """Writes ``image [H, W, 3]`` (uint8 or [-1, 1]) as PNG."""
    import imageio.v3 as iio  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, to_uint8(image))
    return path


def contact_sheet(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    """Tiles equally sized images ``rows[r][c] [H, W, 3]`` into one uint8 image with white gaps."""
    tiles = [[to_uint8(t) for t in row] for row in rows]
    h, w = tiles[0][0].shape[:2]
    cols = max(len(r) for r in tiles)
    sheet = np.full((len(tiles) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            sheet[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = tile
    return sheet


def enlarge(image, min_width: int) -> np.ndarray:
    """``image [H, W, 3]`` as uint8, enlarged by the smallest integer factor that makes it at least ``min_width``
    pixels wide, by nearest neighbour (each pixel a sharp square: a 56-pixel frame stays honest, not smoothed)."""
    image = to_uint8(image)
    factor = max(1, -(-min_width // image.shape[1]))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def labelled_sheet(rows: list[list[np.ndarray]], row_labels: list[str], col_labels: list[str], *,
                   min_width: int = 256, gap: int = 4, font_size: int = 18) -> np.ndarray:
    """A ``contact_sheet`` of ``rows[r][c] [H, W, 3]`` with every tile ``enlarge``d to ``min_width``, each row's
    label left of it and each column's label above it (drawn with PIL's built-in font); uint8 ``[H', W', 3]``."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415

    if len(row_labels) != len(rows):
        raise ValueError(f"row_labels: {len(row_labels)} labels for {len(rows)} rows")
    if len(col_labels) != max(len(r) for r in rows):
        raise ValueError(f"col_labels: {len(col_labels)} labels for {max(len(r) for r in rows)} columns")
    tiles = [[enlarge(t, min_width) for t in row] for row in rows]
    tile_h, tile_w = tiles[0][0].shape[:2]
    grid = contact_sheet(tiles, gap)
    font = ImageFont.load_default(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = max(measure.textbbox((0, 0), label, font=font)[2] for label in row_labels) + 3 * gap
    top = font_size + 3 * gap
    canvas = Image.new("RGB", (left + grid.shape[1], top + grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(row_labels):
        draw.text((gap, top + i * (tile_h + gap) + tile_h // 2), label, fill="black", font=font, anchor="lm")
    for j, label in enumerate(col_labels):
        draw.text((left + j * (tile_w + gap) + tile_w // 2, top - gap), label, fill="black", font=font, anchor="md")
    return np.asarray(canvas)
