"""A training window → one training example (``training_example.TrainingExample``, docs/design.md §7).

``windows.sample_window`` decides where the example is cut from its clip (``t0``, preceding frames, ranked
references) and ``windows.window_videos`` gives the video parts to encode. ``example_from_window`` turns the
encoded window into the example: a random number of preceding latents (the newest of the available ones) and
of references (the best of the chosen ones) is kept and placed in their slots as the rollout places them
(``mirage_jax.models.sequence_slots``); the memory is written from frame ``t0`` (its latent and latent-resolution
depth) and read at the target and preceding cameras. It runs the same whether the window was just encoded
(``make_example``: raw frames, the tiny and demo configs) or read from a latent dataset (``mirage-jax data
encode``). All random choices come from the ``rng`` that Grain's ``random_map`` derives from the seed and the
element index, so an example is reproducible.
"""

from __future__ import annotations

import jax
import numpy as np

from mirage_jax import memory
from mirage_jax.data.sources import resize_clip
from mirage_jax.data.windows import ExampleSpec, encoded_window, sample_window, window_videos
from mirage_jax.models.sequence_slots import place_preceding, place_references


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


def encode_frames(latent_space, frames, sharding: jax.sharding.Sharding | None = None) -> np.ndarray:
    """uint8 ``[B,T,H,W,3]`` (T = 4N+1) → latents ``[B,1+(T-1)//4,h,w,C]`` float32 via ``latent_space.encode``,
    on the devices of ``sharding`` (the batch split across them) when given."""
    video = np.asarray(frames).astype(np.float32) / 127.5 - 1.0
    if sharding is not None:
        video = jax.device_put(video, sharding)
    return np.asarray(latent_space.encode(video), np.float32)


def example_from_window(window: dict, context: np.ndarray, rng: np.random.Generator, spec: ExampleSpec) -> dict:
    """The training example of an encoded window (``windows.encoded_window``) and its caption's ``context
    [L, D]``; draws how many preceding latents and references it keeps."""
    p, r, tl = spec.num_preceding, spec.num_references, spec.num_targets
    target_latents = np.asarray(window["target_latents"], np.float32)
    _, h, w, channels = target_latents.shape
    keep_prec = int(rng.integers(0, min(spec.max_preceding, int(window["preceding_available"])) + 1))
    preceding = np.asarray(window["preceding_latents"], np.float32)
    preceding_latents, preceding_mask = place_preceding(preceding[p - keep_prec:], p)
    prec_rows, _ = place_preceding(tl + np.arange(p - keep_prec, p), p)  # padded slots read at row 0, then zeroed

    # Memory from frame t0 (one frame: h*w points at most), read at the target and preceding cameras.
    k_lat, c2w = window["camera_intrinsics"], window["camera_c2w"]
    depth = np.asarray(window["memory_depth"], np.float32)[None]
    mem = memory.init(h * w, channels)
    mem = memory.write(mem, target_latents[:1], depth, k_lat[:1], c2w[:1], depth > 0,
                       depth_downsample=spec.depth_downsample)
    cams = np.concatenate([np.arange(tl), prec_rows])
    scene, hit = (np.asarray(a) for a in memory.read(mem, k_lat[cams], c2w[cams], (h, w)))
    scene, hit = scene.astype(np.float32), hit.copy()
    scene[tl:][~preceding_mask] = 0.0
    hit[tl:][~preceding_mask] = False

    # a random count keeps the best references, placed in the last slots (sequence_slots: positions -count..-1)
    count = int(rng.integers(0, min(int(window["reference_available"]), spec.max_references) + 1))
    reference = np.asarray(window["reference_latents"], np.float32)
    reference_latents, reference_mask = place_references(reference[:count], r)
    return {
        "target_latents": target_latents,
        "target_scene": scene[:tl],
        "target_hit": hit[:tl],
        "target_depth": np.asarray(window["target_depth"], np.float32),
        "preceding_latents": preceding_latents,
        "preceding_scene": scene[tl:],
        "preceding_hit": hit[tl:],
        "preceding_mask": preceding_mask,
        "reference_latents": reference_latents,
        "reference_mask": reference_mask,
        "context": np.asarray(context, np.float32),
        "clip_index": np.int32(window["clip_index"]),
    }


def make_example(clip: dict, clip_index: int, rng: np.random.Generator, spec: ExampleSpec, latent_space,
                 text_encoder) -> dict:
    """The training example of ``clip`` from raw frames: samples a window, encodes its parts and the caption
    here (per example, on the host: the tiny and demo configs; real sizes train from ``data encode``)."""
    clip = fit_clip(clip, spec.height, spec.width)
    window = sample_window(clip, clip_index, rng, spec, latent_space.spatial_factor)
    videos = window_videos(clip, window)
    target = encode_frames(latent_space, videos["target"][None])[0]
    if spec.num_preceding:
        preceding = encode_frames(latent_space, videos["preceding"][None])[0]
    else:
        preceding = np.zeros((0,) + target.shape[1:], np.float32)
    references = encode_frames(latent_space, videos["references"])[:, 0]
    context = np.asarray(text_encoder.encode([clip["caption"]]), np.float32)[0]
    return example_from_window(encoded_window(window, target, preceding, references), context, rng, spec)
