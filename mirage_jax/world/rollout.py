"""Chunked world generation with a scene cache (DESIGN.md §1, mirage_official.md §5).

``rollout(config, model, clip, num_frames=...)`` generates a ``4N+1``-frame video along the clip's camera
path, chunk by chunk (``chunks.iteration_plan``). Per chunk:

1. **read** the scene cache at the chunk's latent poses (``cache_*.read_scene``): the latent memory splats
   at latent resolution; the RGB cache renders at pixel resolution and encodes the renders; ``"none"`` reads
   nothing (zero scene, all-miss hit mask);
2. **context**: the preceding latents (the ``P`` generated latents before the chunk's frame 0) with the
   scene reads stored when they were generated, and up to ``R`` reference latents from the history chosen
   by voxel IoU with the target views (threshold and top-k from the config). ``memory.reference_rule``:
   ``"frozen"`` (default, the official rule) scores each history latent by what it saw right after its chunk
   was written (``memory.history``); ``"current"`` recomputes its view from the cache now
   (``memory.select_references``);
3. **denoise** the chunk in one compiled program (``denoiser.denoise_chunk``), frame 0 fixed to the clean
   latent (the input image's for chunk 0, the previous chunk's last latent after);
4. **decode** and **write back** the chunk's latents 1.. with depth from the selected source (``depth.py``);
   its latent 0 is already cached (the input frame at initialisation, else the previous chunk's last latent).
   The official code re-writes latent 0 in chunk 0; with the memory's de-duplication that changes nothing.

Bad inputs raise ``ValueError`` in ``check_inputs`` before anything is compiled or computed.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax import geometry
from mirage_jax.models.latent_space import make_latent_space
from mirage_jax.models.sequence_slots import place_preceding, place_references
from mirage_jax.models.text import make_text_encoder
from mirage_jax.models.vace import build_control
from mirage_jax.sampling import schedule_args
from mirage_jax.video_shapes import FRAMES_PER_LATENT, longest_video
from mirage_jax.video_shapes import num_frames as video_frames
from mirage_jax.world.caches import CACHES, Views, make_cache
from mirage_jax.world.chunks import Chunk, iteration_plan
from mirage_jax.world.denoiser import denoise_chunk, split_model
from mirage_jax.world.depth import make_depth_source
from mirage_jax.world.progress import chunk_bar, step_progress
from mirage_jax.world.references import REFERENCE_RULES, FrozenReferences
from mirage_jax.world.video import to_uint8


@dataclasses.dataclass
class RolloutResult:
    """Everything a rollout produced.

    ``video`` uint8 ``[N, H, W, 3]``; ``chunk_videos``: uint8 decoded frames of each chunk (its model frames,
    the overlap frame included for chunks ≥ 1); ``latents [G, h, w, C]`` all generated latents (latent j ↔
    pixel frame 4j); ``scenes [G, h, w, C]`` / ``hits [G, h, w]`` the cache read each latent was generated
    with; ``chunks``: per-chunk metadata (poses, references, cache size, timings); ``cache``: the final cache.
    """

    video: np.ndarray
    chunk_videos: list
    latents: np.ndarray
    scenes: np.ndarray
    hits: np.ndarray
    chunks: list
    cache: object
    settings: dict


def check_inputs(config, clip: dict, num_frames: int, *, start: int = 0, cache: str = "latent", depth_source="geometry",
                 depth_head=None) -> list[Chunk]:
    """Validates everything a rollout needs before any compute; returns the iteration plan."""
    if cache not in CACHES:
        raise ValueError(f"cache: expected one of {CACHES}, got {cache!r}")
    if config.memory.reference_rule not in REFERENCE_RULES:
        raise ValueError(f"config.memory.reference_rule={config.memory.reference_rule!r}: expected one of "
                         f"{REFERENCE_RULES}")
    for key in ("frames", "depths", "intrinsics", "poses_c2w"):
        if key not in clip:
            raise ValueError(f"geometry: missing key {key!r} (a geometry.npz or procedural clip has it)")
    plan = iteration_plan(num_frames, int(config.sample.chunk_frames), start)
    poses = np.asarray(clip["poses_c2w"])
    if len(poses) < start + num_frames:
        raise ValueError(
            f"geometry has {len(poses)} poses but start={start} + frames={num_frames} needs {start + num_frames}; "
            f"pass --frames {longest_video(len(poses) - start)} or a longer camera path"
        )
    frames = np.asarray(clip["frames"])
    height, width = int(config.data.height), int(config.data.width)
    if frames.shape[1:3] != (height, width):
        raise ValueError(
            f"geometry frames are {frames.shape[1]}x{frames.shape[2]} but the config generates {height}x{width}; "
            f"pass --config.data.height={frames.shape[1]} --config.data.width={frames.shape[2]} or resize the input"
        )
    s = int(config.latent.spatial_factor)
    _, ph, pw = (int(p) for p in config.model.patch_size)  # the DiT's patch: latent h, w divisible by it
    if height % (s * ph) or width % (s * pw):
        raise ValueError(
            f"resolution {height}x{width}: height and width must be multiples of {s * ph}x{s * pw} "
            f"(latent factor {s} x DiT patch {ph}x{pw})"
        )
    if np.asarray(clip["depths"]).shape[1:] != (height, width):
        raise ValueError(
            f"geometry depths are {np.asarray(clip['depths']).shape[1:]}; they must match the frames {height}x{width}"
        )
    if depth_source == "geometry" and np.asarray(clip["depths"]).shape[0] < start + num_frames:
        raise ValueError("depth_source='geometry' needs a depth map for every pose; use --depth-source head")
    if depth_source == "head" and depth_head is None:
        raise ValueError("depth_source='head' needs a LatentDepthHead (train with --config.train.depth_head=true)")
    if not (isinstance(depth_source, str) or callable(depth_source)):
        raise ValueError(f"depth_source: expected 'geometry', 'head' or a callable, got {depth_source!r}")
    geometry.validate_intrinsics(clip["intrinsics"], "geometry intrinsics")
    geometry.validate_poses(poses, "geometry poses_c2w")
    return plan


def _preceding_indices(chunk: Chunk, num_preceding: int) -> list[int]:
    """Global latent indices of the preceding context: the P generated latents before the chunk's frame 0."""
    if chunk.index == 0:
        return []
    last = chunk.latent_start  # the previous chunk's last latent, this chunk's frame 0
    return list(range(max(0, last - num_preceding), last))


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - start


def score_latent(config, space, num_latents: int, hw: tuple) -> jax.Array | None:
    """The official constant "score" control latent (the latent of an all-white video) for ``num_latents``
    frames, or None when the config feeds the hit mask instead (``config.model.score_source``)."""
    if config.model.score_source != "constant":
        return None
    key = ("white", num_latents, tuple(hw))
    cached = _SCORE_CACHE.get((id(space), key))
    if cached is None:
        white = jnp.ones((1, video_frames(num_latents), *hw, 3), jnp.float32)
        cached = _SCORE_CACHE[(id(space), key)] = space.encode(white)[0]
    return cached


_SCORE_CACHE: dict = {}


def rollout(config, model, clip: dict, num_frames: int, *, cache: str = "latent", depth_source="geometry",
            depth_head=None, prompt: str | None = None, seed: int | None = None, start: int = 0,
            progress: bool = True) -> RolloutResult:
    """Generates ``num_frames`` (4N+1) frames along ``clip``'s cameras from its frame ``start``.

    Args:
      config: the full config (``latent``, ``text``, ``model``, ``memory``, ``sample`` sections are used).
      model: a ``WanDiT`` or any callable with its signature (e.g. an oracle in tests).
      clip: ``frames uint8 [N,H,W,3]`` (frame ``start`` is the input image), ``depths [N,H,W]`` (frame
        ``start``'s initialises the cache), ``intrinsics [N,3,3]`` (frame resolution), ``poses_c2w [N,4,4]``,
        optional ``masks [N,H,W]`` (True = static) and ``caption``.
      cache: ``"latent"`` (latent spatial memory), ``"rgb"`` (coloured point cache), ``"none"``.
      depth_source: ``"geometry"``, ``"head"`` (needs ``depth_head``) or a callable (see ``depth.py``).
      prompt: text prompt (default: the clip's caption); seed: noise seed (default ``config.sample.seed``).
    """
    plan = check_inputs(config, clip, num_frames, start=start, cache=cache, depth_source=depth_source,
                        depth_head=depth_head)
    sample, mem_cfg = config.sample, config.memory
    space = make_latent_space(config)
    text = make_text_encoder(config)
    depth_fn = make_depth_source(depth_source, clip, depth_head)
    graphdef, state = split_model(model)
    seed = int(sample.seed if seed is None else seed)
    key = jax.random.key(seed)
    hw = (int(config.data.height), int(config.data.width))
    lat_hw = (hw[0] // space.spatial_factor, hw[1] // space.spatial_factor)
    num_refs, num_prec = int(mem_cfg.max_references), int(mem_cfg.num_preceding)
    k_pix = np.asarray(clip["intrinsics"], np.float32)
    poses = np.asarray(clip["poses_c2w"], np.float32)
    masks = clip.get("masks")
    k_lat = np.asarray(geometry.scale_intrinsics(k_pix, hw, lat_hw), np.float32)
    sched = schedule_args(sample)
    prompt = clip.get("caption", "") if prompt is None else prompt
    context = jnp.asarray(text.encode([prompt]))
    null_context = jnp.asarray(text.encode([""]))
    total = plan[-1].latent_start + plan[-1].num_latents

    first_image = np.asarray(clip["frames"][start], np.float32)[None] / 127.5 - 1.0  # [1, H, W, 3]
    first_latent = np.asarray(space.encode(first_image[None]))[0]  # [1, h, w, C]
    write_frames = int(config.sample.chunk_frames) // FRAMES_PER_LATENT
    scene_cache = make_cache(cache, config, space, total, write_frames=write_frames)
    frozen = None  # the official reference rule's record (memory.reference_rule="frozen"); none without a cache
    if mem_cfg.reference_rule == "frozen" and cache != "none":
        frozen = FrozenReferences(total, 1 + len(plan), write_frames, lat_hw, mem_cfg.depth_downsample)
    first = slice(start, start + 1)
    first_depth = np.asarray(clip["depths"][first], np.float32)
    first_keep = None if masks is None else np.asarray(masks[first])
    scene_cache.write(first_latent, first_image, first_depth, first_keep, k_pix[first], poses[first], k_pix[first])
    if frozen is not None:
        frozen.write(first_depth, first_keep, k_pix[first], poses[first])

    latents = np.zeros((total, *lat_hw, space.channels), np.float32)
    scenes = np.zeros_like(latents)
    hits = np.zeros((total, *lat_hw), bool)
    latents[0] = first_latent[0]
    history_pose = np.minimum(start + 4 * np.arange(total), len(poses) - 1)  # latent j <-> pose start + 4j
    video, chunk_videos, chunk_meta = [], [], []
    steps_bar = step_progress(int(sample.steps)) if progress else None
    for chunk in chunk_bar(plan, progress):
        t0 = time.perf_counter()
        tgt = np.asarray(chunk.pose_indices)
        pix = np.asarray(chunk.pixel_pose_indices)
        views = Views(k_lat[tgt], poses[tgt], lat_hw, k_pix[pix], poses[pix], hw)
        (scene, hit), read_s = _timed(scene_cache.read, views)
        scene, hit = np.asarray(scene, np.float32), np.asarray(hit, bool)

        generated = chunk.latent_start + 1 if chunk.index else 0  # latents that exist before this chunk
        threshold, voxel = float(mem_cfg.reference_iou_threshold), float(mem_cfg.voxel_size)
        if frozen is not None:
            ref_idx, ref_iou = frozen.select(views, generated, num_refs, threshold, voxel)
        else:
            ref_idx, ref_iou = scene_cache.references(views, k_lat[history_pose], poses[history_pose], generated,
                                                      num_refs, threshold, voxel)
        prec_idx = _preceding_indices(chunk, num_prec)
        refs, ref_mask = place_references(latents[ref_idx], num_refs)  # IoU order, as the official
        prec, prec_mask = place_preceding(latents[prec_idx], num_prec)
        prec_scene, _ = place_preceding(scenes[prec_idx], num_prec)
        prec_hit, _ = place_preceding(hits[prec_idx], num_prec)
        control = build_control(
            jnp.asarray(np.concatenate([scene, prec_scene]))[None],
            jnp.asarray(np.concatenate([hit, prec_hit]))[None],
            config.model.score_source,
            score_latent(config, space, chunk.num_latents + num_prec, hw),
        )
        frame_mask = np.concatenate([ref_mask, np.ones(chunk.num_latents, bool), prec_mask])[None]
        noise = jax.random.normal(jax.random.fold_in(key, chunk.index), (1, chunk.num_latents, *lat_hw,
                                                                          space.channels), jnp.float32)
        if steps_bar is not None:
            steps_bar.start(f"chunk {chunk.index} denoising")
        out, denoise_s = _timed(
            denoise_chunk, state, noise, jnp.asarray(latents[chunk.latent_start])[None], jnp.asarray(refs)[None],
            jnp.asarray(prec)[None], control, jnp.asarray(frame_mask), context, null_context, graphdef=graphdef,
            schedule_args=sched, num_references=num_refs, guidance_scale=float(sample.guidance_scale),
            on_step=None if steps_bar is None else steps_bar.on_step,
        )
        if steps_bar is not None:
            steps_bar.close()
        chunk_latents = np.asarray(out[0], np.float32)
        decoded, decode_s = _timed(space.decode, chunk_latents[None])
        decoded = np.asarray(decoded[0], np.float32)

        new = chunk.new_latents
        g = slice(chunk.latent_start + new.start, chunk.latent_start + new.stop)
        latents[g], scenes[g], hits[g] = chunk_latents[new], scene[new], hit[new]
        chunk_videos.append(to_uint8(decoded))
        video.append(to_uint8(decoded if chunk.index == 0 else decoded[1:]))

        # Write back latents 1.. (latent 0 is already cached: the input frame, or the previous chunk's last).
        t_write = time.perf_counter()
        new_pose = tgt[1:]
        new_frames = decoded[::FRAMES_PER_LATENT][1:]
        depth, keep = depth_fn(chunk_latents[1:], new_frames, new_pose)
        depth = np.asarray(depth, np.float32)
        k_depth = np.asarray(geometry.scale_intrinsics(k_pix[new_pose], hw, depth.shape[1:]), np.float32)
        jax.block_until_ready(scene_cache.write(chunk_latents[1:], new_frames, depth, keep, k_depth,
                                                poses[new_pose], k_pix[new_pose]))
        if frozen is not None:  # what the chunk's new latents see now (chunk 0: latent 0 too, as the official)
            frozen.write(depth, keep, k_depth, poses[new_pose])
            frozen.record(np.arange(g.start, g.stop), k_lat[tgt[new]], poses[tgt[new]])
        write_s = time.perf_counter() - t_write
        total_s = time.perf_counter() - t0
        chunk_meta.append({
            "chunk": chunk.index,
            "output_frames": [chunk.output_start, chunk.output_end],
            "model_frames": chunk.model_frames,
            "pose_indices": [int(i) for i in tgt],
            "latent_indices": list(range(chunk.latent_start, chunk.latent_start + chunk.num_latents)),
            "references": ref_idx,
            "reference_iou": [round(v, 4) for v in ref_iou],
            "preceding": prec_idx,
            "hit_fraction": float(hit.mean()),
            "cache_points": scene_cache.num_points(),
            "cache_bytes": scene_cache.bytes_used(),
            "cache_capacity_bytes": scene_cache.bytes_allocated(),
            "timings_s": {"cache_read": read_s, "denoise": denoise_s, "decode": decode_s, "write": write_s,
                          "total": total_s},
            "seconds_per_frame": total_s / (chunk.output_end - chunk.output_start),
        })
    settings = {"cache": cache, "depth_source": depth_source if isinstance(depth_source, str) else "callable",
                "num_frames": num_frames, "start": start, "seed": seed, "prompt": prompt, "schedule": list(sched),
                "max_references": num_refs, "num_preceding": num_prec, "height": hw[0], "width": hw[1],
                "reference_rule": mem_cfg.reference_rule}
    return RolloutResult(np.concatenate(video)[:num_frames], chunk_videos, latents, scenes, hits, chunk_meta,
                         scene_cache.state, settings)
