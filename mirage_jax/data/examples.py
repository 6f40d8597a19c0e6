"""One clip → one training example (``training_example.TrainingExample``, docs/design.md §7).

For a clip of ``F`` frames (``F >= target_frames``): pick ``t0``; the ``Tl = 1 + (target_frames-1)//4`` latent
targets are pixel frames ``t0 + 4i``; the ``P`` preceding latents are pixel frames ``t0 - 4P .. t0 - 4``;
reference candidates are up to ``max_reference_candidates`` frames outside ``[t0 - 4P, t0 + target_frames)``
(on the 4-frame grid), ranked by voxel IoU (from depth) with the target views by
``mirage_jax.memory.select_references``. A random number of preceding latents (the newest) and of references
(the best) is kept, placed in their slots as the rollout places them (``mirage_jax.models.sequence_slots``).
The memory is written from frame ``t0`` (its latent, depth, pose and static mask) and read at the target and
preceding cameras. All random choices come from the ``rng`` that
Grain's ``random_map`` derives from the seed and the element index, so an example is reproducible.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax import geometry, memory
from mirage_jax.data.sources import resize_clip
from mirage_jax.memory import downsample_depth
from mirage_jax.models.sequence_slots import place_preceding, place_references
from mirage_jax.video_shapes import FRAMES_PER_LATENT, check_video_length, num_latents


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """Sizes of a training example (from a config: :meth:`from_config`)."""

    height: int
    width: int
    target_frames: int = 33
    num_preceding: int = 2  # preceding slots
    max_preceding: int = 2  # at most this many are real (a random count per example)
    num_references: int = 4  # reference slots
    max_references: int = 4  # at most this many are real (a random count per example)
    max_reference_candidates: int = 8
    reference_iou_threshold: float = 0.04
    voxel_size: float = 0.1
    depth_downsample: str = "bilinear"

    @classmethod
    def from_config(cls, config) -> ExampleSpec:
        d, m, t = config.data, config.memory, config.train
        check_video_length(int(d.target_frames), "config.data.target_frames")
        return cls(height=d.height, width=d.width, target_frames=d.target_frames, num_preceding=m.num_preceding,
                   max_preceding=min(t.max_preceding, m.num_preceding), num_references=m.max_references,
                   max_references=min(t.max_references, m.max_references),
                   max_reference_candidates=d.max_reference_candidates,
                   reference_iou_threshold=m.reference_iou_threshold, voxel_size=m.voxel_size,
                   depth_downsample=m.depth_downsample)

    @property
    def num_targets(self) -> int:
        return num_latents(self.target_frames)


def fit_clip(clip: dict, height: int, width: int) -> dict:
    """Resizes (nearest, keeping the aspect ratio, covering the target) and centre-crops a clip to ``height x
    width``, with intrinsics adjusted (``scale_intrinsics``, then the principal point shifted by the crop)."""
    _, h, w = clip["depths"].shape
    if (h, w) == (height, width):
        return clip
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    clip = resize_clip(clip, rh, rw)
    top, left = (rh - height) // 2, (rw - width) // 2
    out = dict(clip)
    for key in ("frames", "depths", "masks"):
        out[key] = clip[key][:, top:top + height, left:left + width]
    k = np.array(clip["intrinsics"], np.float32)
    k[:, 0, 2] -= left
    k[:, 1, 2] -= top
    out["intrinsics"] = k
    return out


def _encode_frames(latent_space, frames: np.ndarray) -> np.ndarray:
    """uint8 ``[B,T,H,W,3]`` (T = 4N+1) → latents ``[B,1+(T-1)//4,h,w,C]`` float32 via ``latent_space.encode``."""
    video = frames.astype(np.float32) / 127.5 - 1.0
    return np.asarray(latent_space.encode(video), np.float32)


@functools.partial(jax.jit, static_argnames=("hw", "mode"))
def _lift(depths, keep, k_lat, c2w, hw, mode):
    """Depth at latent resolution ``[T,h,w]`` (0 = invalid) and its world points ``[T,h,w,3]``."""
    depth, ok = downsample_depth(depths, keep, hw, mode)
    depth = jnp.where(ok, depth, 0.0)
    return depth, geometry.backproject_to_world(depth, k_lat, c2w)


def make_example(clip: dict, clip_index: int, rng: np.random.Generator, spec: ExampleSpec, latent_space,
                 text_encoder) -> dict:
    """The training example (without the batch axis) of ``clip``; see the module docstring.

    Every array handed to JAX has a shape fixed by ``spec`` (absent preceding frames and candidates are
    padded and masked), so each jitted function compiles once.
    """
    clip = fit_clip(clip, spec.height, spec.width)
    frames, depths, masks = clip["frames"], clip["depths"], clip["masks"]
    intrinsics, c2w = clip["intrinsics"], clip["poses_c2w"]
    num_frames = frames.shape[0]
    if num_frames < spec.target_frames:
        raise ValueError(f"config.data.source: clip {clip_index} has {num_frames} frames, fewer than "
                         f"config.data.target_frames={spec.target_frames}; build the dataset with longer clips "
                         "(data build --frames) or lower data.target_frames")
    s = latent_space.spatial_factor
    hw = (spec.height // s, spec.width // s)
    k_lat = np.asarray(geometry.scale_intrinsics(intrinsics, (spec.height, spec.width), hw))
    p, r, tl, nc = spec.num_preceding, spec.num_references, spec.num_targets, spec.max_reference_candidates

    t0 = int(rng.integers(0, num_frames - spec.target_frames + 1))
    step = FRAMES_PER_LATENT
    target_idx = t0 + step * np.arange(tl)
    # Preceding: pixel frames t0-4P .. t0-4 (latent j <-> t0 - 4(P-j)); a random count k keeps the newest k,
    # placed in the first k slots (sequence_slots: the official's positions T..T+k-1).
    prec_idx = t0 - step * np.arange(p, 0, -1)
    available = int(np.sum(prec_idx >= 0))
    keep_prec = int(rng.integers(0, min(spec.max_preceding, available) + 1))
    prec_video = np.clip(np.arange(t0 - step * p, t0 - step + 1), 0, None)  # 4P-3 frames: latents at t0-4P, ..., t0-4
    target_latents = _encode_frames(latent_space, frames[t0:t0 + spec.target_frames][None])[0]
    if p:
        preceding_latents = _encode_frames(latent_space, frames[prec_video][None])[0]
    else:
        preceding_latents = np.zeros((0,) + target_latents.shape[1:], np.float32)
    preceding_latents, preceding_mask = place_preceding(preceding_latents[p - keep_prec:].astype(np.float32), p)
    prec_cams, _ = place_preceding(prec_idx[p - keep_prec:], p)  # padded slots read at camera 0 (then zeroed)

    # Memory from frame t0 (one frame: h*w points at most), read at the target and preceding cameras.
    mem = memory.init(hw[0] * hw[1], latent_space.channels)
    mem = memory.write(mem, target_latents[:1], depths[t0:t0 + 1], intrinsics[t0:t0 + 1], c2w[t0:t0 + 1],
                       masks[t0:t0 + 1], depth_downsample=spec.depth_downsample)
    cams = np.concatenate([target_idx, prec_cams])
    scene, hit = (np.asarray(a) for a in memory.read(mem, k_lat[cams], c2w[cams], hw))
    scene, hit = scene.astype(np.float32), hit.copy()
    scene[tl:][~preceding_mask] = 0.0
    hit[tl:][~preceding_mask] = False

    # References: nc candidates outside the preceding+target window (4-frame grid, padded and masked),
    # scored by voxel IoU of their depth-lifted views with the target views.
    window = np.arange(max(0, t0 - step * p), t0 + spec.target_frames)
    grid = np.setdiff1d(np.arange(t0 % step, num_frames, step), window)
    n_cand = min(grid.size, nc)
    cand = np.zeros(nc, int)
    if n_cand:
        cand[:n_cand] = grid[np.round(np.linspace(0, grid.size - 1, n_cand)).astype(int)]
    lift = np.concatenate([cand, target_idx])
    keep = np.concatenate([masks[cand], np.ones_like(masks[target_idx])])  # target depth keeps moving objects
    lat_depth, points = (np.asarray(a) for a in _lift(depths[lift], keep, k_lat[lift], c2w[lift], hw,
                                                      spec.depth_downsample))
    target_depth = lat_depth[nc:]
    rows = np.arange(nc + tl)
    valid = (lat_depth > 0) & ((rows < n_cand) | (rows >= nc))[:, None, None]
    refs = memory.select_references(points.reshape(-1, 3), k_lat[cand], c2w[cand], k_lat[target_idx],
                                    c2w[target_idx], hw, valid=valid.reshape(-1), k=r,
                                    threshold=spec.reference_iou_threshold, voxel_size=spec.voxel_size,
                                    history_mask=np.arange(nc) < n_cand)
    chosen = np.asarray(refs.indices)
    # a random count keeps the best ones, placed in the last slots (sequence_slots: positions -count..-1)
    count = int(rng.integers(0, min(int(np.sum(chosen >= 0)), spec.max_references) + 1))
    reference_latents = _encode_frames(latent_space, frames[cand[np.maximum(chosen, 0)]][:, None])[:, 0]
    reference_latents, reference_mask = place_references(reference_latents[:count].astype(np.float32), r)

    context = np.asarray(text_encoder.encode([clip["caption"]]), np.float32)[0]
    return {
        "target_latents": target_latents,
        "target_scene": scene[:tl],
        "target_hit": hit[:tl],
        "target_depth": target_depth,
        "preceding_latents": preceding_latents,
        "preceding_scene": scene[tl:],
        "preceding_hit": hit[tl:],
        "preceding_mask": preceding_mask,
        "reference_latents": reference_latents,
        "reference_mask": reference_mask,
        "context": context,
        "clip_index": np.int32(clip_index),
    }
