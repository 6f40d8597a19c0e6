"""Training windows: where a training example is cut from a clip, decided before anything is encoded.

A window fixes every choice that depends on the clip's frames and geometry (docs/design.md §7): the start
``t0`` (drawn from ``rng``); the ``Tl = 1 + (target_frames-1)//4`` latent targets (pixel frames ``t0 + 4i``);
the ``P`` preceding latents (pixel frames ``t0 - 4P .. t0 - 4``, of which the ones at frames ≥ 0 are
available); up to ``R`` references: candidates outside ``[t0 - 4P, t0 + target_frames)`` on the 4-frame grid,
at most ``max_reference_candidates``, ranked by voxel IoU (from depth) with the target views by
``mirage_jax.memory.select_references``; and the latent-resolution geometry the example needs later: target
depth (for the depth head), the depth of frame ``t0`` (the memory is written from it) and the cameras the
memory is read at.

The video parts (``window_videos``) are encoded separately, as the official pipeline does: the encoder is
causal, so a part's latents depend on where the part starts. ``make_example`` (raw frames, per example) and
``mirage-jax data encode`` (stored latents, once) share this code; what is random per example (how many
preceding latents and references are kept) is drawn later, in ``examples.example_from_window``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax import geometry, memory
from mirage_jax.memory import downsample_depth
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

    @property
    def preceding_video_frames(self) -> int:
        """Pixel frames of the preceding video: ``4P - 3`` (latents at ``t0-4P .. t0-4``), 0 without slots."""
        return FRAMES_PER_LATENT * (self.num_preceding - 1) + 1 if self.num_preceding else 0


@dataclasses.dataclass(frozen=True)
class Window:
    """One training window of a clip (see the module docstring); latent grid ``h x w``."""

    clip_index: int
    t0: int
    target_frames: np.ndarray  # [target_frames] int: pixel frames of the target video
    preceding_frames: np.ndarray  # [4P-3] int: pixel frames of the preceding video (clamped at 0)
    preceding_available: int  # how many of the P preceding latents lie inside the clip (the newest ones)
    reference_frames: np.ndarray  # [R] int: the chosen reference frames, best first (padding repeats a frame)
    reference_available: int  # how many of them were chosen (the rest is padding)
    target_depth: np.ndarray  # [Tl, h, w] f32: metric depth of the targets at latent resolution (0 = invalid)
    memory_depth: np.ndarray  # [h, w] f32: depth of frame t0 where the memory may store it (0 = not stored)
    camera_intrinsics: np.ndarray  # [Tl+P, 3, 3] f32: latent-resolution intrinsics, targets then preceding
    camera_c2w: np.ndarray  # [Tl+P, 4, 4] f32: the same cameras' poses (preceding clamped at frame 0)


@functools.partial(jax.jit, static_argnames=("hw", "mode"))
def _lift(depths, keep, k_lat, c2w, hw, mode):
    """Depth at latent resolution ``[T,h,w]`` (0 = invalid) and its world points ``[T,h,w,3]``."""
    depth, ok = downsample_depth(depths, keep, hw, mode)
    depth = jnp.where(ok, depth, 0.0)
    return depth, geometry.backproject_to_world(depth, k_lat, c2w)


def sample_window(clip: dict, clip_index: int, rng: np.random.Generator, spec: ExampleSpec,
                  spatial_factor: int) -> Window:
    """Draws ``t0`` from ``rng`` and plans the window of ``clip`` (already ``height x width``)."""
    frames, depths, masks = clip["frames"], clip["depths"], clip["masks"]
    intrinsics, c2w = clip["intrinsics"], clip["poses_c2w"]
    num_frames = frames.shape[0]
    if num_frames < spec.target_frames:
        raise ValueError(f"config.data.source: clip {clip_index} has {num_frames} frames, fewer than "
                         f"config.data.target_frames={spec.target_frames}; build the dataset with longer clips "
                         "(data build --frames) or lower data.target_frames")
    hw = (spec.height // spatial_factor, spec.width // spatial_factor)
    k_lat = np.asarray(geometry.scale_intrinsics(intrinsics, (spec.height, spec.width), hw))
    p, r, tl, nc = spec.num_preceding, spec.num_references, spec.num_targets, spec.max_reference_candidates
    step = FRAMES_PER_LATENT

    t0 = int(rng.integers(0, num_frames - spec.target_frames + 1))
    target_idx = t0 + step * np.arange(tl)
    prec_idx = t0 - step * np.arange(p, 0, -1)  # latent j <-> pixel frame t0 - 4(P-j), oldest first
    prec_video = np.clip(np.arange(t0 - step * p, t0 - step + 1), 0, None)

    # Reference candidates: nc frames outside the preceding+target window (4-frame grid, padded and masked),
    # scored by voxel IoU of their depth-lifted views with the target views.
    window = np.arange(max(0, t0 - step * p), t0 + spec.target_frames)
    grid = np.setdiff1d(np.arange(t0 % step, num_frames, step), window)
    n_cand = min(grid.size, nc)
    cand = np.zeros(nc, int)
    if n_cand:
        cand[:n_cand] = grid[np.round(np.linspace(0, grid.size - 1, n_cand)).astype(int)]
    lift = np.concatenate([cand, target_idx, [t0]])
    keep = np.concatenate([masks[cand], np.ones_like(masks[target_idx]), masks[t0:t0 + 1]])
    lat_depth, points = (np.asarray(a) for a in _lift(depths[lift], keep, k_lat[lift], c2w[lift], hw,
                                                      spec.depth_downsample))
    rows = np.arange(nc + tl)
    valid = (lat_depth[:-1] > 0) & ((rows < n_cand) | (rows >= nc))[:, None, None]
    refs = memory.select_references(points[:-1].reshape(-1, 3), k_lat[cand], c2w[cand], k_lat[target_idx],
                                    c2w[target_idx], hw, valid=valid.reshape(-1), k=r,
                                    threshold=spec.reference_iou_threshold, voxel_size=spec.voxel_size,
                                    history_mask=np.arange(nc) < n_cand)
    chosen = np.asarray(refs.indices)
    cams = np.concatenate([target_idx, np.clip(prec_idx, 0, None)])
    return Window(clip_index=clip_index, t0=t0, target_frames=np.arange(t0, t0 + spec.target_frames),
                  preceding_frames=prec_video if p else np.zeros(0, int),
                  preceding_available=int(np.sum(prec_idx >= 0)),
                  reference_frames=cand[np.maximum(chosen, 0)], reference_available=int(np.sum(chosen >= 0)),
                  target_depth=lat_depth[nc:-1], memory_depth=lat_depth[-1],
                  camera_intrinsics=k_lat[cams].astype(np.float32), camera_c2w=np.asarray(c2w[cams], np.float32))


def window_videos(clip: dict, window: Window) -> dict[str, np.ndarray]:
    """The window's video parts, each encoded on its own: ``target [T,H,W,3]``, ``preceding [4P-3,H,W,3]``
    (``[0,...]`` without preceding slots) and ``references [R,1,H,W,3]`` (single-frame videos), uint8."""
    frames = clip["frames"]
    return {"target": frames[window.target_frames], "preceding": frames[window.preceding_frames],
            "references": frames[window.reference_frames][:, None]}


def encoded_window(window: Window, target_latents, preceding_latents, reference_latents) -> dict:
    """A window with its encoded parts: the record of a latent dataset (``latent_dataset``) and the input of
    ``examples.example_from_window``. Latents ``[Tl|P|R, h, w, C]`` (float32 or bfloat16)."""
    return {"clip_index": np.int64(window.clip_index), "t0": np.int64(window.t0),
            "target_latents": target_latents, "preceding_latents": preceding_latents,
            "preceding_available": np.int64(window.preceding_available),
            "reference_latents": reference_latents, "reference_available": np.int64(window.reference_available),
            "target_depth": window.target_depth, "memory_depth": window.memory_depth,
            "camera_intrinsics": window.camera_intrinsics, "camera_c2w": window.camera_c2w}
