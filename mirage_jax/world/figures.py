"""Figures that explain a rollout comparison: labelled frame sheets, memory maps, plots with words and units.

- ``sheet_frames`` / ``column_labels``: which frames a contact sheet shows (latent key frames spread from the
  first visit to the last frame) and how its columns are labelled;
- ``decoded_reads``: the scene latents a model was given (``RolloutResult.scenes``), decoded to pixels, the
  cells the memory missed in black: what the memory told the model;
- ``map_strip``: bird's-eye maps of memories after each chunk (``memory_map``), one labelled row per memory;
- ``plot_chunks`` / ``plot_revisit``: per-chunk metrics and the revisit scores of every variant as PNGs, each
  with a title and axes in words and units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mirage_jax.video_shapes import FRAMES_PER_LATENT
from mirage_jax.world.video import labelled_sheet, to_uint8

# metric key -> (title, y-axis label, factor applied to the stored value)
CHUNK_PLOTS = {
    "chunk_psnr": ("Generated frames against the ground truth", "PSNR (dB, higher is closer)", 1.0),
    "hit_fraction": ("How much of each chunk's views the memory covered", "latent cells read from memory (%)", 100.0),
    "cache_bytes": ("Memory size after each chunk", "stored points (KiB)", 1 / 1024),
    "seconds_per_frame_per_chunk": ("Generation time (chunk 1 includes compiling)", "seconds per frame", 1.0),
}
CHUNK_AXIS = "chunk of the video (in order)"


def sheet_frames(num_frames: int, columns: int = 5) -> list[int]:
    """Up to ``columns`` pixel frames of a ``num_frames`` (4N+1) video, evenly spread from frame 0 to the last,
    each a latent key frame (a multiple of 4), so every column has a memory read."""
    last_latent = (num_frames - 1) // FRAMES_PER_LATENT
    latents = np.unique(np.round(np.linspace(0, last_latent, columns)).astype(int))
    return [int(j) * FRAMES_PER_LATENT for j in latents]


def column_labels(frames: list[int], revisit_frames: list[int]) -> list[str]:
    """``"frame 0 (input)"``, ``"frame 24"``, ..., ``"frame 96 (revisit)"`` (revisit: back at the start view)."""
    revisit = set(revisit_frames)
    return [f"frame {f}" + (" (input)" if f == 0 else " (revisit)" if f in revisit else "") for f in frames]


def decoded_reads(scenes: np.ndarray, hits: np.ndarray, space) -> np.ndarray:
    """uint8 ``[G, H, W, 3]``: each scene latent ``scenes [G, h, w, C]`` decoded alone by ``space`` (a
    ``LatentSpace``), black where ``hits [G, h, w]`` is False (the memory had nothing there)."""
    frames = to_uint8(np.asarray(space.decode(np.asarray(scenes, np.float32)[:, None]), np.float32)[:, 0])
    s = space.spatial_factor
    covered = np.asarray(hits, bool).repeat(s, axis=1).repeat(s, axis=2)
    return np.where(covered[..., None], frames, np.uint8(0))


def map_strip(maps: dict[str, list[np.ndarray]], chunk_labels: list[str]) -> np.ndarray:
    """The maps ``{row label: [map after chunk k [S, S, 3]]}`` as one labelled sheet, a column per chunk."""
    return labelled_sheet(list(maps.values()), list(maps), chunk_labels, min_width=256)


def _pyplot():
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_chunks(metrics: dict, out_dir: Path) -> list[Path]:
    """One PNG per ``CHUNK_PLOTS`` metric, a line per variant of ``metrics {variant: eval metrics}``."""
    import matplotlib.ticker  # noqa: PLC0415

    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, (title, ylabel, factor) in CHUNK_PLOTS.items():
        fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=100)
        for variant, m in metrics.items():
            values = np.asarray(m[key], float) * factor
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=variant)
        ax.set(title=title, xlabel=CHUNK_AXIS, ylabel=ylabel)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        paths.append(out_dir / f"{key}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def plot_revisit(metrics: dict, path: Path) -> Path:
    """Bars of every variant's revisit PSNR and SSIM (revisited frames against the first visit)."""
    plt = _pyplot()
    names = list(metrics)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4), dpi=100)
    for ax, key, ylabel in ((axes[0], "revisit_psnr", "PSNR (dB)"), (axes[1], "revisit_ssim", "SSIM (1 = identical)")):
        values = [metrics[n][key] for n in names]
        bars = ax.bar(names, values, color=[f"C{i}" for i in range(len(names))])
        ax.bar_label(bars, fmt="%.2f" if key == "revisit_psnr" else "%.3f", fontsize="small")
        ax.set(ylabel=ylabel, xlabel="scene memory")
        ax.tick_params(axis="x", labelsize="small")
    fig.suptitle("Back at the start view: revisited frames against the first visit (higher is more consistent)",
                 fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
