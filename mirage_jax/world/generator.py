"""``WorldGenerator``: generation along a camera path, built once per model, run chunk by chunk in named steps.

Built once (``WorldGenerator(config, model)``): the latent space, the text encoder, the sampler schedule, the
model split for the compiled chunk program and the constant score latents. ``generate(clip, num_frames)``
generates a ``4N+1``-frame video along the clip's cameras from its frame ``start``, chunk by chunk
(``chunks.iteration_plan``). Each chunk runs five steps over one per-rollout context (``Rollout``):

1. **read scene**: the scene cache at the chunk's latent poses (``caches``): the latent memory splats at
   latent resolution; the RGB cache renders at pixel resolution and encodes the renders; ``"none"`` reads
   nothing (zero scene, all-miss hit mask);
2. **gather context**: the preceding latents (the ``P`` generated latents before the chunk's frame 0) with the
   scene reads stored when they were generated, and up to ``R`` reference latents chosen by voxel IoU with the
   target views (``memory.reference_rule``: ``"frozen"``, the official rule, scores each history latent by
   what it saw right after its chunk was written, ``references.FrozenReferences``; ``"current"`` recomputes
   its view from the cache now), placed in their slots (``models.sequence_slots``), and the VACE control;
3. **denoise** the chunk in one compiled program (``denoiser.denoise_chunk``), frame 0 fixed to the clean
   latent (the input image's for chunk 0, the previous chunk's last latent after);
4. **decode** the chunk's latents to frames;
5. **write back** latents 1.. with depth from the chosen source (``depth``); latent 0 is already cached (the
   input frame at the start, else the previous chunk's last latent). The official code re-writes latent 0 in
   chunk 0; with the memory's de-duplication that changes nothing.

The generated latents, scene reads and hit masks stay on the device from step to step; the host receives the
decoded frames (outputs), the reference indices and the per-chunk metadata. Bad inputs raise ``ValueError``
in ``check_inputs`` before anything is compiled or computed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from mirage_jax import geometry
from mirage_jax.models.latent_space import make_latent_space
from mirage_jax.models.sequence_slots import place_preceding, place_references
from mirage_jax.models.text import make_text_encoder
from mirage_jax.models.vace import build_control, constant_score_latent
from mirage_jax.sampling import schedule_args
from mirage_jax.video_shapes import FRAMES_PER_LATENT, longest_video
from mirage_jax.world.caches import CACHES, Views, make_cache
from mirage_jax.world.chunks import Chunk, iteration_plan
from mirage_jax.world.denoiser import denoise_chunk, split_model
from mirage_jax.world.depth import make_depth_source
from mirage_jax.world.progress import chunk_bar, step_progress, variant_label
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
    """Validates everything a rollout needs before any compute; returns the chunks."""
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
    if cache != "none":  # the cache is seeded from frame start's depth, and written back with the geometry's
        from mirage_jax.data.npz import check_depth_for_memory  # noqa: PLC0415

        written = {p for chunk in plan for p in chunk.pose_indices} - {start} if depth_source == "geometry" else set()
        check_depth_for_memory(clip["depths"], start, sorted(written), clip.get("source", "geometry"))
    return plan


@dataclasses.dataclass
class Rollout:
    """What the steps of one ``generate`` call share. Arrays that the steps exchange live on the device
    (``latents``, ``scenes``, ``hits``); cameras and indices are host numpy."""

    plan: list[Chunk]
    cache_kind: str
    label: str  # the variant's name in progress bars (progress.variant_label)
    seed: int
    prompt: str
    hw: tuple[int, int]
    lat_hw: tuple[int, int]
    k_pix: np.ndarray  # [N, 3, 3] at pixel resolution
    k_lat: np.ndarray  # [N, 3, 3] at latent resolution
    poses: np.ndarray  # [N, 4, 4] c2w
    history_pose: np.ndarray  # [G] pose index of each global latent
    depth: object  # the depth source (depth.py)
    key: jax.Array
    context: jax.Array  # [1, L, D]
    null_context: jax.Array
    cache: object
    frozen: FrozenReferences | None
    latents: jax.Array  # [G, h, w, C]
    scenes: jax.Array  # [G, h, w, C]
    hits: jax.Array  # [G, h, w]
    video: list = dataclasses.field(default_factory=list)
    chunk_videos: list = dataclasses.field(default_factory=list)
    chunks: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ChunkContext:
    """The conditioning of one chunk (``gather_context``): clean references and preceding latents in their
    slots, the VACE control and the frame mask (all ``[1, ...]`` device arrays), and what was chosen."""

    references: jax.Array
    preceding: jax.Array
    control: jax.Array
    frame_mask: jax.Array
    reference_indices: list[int]
    reference_iou: list[float]
    preceding_indices: list[int]


def _timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - start


def preceding_indices(chunk: Chunk, num_preceding: int) -> list[int]:
    """Global latent indices of the preceding context: the P generated latents before the chunk's frame 0."""
    if chunk.index == 0:
        return []
    last = chunk.latent_start  # the previous chunk's last latent, this chunk's frame 0
    return list(range(max(0, last - num_preceding), last))


class WorldGenerator:
    """A model's generation, built once (see the module docstring); ``generate`` runs one camera path."""

    def __init__(self, config, model, *, depth_head=None, mesh: jax.sharding.Mesh | None = None):
        """``mesh``: the mesh ``model``'s parameters were placed on (``build_model(config, mesh=...)``); each
        chunk's denoising then runs on it, sharded by the config's rules (FSDP, tensor, and the ``context`` axis
        splitting the tokens); everything else stays on the default device. None: one device."""
        self.config = config
        self.mesh = mesh
        self.space = make_latent_space(config)
        self.text = make_text_encoder(config)
        self.graphdef, self.state = split_model(model)
        self.schedule = schedule_args(config.sample)
        self.depth_head = depth_head
        self.num_references = int(config.memory.max_references)
        self.num_preceding = int(config.memory.num_preceding)
        self._score_latents: dict = {}

    def score_latent(self, num_latents: int, hw: tuple) -> jax.Array | None:
        """The constant score latent of ``num_latents`` frames (``score_source="constant"``), else None."""
        if self.config.model.score_source != "constant":
            return None
        if (num_latents, hw) not in self._score_latents:
            self._score_latents[num_latents, hw] = constant_score_latent(self.space, num_latents, hw)
        return self._score_latents[num_latents, hw]

    def generate(self, clip: dict, num_frames: int, *, cache: str = "latent", depth_source="geometry",
                 prompt: str | None = None, seed: int | None = None, start: int = 0,
                 progress: bool = True, on_chunk: Callable[[dict, object], None] | None = None) -> RolloutResult:
        """Generates ``num_frames`` (4N+1) frames along ``clip``'s cameras from its frame ``start``.

        Args:
          clip: ``frames uint8 [N,H,W,3]`` (frame ``start`` is the input image), ``depths [N,H,W]`` (frame
            ``start``'s initialises the cache), ``intrinsics [N,3,3]`` (frame resolution), ``poses_c2w
            [N,4,4]``, optional ``masks [N,H,W]`` (True = static) and ``caption``.
          cache: ``"latent"`` (latent spatial memory), ``"rgb"`` (coloured point cache), ``"none"``.
          depth_source: ``"geometry"``, ``"head"`` (the generator's ``depth_head``) or a callable (``depth.py``).
          prompt: text prompt (default: the clip's caption); seed: noise seed (default ``config.sample.seed``).
          on_chunk: called after each chunk as ``on_chunk(chunk_metadata, cache_state)``: the chunk's entry of
            ``RolloutResult.chunks`` and the cache's state after its write-back (a ``LatentMemory``; None without
            a cache), e.g. to draw the memory chunk by chunk. The next write updates the state in place, so
            copy what you keep (``jax.device_get``).
        """
        plan = check_inputs(self.config, clip, num_frames, start=start, cache=cache, depth_source=depth_source,
                            depth_head=self.depth_head)
        run = self.start(clip, plan, cache, depth_source, prompt, seed, start)
        steps_bar = step_progress(int(self.config.sample.steps)) if progress else None
        for chunk in chunk_bar(plan, progress, desc=f"{run.label}: chunks"):
            self.run_chunk(run, chunk, steps_bar)
            if on_chunk is not None:
                on_chunk(run.chunks[-1], run.cache.state)
        return self.finish(run, num_frames, depth_source, start)

    def run_chunk(self, run: Rollout, chunk: Chunk, steps_bar=None) -> None:
        """The five steps of one chunk of ``run.plan``, after the chunks before it: its frames go to
        ``run.video`` and ``run.chunk_videos``, its metadata to ``run.chunks``. A caller that grows the camera
        path as it goes (``world.explore``) starts a rollout over the longest path it allows and sets the
        chunk's ``run.poses`` before running it. ``steps_bar``: ``start(desc)``, ``on_step(step)`` and
        ``close()`` around the sampler's steps (``progress.StepProgress``), or None."""
        t0 = time.perf_counter()
        views, scene, hit, read_s = self.read_scene(run, chunk)
        context = self.gather_context(run, chunk, views, scene, hit)
        latents, denoise_s = self.denoise(run, chunk, context, steps_bar)
        frames, decode_s = self.decode(latents)
        write_s = self.write_back(run, chunk, latents, frames, scene, hit)
        timings = {"cache_read": read_s, "denoise": denoise_s, "decode": decode_s, "write": write_s,
                   "total": time.perf_counter() - t0}
        self.record(run, chunk, context, frames, hit, timings)

    def start(self, clip: dict, plan: list[Chunk], cache: str, depth_source, prompt, seed, start: int) -> Rollout:
        """The per-rollout context: cameras, prompt embeddings, and the cache holding the input frame."""
        config, space = self.config, self.space
        hw = (int(config.data.height), int(config.data.width))
        lat_hw = (hw[0] // space.spatial_factor, hw[1] // space.spatial_factor)
        k_pix = np.asarray(clip["intrinsics"], np.float32)
        poses = np.asarray(clip["poses_c2w"], np.float32)
        total = plan[-1].latent_start + plan[-1].num_latents
        prompt = clip.get("caption", "") if prompt is None else prompt
        seed = int(config.sample.seed if seed is None else seed)
        write_frames = int(config.sample.chunk_frames) // FRAMES_PER_LATENT
        frozen = None  # the official reference rule's record; none without a cache
        if config.memory.reference_rule == "frozen" and cache != "none":
            frozen = FrozenReferences(total, 1 + len(plan), write_frames, lat_hw, config.memory.depth_downsample)
        run = Rollout(
            plan=plan, cache_kind=cache, label=variant_label(cache, depth_source), seed=seed, prompt=prompt, hw=hw,
            lat_hw=lat_hw, k_pix=k_pix,
            k_lat=np.asarray(geometry.scale_intrinsics(k_pix, hw, lat_hw), np.float32), poses=poses,
            history_pose=np.minimum(start + FRAMES_PER_LATENT * np.arange(total), len(poses) - 1),
            depth=make_depth_source(depth_source, clip, self.depth_head), key=jax.random.key(seed),
            context=jnp.asarray(self.text.encode([prompt])), null_context=jnp.asarray(self.text.encode([""])),
            cache=make_cache(cache, config, space, total, write_frames=write_frames), frozen=frozen,
            latents=jnp.zeros((total, *lat_hw, space.channels), jnp.float32),
            scenes=jnp.zeros((total, *lat_hw, space.channels), jnp.float32), hits=jnp.zeros((total, *lat_hw), bool))
        first_image = jnp.asarray(clip["frames"][start], jnp.float32)[None] / 127.5 - 1.0  # [1, H, W, 3]
        first_latent = space.encode(first_image[None])[0]  # [1, h, w, C]
        first = slice(start, start + 1)
        depth = np.asarray(clip["depths"][first], np.float32)
        keep = None if clip.get("masks") is None else np.asarray(clip["masks"][first])
        run.cache.write(first_latent, first_image, depth, keep, k_pix[first], poses[first], k_pix[first])
        if frozen is not None:
            frozen.write(depth, keep, k_pix[first], poses[first])
        run.latents = run.latents.at[0].set(first_latent[0])
        return run

    def read_scene(self, run: Rollout, chunk: Chunk):
        """Step 1: ``(views, scene [T,h,w,C], hit [T,h,w], seconds)`` of the cache at the chunk's cameras."""
        tgt, pix = np.asarray(chunk.pose_indices), np.asarray(chunk.pixel_pose_indices)
        views = Views(run.k_lat[tgt], run.poses[tgt], run.lat_hw, run.k_pix[pix], run.poses[pix], run.hw)
        (scene, hit), seconds = _timed(run.cache.read, views)
        return views, scene.astype(jnp.float32), hit.astype(bool), seconds

    def gather_context(self, run: Rollout, chunk: Chunk, views: Views, scene, hit) -> ChunkContext:
        """Step 2: references (by the configured rule), preceding latents and the VACE control of the chunk."""
        memory_config = self.config.memory
        generated = chunk.latent_start + 1 if chunk.index else 0  # latents that exist before this chunk
        threshold, voxel = float(memory_config.reference_iou_threshold), float(memory_config.voxel_size)
        if run.frozen is not None:
            ref_idx, ref_iou = run.frozen.select(views, generated, self.num_references, threshold, voxel)
        else:
            ref_idx, ref_iou = run.cache.references(views, run.k_lat[run.history_pose], run.poses[run.history_pose],
                                                    generated, self.num_references, threshold, voxel)
        prec_idx = preceding_indices(chunk, self.num_preceding)
        refs, ref_mask = place_references(run.latents[np.asarray(ref_idx, int)], self.num_references)
        prec, prec_mask = place_preceding(run.latents[np.asarray(prec_idx, int)], self.num_preceding)
        prec_scene, _ = place_preceding(run.scenes[np.asarray(prec_idx, int)], self.num_preceding)
        prec_hit, _ = place_preceding(run.hits[np.asarray(prec_idx, int)], self.num_preceding)
        control = build_control(jnp.concatenate([scene, prec_scene])[None], jnp.concatenate([hit, prec_hit])[None],
                                self.config.model.score_source,
                                self.score_latent(chunk.num_latents + self.num_preceding, run.hw))
        frame_mask = np.concatenate([ref_mask, np.ones(chunk.num_latents, bool), prec_mask])[None]
        return ChunkContext(refs[None], prec[None], control, jnp.asarray(frame_mask), ref_idx, ref_iou, prec_idx)

    def denoise(self, run: Rollout, chunk: Chunk, context: ChunkContext, steps_bar=None):
        """Step 3: the chunk's latents ``[T, h, w, C]`` from noise, frame 0 fixed; and the seconds it took."""
        shape = (1, chunk.num_latents, *run.lat_hw, self.space.channels)
        noise = jax.random.normal(jax.random.fold_in(run.key, chunk.index), shape, jnp.float32)
        if steps_bar is not None:
            steps_bar.start(f"{run.label}: chunk {chunk.index} denoising")
        inputs = (noise, run.latents[chunk.latent_start][None], context.references, context.preceding,
                  context.control, context.frame_mask, run.context, run.null_context)
        with contextlib.nullcontext() if self.mesh is None else jax.set_mesh(self.mesh):
            if self.mesh is not None:  # replicated on the mesh: the model's sharding rules split the work
                inputs = jax.device_put(inputs, NamedSharding(self.mesh, PartitionSpec()))
            out, seconds = _timed(
                denoise_chunk, self.state, *inputs, graphdef=self.graphdef, schedule_args=self.schedule,
                num_references=self.num_references, guidance_scale=float(self.config.sample.guidance_scale),
                on_step=None if steps_bar is None else steps_bar.on_step)
        if steps_bar is not None:
            steps_bar.close()
        if self.mesh is not None:
            out = jax.device_put(out, jax.devices()[0])  # back beside the latent space and the memory
        return out[0].astype(jnp.float32), seconds

    def decode(self, latents):
        """Step 4: the chunk's frames ``[F, H, W, 3]`` in [-1, 1]; and the seconds it took."""
        frames, seconds = _timed(self.space.decode, latents[None])
        return frames[0].astype(jnp.float32), seconds

    def write_back(self, run: Rollout, chunk: Chunk, latents, frames, scene, hit) -> float:
        """Step 5: keeps the chunk's new latents (and the scene reads they were made with), writes latents 1..
        to the cache with their depth; returns the seconds the cache write took."""
        new = chunk.new_latents
        g = slice(chunk.latent_start + new.start, chunk.latent_start + new.stop)
        run.latents = run.latents.at[g].set(latents[new])
        run.scenes = run.scenes.at[g].set(scene[new])
        run.hits = run.hits.at[g].set(hit[new])
        start = time.perf_counter()
        tgt = np.asarray(chunk.pose_indices)
        new_pose = tgt[1:]
        new_frames = frames[::FRAMES_PER_LATENT][1:]
        depth, keep = run.depth(latents[1:], new_frames, new_pose)
        k_depth = np.asarray(geometry.scale_intrinsics(run.k_pix[new_pose], run.hw, np.shape(depth)[1:]), np.float32)
        jax.block_until_ready(run.cache.write(latents[1:], new_frames, depth, keep, k_depth, run.poses[new_pose],
                                              run.k_pix[new_pose]))
        if run.frozen is not None:  # what the chunk's new latents see now (chunk 0: latent 0 too, as the official)
            run.frozen.write(depth, keep, k_depth, run.poses[new_pose])
            run.frozen.record(np.arange(g.start, g.stop), run.k_lat[tgt[new]], run.poses[tgt[new]])
        return time.perf_counter() - start

    def record(self, run: Rollout, chunk: Chunk, context: ChunkContext, frames, hit, timings: dict) -> None:
        """The chunk's outputs to the host: its frames and its metadata."""
        frames = to_uint8(np.asarray(jax.device_get(frames), np.float32))
        run.chunk_videos.append(frames)
        run.video.append(frames if chunk.index == 0 else frames[1:])
        run.chunks.append({
            "chunk": chunk.index,
            "output_frames": [chunk.output_start, chunk.output_end],
            "model_frames": chunk.model_frames,
            "pose_indices": [int(i) for i in chunk.pose_indices],
            "latent_indices": list(range(chunk.latent_start, chunk.latent_start + chunk.num_latents)),
            "references": context.reference_indices,
            "reference_iou": [round(v, 4) for v in context.reference_iou],
            "preceding": context.preceding_indices,
            "hit_fraction": float(np.asarray(jax.device_get(hit)).mean()),
            "cache_points": run.cache.num_points(),
            "cache_bytes": run.cache.bytes_used(),
            "cache_capacity_bytes": run.cache.bytes_allocated(),
            "timings_s": timings,
            "seconds_per_frame": timings["total"] / (chunk.output_end - chunk.output_start),
        })

    def finish(self, run: Rollout, num_frames: int, depth_source, start: int) -> RolloutResult:
        settings = {"cache": run.cache_kind, "num_frames": num_frames, "start": start, "seed": run.seed,
                    "depth_source": depth_source if isinstance(depth_source, str) else "callable",
                    "prompt": run.prompt, "schedule": list(self.schedule), "max_references": self.num_references,
                    "num_preceding": self.num_preceding, "height": run.hw[0], "width": run.hw[1],
                    "reference_rule": self.config.memory.reference_rule}
        latents, scenes, hits = jax.device_get((run.latents, run.scenes, run.hits))
        return RolloutResult(np.concatenate(run.video)[:num_frames], run.chunk_videos, np.asarray(latents),
                             np.asarray(scenes), np.asarray(hits), run.chunks, run.cache.state, settings)


def rollout(config, model, clip: dict, num_frames: int, *, depth_head=None, mesh=None, **kwargs) -> RolloutResult:
    """One ``WorldGenerator(config, model, depth_head=..., mesh=...).generate(clip, num_frames, **kwargs)`` (build
    the generator yourself to run several camera paths: the latent space and text encoder are built once)."""
    return WorldGenerator(config, model, depth_head=depth_head, mesh=mesh).generate(clip, num_frames, **kwargs)
