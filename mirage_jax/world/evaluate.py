"""Consistency evaluation on procedural worlds with ground truth: latent memory vs no memory vs RGB cache.

For each trajectory (``revisit``, ``loop``: paths that come back) a clip is rendered with exact depth, the
model generates the video from its first frame along its poses with every cache variant (identical model,
seed, poses and write-back depth), and each variant is scored (the protocols: docs/design.md §10):

- **revisit consistency** — frames where the camera is back at the start view (``revisit_pairs``: at least a
  chunk later, within ``REVISIT_M`` metres and ``REVISIT_DEG`` degrees of frame 0): PSNR / SSIM against the
  first visit, the input frame (``revisit_psnr``, ``revisit_ssim``), and against the ground-truth render of
  the same pose (``revisit_psnr_gt``, ``revisit_ssim_gt``);
- **closed loop** (the paper's "_C") — the last frame vs the first, when the last camera is back at the start
  view (``closed_loop_psnr``, ``closed_loop_ssim``; NaN otherwise). LPIPS is not computed (``notes``);
- **3D reprojection** — generated frame ``i`` warped into frame ``i + reprojection_gap`` with the
  ground-truth depth and cameras, mean absolute error on the 0..255 scale over covisible pixels
  (``reprojection_error``, per chunk of the later frame ``chunk_reprojection_error``, the covisible fraction
  ``reprojection_coverage``; the same on the ground-truth frames, the floor of the warp, ``reprojection_error_gt``);
- **memory-read fidelity** — the scene latent each latent was generated with vs the ground-truth latent
  (the encoded render) on the cells the cache hit (``read_psnr``, ``read_hit_fraction``);
- **camera following** — PSNR / SSIM against the ground truth over all frames (``follow_psnr``,
  ``follow_ssim``), and per chunk (``chunk_psnr``);
- **drift** — with ``long_chunks > 0``, one more ``loop`` rollout of that many chunks per variant: PSNR against
  the ground truth and the cache size per chunk (``drift_psnr``, ``drift_cache_bytes``; empty lists otherwise);
- **cost** — ``cache_bytes`` (bytes of the stored points after each chunk), ``cache_read_s`` (cache read,
  plus render + encode for the RGB cache, per chunk), ``seconds_per_frame`` (median over all chunks of all
  trajectories: the median keeps the first chunk's compilation out) and ``seconds_per_frame_per_chunk``.

Per-chunk lists are averaged over trajectories; scalar metrics are means over trajectories, and every
trajectory's own numbers are under ``"trajectories"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mirage_jax.data.synthetic import TRAJECTORIES as SYNTHETIC_TRAJECTORIES
from mirage_jax.data.synthetic import render_clip
from mirage_jax.world.caches import CACHES
from mirage_jax.world.consistency import (
    DEPTH_REL_TOL,
    REPROJECTION_GAP,
    closed_loop,
    gap_pairs,
    nan_mean,
    per_chunk_mean,
    reprojection_error,
)
from mirage_jax.world.generator import WorldGenerator
from mirage_jax.world.image_metrics import masked_latent_error, psnr, ssim
from mirage_jax.world.outputs import save_rollout
from mirage_jax.world.video import contact_sheet, write_png

TRAJECTORIES = ("revisit", "loop")
REVISIT_M = 0.15
REVISIT_DEG = 10.0
DRIFT_TRAJECTORY = "loop"
PER_CHUNK = ("cache_bytes", "cache_read_s", "seconds_per_frame_per_chunk", "chunk_psnr", "hit_fraction",
             "chunk_reprojection_error")
DRIFT = ("drift_psnr", "drift_cache_bytes")
PLOT_LABELS = {  # key: (title, y-axis label with its unit)
    "cache_bytes": ("Cache size after each chunk", "cache (MiB)"),
    "cache_read_s": ("Cache read time per chunk", "time (seconds)"),
    "seconds_per_frame_per_chunk": ("Generation time per frame", "time per frame (seconds)"),
    "chunk_psnr": ("PSNR against the ground truth", "PSNR (dB)"),
    "hit_fraction": ("Share of latent cells the cache hit", "hit fraction (0 to 1)"),
    "chunk_reprojection_error": ("Reprojection error of frame i into frame i + k", "mean abs. error (0 to 255)"),
    "drift_psnr": ("Drift over a long loop: PSNR against the ground truth", "PSNR (dB)"),
    "drift_cache_bytes": ("Memory size over a long loop", "memory (MiB)"),
}


def check_choices(trajectories: Sequence[str], variants: Sequence[str]) -> None:
    """``ValueError`` unless the trajectories are procedural paths and the variants are caches."""
    bad = [t for t in trajectories if t not in SYNTHETIC_TRAJECTORIES]
    if bad or not trajectories:
        raise ValueError(f"trajectories: unknown {bad or 'none given'}; choose from {SYNTHETIC_TRAJECTORIES}")
    bad = [v for v in variants if v not in CACHES]
    if bad or not variants:
        raise ValueError(f"variants: unknown {bad or 'none given'}; choose from {CACHES}")


def check_long_chunks(long_chunks: int, name: str = "long_chunks") -> None:
    """``ValueError`` unless ``long_chunks`` is a chunk count >= 0 (0: no long rollout)."""
    if isinstance(long_chunks, bool) or not isinstance(long_chunks, int) or long_chunks < 0:
        raise ValueError(f"{name}: expected a chunk count >= 0 (0 = no drift rollout, 8 or more for a curve), "
                         f"got {long_chunks!r}")


def protocol_notes(reprojection_gap: int, long_chunks: int) -> list[str]:
    """What each protocol of ``eval.json`` compares and what it leaves out, in words."""
    return [
        "closed_loop_psnr/ssim: last generated frame vs the first (the paper's _C protocol), scored only when the "
        f"last camera is within {REVISIT_M} m and {REVISIT_DEG} degrees of the first; NaN otherwise",
        "LPIPS: not computed; it needs a pretrained network (the lpips package is PyTorch with downloaded "
        "weights) and no maintained JAX or numpy implementation exists",
        f"reprojection_error: generated frame i warped into frame i+{reprojection_gap} with the ground-truth depth "
        "of i and the ground-truth cameras, mean absolute error on the 0..255 scale over pixels in view and not "
        f"occluded (depth within {DEPTH_REL_TOL:.0%} of the ground truth's); reprojection_error_gt: the same on "
        "the ground-truth frames, what a perfect video scores (above 0: nearest-pixel warping of sharp textures); "
        "a video that ignores the camera scores high, a smooth or constant one low: read it with follow_psnr",
        "follow_psnr/ssim, chunk_psnr: generated frames vs the ground-truth render of the same camera",
        "read_psnr: the cache's read vs the encoded ground-truth render on the latent cells it hit",
        f"drift_psnr/drift_cache_bytes: per chunk of one extra '{DRIFT_TRAJECTORY}' rollout of {long_chunks} "
        "chunks" if long_chunks else "drift_psnr/drift_cache_bytes: not run (long_chunks = 0)",
    ]


def revisit_pairs(poses: np.ndarray, min_gap: int, max_m: float = REVISIT_M, max_deg: float = REVISIT_DEG):
    """``[(i, 0)]``: the frames ``i >= min_gap`` whose camera is back at the start view (within ``max_m`` metres
    and ``max_deg`` degrees of viewing direction of frame 0, the input image). ``poses [N,4,4]`` c2w.

    The paper's closed-loop protocol compares the final frame with the input; this uses every returning
    frame. Only the start view's first visit is real content for every variant (later first visits are
    themselves generated), so it is the fair reference for all of them.
    """
    centres = poses[:, :3, 3]
    forward = poses[:, :3, 2]
    dist = np.linalg.norm(centres - centres[0], axis=-1)
    angle = np.degrees(np.arccos(np.clip(forward @ forward[0], -1, 1)))
    close = (dist <= max_m) & (angle <= max_deg)
    return [(int(i), 0) for i in np.nonzero(close)[0] if i >= min_gap]


def default_num_frames(chunk_frames: int, chunks: int = 3) -> int:
    """Frames of a rollout of ``chunks`` full chunks."""
    return chunk_frames + (chunks - 1) * (chunk_frames - 1)


def score_rollout(result, clip: dict, gt_latents: np.ndarray, chunk_frames: int,
                  reprojection_gap: int = REPROJECTION_GAP) -> dict:
    """All metrics of one rollout against its ground-truth clip."""
    n = len(result.video)
    gt = clip["frames"][:n]
    bounds = [c["output_frames"] for c in result.chunks]
    pairs = revisit_pairs(np.asarray(clip["poses_c2w"][:n]), chunk_frames - 1)
    later = [i for i, _ in pairs]
    first = [j for _, j in pairs]
    frame_psnr = psnr(result.video, gt)
    hits = result.hits[1:]
    read = masked_latent_error(result.scenes[1:], gt_latents[1 : len(result.scenes)], hits)
    warp_pairs = gap_pairs(n, reprojection_gap)
    cameras = (clip["depths"][:n], clip["intrinsics"][:n], clip["poses_c2w"][:n], warp_pairs)
    reprojection, coverage = reprojection_error(result.video, *cameras)
    loop = closed_loop(result.video) if n - 1 in later else dict.fromkeys(("closed_loop_psnr", "closed_loop_ssim"),
                                                                              float("nan"))
    out = {
        "revisit_pairs": len(pairs),
        "revisit_frames": later,
        "revisit_psnr": float(np.mean(psnr(result.video[later], result.video[first]))) if pairs else float("nan"),
        "revisit_ssim": float(np.mean(ssim(result.video[later], result.video[first]))) if pairs else float("nan"),
        "revisit_psnr_gt": float(np.mean(frame_psnr[later])) if pairs else float("nan"),
        "revisit_ssim_gt": float(np.mean(ssim(result.video[later], gt[later]))) if pairs else float("nan"),
        **loop,
        "reprojection_error": nan_mean(reprojection),
        "reprojection_error_gt": nan_mean(reprojection_error(gt, *cameras)[0]),
        "reprojection_coverage": float(np.mean(coverage)),
        "read_psnr": read["psnr"],
        "read_hit_fraction": read["hit_fraction"],
        "follow_psnr": float(np.mean(frame_psnr)),
        "follow_ssim": float(np.mean(ssim(result.video, gt))),
        "chunk_psnr": per_chunk_mean(frame_psnr, np.arange(n), bounds),
        "chunk_reprojection_error": per_chunk_mean(reprojection, warp_pairs[:, 1], bounds),
        "hit_fraction": [c["hit_fraction"] for c in result.chunks],
        "cache_bytes": [c["cache_bytes"] for c in result.chunks],
        "cache_read_s": [c["timings_s"]["cache_read"] for c in result.chunks],
        "seconds_per_frame_per_chunk": [c["seconds_per_frame"] for c in result.chunks],
        "references": [c["references"] for c in result.chunks],
    }
    return out


def score_drift(result, clip: dict) -> dict:
    """``drift_psnr`` (dB, per chunk, against the ground truth) and ``drift_cache_bytes`` (per chunk) of a long
    rollout."""
    frame_psnr = psnr(result.video, clip["frames"][: len(result.video)])
    bounds = [c["output_frames"] for c in result.chunks]
    return {"drift_psnr": per_chunk_mean(frame_psnr, np.arange(len(frame_psnr)), bounds),
            "drift_cache_bytes": [int(c["cache_bytes"]) for c in result.chunks]}


def _aggregate(per_traj: dict) -> dict:
    """Means over trajectories (per-chunk lists element-wise), the median seconds per frame over all chunks."""
    runs = list(per_traj.values())
    scalars = [k for k, v in runs[0].items() if isinstance(v, float)]
    out = {k: float(np.nanmean([r[k] for r in runs])) if any(np.isfinite(r[k]) for r in runs) else float("nan")
           for k in scalars}
    for key in PER_CHUNK:
        length = min(len(r[key]) for r in runs)
        out[key] = [float(np.mean([r[key][c] for r in runs])) for c in range(length)]
    out["cache_bytes"] = [int(round(v)) for v in out["cache_bytes"]]
    out["seconds_per_frame"] = float(np.median([s for r in runs for s in r["seconds_per_frame_per_chunk"]]))
    out["trajectories"] = per_traj
    return out


def format_table(results: dict) -> str:
    """A plain-text table of the headline metrics, one row per variant."""
    cols = [("revisit_psnr", "revisit PSNR", ".2f"), ("revisit_ssim", "revisit SSIM", ".3f"),
            ("revisit_psnr_gt", "revisit PSNR(GT)", ".2f"), ("closed_loop_psnr", "closed-loop PSNR", ".2f"),
            ("reprojection_error", "reproj. error", ".2f"), ("read_psnr", "read PSNR", ".2f"),
            ("follow_psnr", "follow PSNR", ".2f"), ("seconds_per_frame", "s/frame", ".4f")]
    header = f"{'variant':<8}" + "".join(f"{name:>18}" for _, name, _ in cols) + f"{'cache MiB (last)':>18}"
    lines = [header, "-" * len(header)]
    for variant, r in results.items():
        cells = "".join(f"{format(r[k], fmt):>18}" for k, _, fmt in cols)
        lines.append(f"{variant:<8}{cells}{r['cache_bytes'][-1] / 2**20:>18.3f}")
    return "\n".join(lines)


def plot_metrics(results: dict, out_dir: Path) -> list[str]:
    """One PNG per per-chunk metric with values (a line per variant, ``PLOT_LABELS``); returns the paths."""
    import matplotlib  # noqa: PLC0415
    import matplotlib.ticker  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in [k for k in PER_CHUNK + DRIFT if any(len(r[k]) for r in results.values())]:
        title, ylabel = PLOT_LABELS[key]
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        for variant, r in results.items():
            values = np.asarray(r[key], float) / (2**20 if key.endswith("cache_bytes") else 1)
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=variant)
        ax.set_xlabel("chunk")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{key}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(str(path))
    return paths


def evaluate(config, model, out_dir: str | Path, *, trajectories: Sequence[str] = TRAJECTORIES,
             num_frames: int | None = None, seed: int = 0, variants: Sequence[str] = CACHES,
             depth_source="geometry", depth_head=None, progress: bool = True, save_videos: bool = True,
             mesh=None, reprojection_gap: int = REPROJECTION_GAP, long_chunks: int = 0) -> dict:
    """Runs every variant on every trajectory; writes ``eval.json``, ``eval.txt`` (the table), ``plots/<metric>.png``,
    ``revisit_<trajectory>.png`` (ground truth first visit | ground truth revisit | each variant's revisit frame)
    and, with ``save_videos``, each rollout under ``<trajectory>/<variant>/``.

    ``reprojection_gap``: the frames ``k`` apart that the reprojection error compares. ``long_chunks > 0`` adds
    one ``DRIFT_TRAJECTORY`` rollout of that many chunks per variant (videos under ``drift/<variant>/``) for
    ``drift_psnr`` and ``drift_cache_bytes``; 0 (the default, fast) leaves them empty.

    Returns ``{variant: metrics}`` (the content of ``OUT/eval.json``), each with at least ``revisit_psnr``,
    ``revisit_ssim``, ``closed_loop_psnr``, ``reprojection_error``, ``seconds_per_frame``, ``cache_bytes`` (one
    value per chunk), ``drift_psnr``, ``drift_cache_bytes`` and ``notes`` (the protocols in words).
    """
    check_choices(trajectories, variants)
    check_long_chunks(long_chunks)
    chunk_frames = int(config.sample.chunk_frames)
    num_frames = default_num_frames(chunk_frames) if num_frames is None else num_frames
    gap_pairs(num_frames, reprojection_gap)  # checks the gap before anything runs
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = WorldGenerator(config, model, depth_head=depth_head, mesh=mesh)  # built once for every rollout
    space = generator.space
    hw = (int(config.data.height), int(config.data.width))
    run = {"depth_source": depth_source, "progress": progress}
    per_variant: dict = {v: {} for v in variants}
    for trajectory in trajectories:
        clip = render_clip(seed, num_frames, *hw, trajectory)
        gt_latents = np.asarray(space.encode(clip["frames"][None].astype(np.float32) / 127.5 - 1.0))[0]
        results = {}
        for variant in variants:
            result = generator.generate(clip, num_frames, cache=variant, **run)
            results[variant] = result
            per_variant[variant][trajectory] = score_rollout(result, clip, gt_latents, chunk_frames,
                                                             reprojection_gap)
            if save_videos:
                save_rollout(result, out / trajectory / variant, config, fps=int(config.sample.fps),
                             extra={"scores": per_variant[variant][trajectory]})
        pairs = revisit_pairs(clip["poses_c2w"][:num_frames], chunk_frames - 1)
        i, j = pairs[-1] if pairs else (num_frames - 1, 0)
        sheet = contact_sheet([[clip["frames"][j], clip["frames"][i]] + [results[v].video[i] for v in variants]])
        write_png(out / f"revisit_{trajectory}.png", sheet)
    metrics = {variant: _aggregate(per_variant[variant]) for variant in variants}
    drift = {v: {key: [] for key in DRIFT} for v in variants}
    if long_chunks:
        drift = _drift_rollouts(generator, config, variants, seed, long_chunks, run,
                                out / "drift" if save_videos else None)
    for variant in variants:
        metrics[variant].update(drift[variant], notes=protocol_notes(reprojection_gap, long_chunks))
    plot_metrics(metrics, out / "plots")
    (out / "eval.json").write_text(json.dumps(metrics, indent=2))
    (out / "eval.txt").write_text(format_table(metrics) + "\n")
    return metrics


def _drift_rollouts(generator, config, variants: Sequence[str], seed: int, chunks: int, run: dict,
                    video_dir: Path | None) -> dict:
    """``{variant: score_drift(...)}`` of one ``DRIFT_TRAJECTORY`` rollout of ``chunks`` chunks per variant;
    with ``video_dir``, each rollout's videos go to ``video_dir/<variant>/``."""
    frames = default_num_frames(int(config.sample.chunk_frames), chunks)
    clip = render_clip(seed, frames, int(config.data.height), int(config.data.width), DRIFT_TRAJECTORY)
    scores = {}
    for variant in variants:
        result = generator.generate(clip, frames, cache=variant, **run)
        scores[variant] = score_drift(result, clip)
        if video_dir is not None:
            save_rollout(result, video_dir / variant, config, fps=int(config.sample.fps),
                         extra={"scores": scores[variant]})
    return scores
