"""An exploration: the camera path a person builds move by move, generated chunk by chunk in a worker thread.

The ``Explorer`` is built once per server (the ``WorldGenerator``, the start ``Scene``, the limits) and holds at
most one ``ExploreSession`` at a time: a second page gets ``SessionConflict`` while the first is alive (it polls
at least every ``idle_s`` seconds). A session keeps:

- the **path**: the start camera, then one chunk's new frames (``chunk_frames - 1``) per move
  (``camera.move_poses``), at most ``max_chunks`` moves;
- one rollout per **variant**: ``"memory"`` (the latent spatial memory) always, ``"none"`` (no memory, the same
  path, seed and model) while the comparison is on. Each is a ``WorldGenerator`` rollout started over the longest
  path the session allows; before running a chunk (``WorldGenerator.run_chunk``) the worker sets that chunk's
  poses, so the rollout follows the path as it grows. A variant turned on late catches up chunk by chunk;
- the frames of each variant as JPEG, and the memory's points and colours for the bird's-eye map
  (``memory_map``), redrawn on request with the path so far.

One worker thread per session does all JAX work (the memory variant first); HTTP threads read its results
under the session's lock. The write-back depth is the scene's (ground truth in a procedural world) or the
model's depth head.
"""

from __future__ import annotations

import dataclasses
import io
import secrets
import threading
import time

import numpy as np
from PIL import Image

from mirage_jax.world.chunks import iteration_plan
from mirage_jax.world.explore.camera import ACTIONS, move_poses
from mirage_jax.world.explore.scenes import Scene
from mirage_jax.world.generator import Rollout, WorldGenerator, check_inputs
from mirage_jax.world.memory_map import PointColors, memory_map

VARIANTS = {"memory": "latent", "none": "none"}  # variant -> scene cache
MAX_MOVES_PER_REQUEST = 8
MAX_CHUNKS = 256  # the longest path a session may be started with (--max-chunks)
JPEG_QUALITY = 90


class SessionConflict(Exception):
    """A request for a session that is not the active one, or a second session while one is active (HTTP 409)."""


class NotReady(Exception):
    """A frame that is not generated yet (HTTP 404)."""


class StepTracker:
    """The sampler's progress (``start``, ``on_step``, ``close``: the interface of ``progress.StepProgress``).

    One per ``Explorer``: the compiled denoiser keeps ``on_step`` as a static argument, so a new tracker per
    session would compile the model again."""

    def __init__(self, steps: int):
        self.steps, self.step = steps, 0

    def start(self, desc: str) -> None:
        self.step = 0

    def on_step(self, step) -> None:
        self.step = min(self.step + 1, self.steps)

    def close(self) -> None:
        self.step = self.steps


def start_clip(scene: Scene, num_frames: int) -> dict:
    """The clip a rollout starts from: the scene's frame, depth and mask, and ``num_frames`` cameras (the
    scene's intrinsics; every pose the start pose until the path sets it)."""
    return {"frames": scene.frame[None], "depths": scene.depth[None],
            "masks": None if scene.mask is None else scene.mask[None],
            "intrinsics": np.repeat(scene.intrinsics[None], num_frames, 0).astype(np.float32),
            "poses_c2w": np.repeat(scene.pose[None], num_frames, 0).astype(np.float32), "caption": scene.caption}


def encode_image(image: np.ndarray, kind: str) -> bytes:
    """``image`` uint8 ``[H, W, 3]`` as ``"JPEG"`` or ``"PNG"`` bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, kind, **({"quality": JPEG_QUALITY} if kind == "JPEG" else {}))
    return buffer.getvalue()


def check_scene(config, scene: Scene, max_chunks: int) -> int:
    """Checks that ``config``'s model can explore ``scene`` for ``max_chunks`` moves (resolution, the start
    frame's depth, cameras; ``generator.check_inputs``) before anything is built; returns the longest path's
    frame count."""
    if isinstance(max_chunks, bool) or not isinstance(max_chunks, int) or not 1 <= max_chunks <= MAX_CHUNKS:
        raise ValueError(f"--max-chunks: expected an int in [1, {MAX_CHUNKS}], got {max_chunks!r}")
    num_frames = 1 + (int(config.sample.chunk_frames) - 1) * max_chunks
    clip = start_clip(scene, num_frames)
    check_inputs(config, clip, num_frames, cache="latent", depth_source=scene.depth_source(clip["poses_c2w"]))
    return num_frames


class Explorer:
    """What every session shares (built once per server); ``open`` starts a session, ``get`` finds it.

    ``depth_source``: ``"geometry"`` (the scene's depth) or ``"head"`` (the generator's depth head); ``seed``:
    the noise seed of every rollout (default ``config.sample.seed``); ``idle_s``: a session not heard from for
    this long may be taken over by a new page."""

    def __init__(self, generator: WorldGenerator, scene: Scene, *, depth_source: str = "geometry",
                 seed: int | None = None, max_chunks: int = 32, idle_s: float = 30.0, map_size: int = 256):
        config = generator.config
        self.num_frames = check_scene(config, scene, max_chunks)
        if depth_source not in ("geometry", "head") or (depth_source == "head" and generator.depth_head is None):
            raise ValueError(f"depth_source: expected 'geometry', or 'head' with a generator that has a depth head, "
                             f"got {depth_source!r}")
        self.generator, self.scene, self.depth_source, self.seed = generator, scene, depth_source, seed
        self.max_chunks, self.idle_s, self.map_size = max_chunks, idle_s, map_size
        self.chunk_frames = int(config.sample.chunk_frames)
        self.plan = iteration_plan(self.num_frames, self.chunk_frames)
        self.steps = StepTracker(int(config.sample.steps))
        self.compute = threading.Lock()  # one session computes at a time (an old one may finish its chunk)
        self.lock = threading.Lock()
        self.session: ExploreSession | None = None

    def open(self) -> ExploreSession:
        """A new session; ``SessionConflict`` while another is active (working, and seen in the last ``idle_s``
        seconds)."""
        with self.lock:
            old = self.session
            if old is not None and old.active and time.monotonic() - old.last_seen < self.idle_s:
                raise SessionConflict(f"another page is exploring (one session at a time): close it, or wait "
                                      f"{self.idle_s:.0f} s after it stops, then reload")
            if old is not None:
                old.close()
            self.session = ExploreSession(self, secrets.token_hex(8))
            return self.session

    def get(self, token) -> ExploreSession:
        """The active session with id ``token`` (marked as seen now)."""
        if not isinstance(token, str) or not token:
            raise ValueError("session: expected the id that POST /api/session returned")
        with self.lock:
            session = self.session
            if session is None or session.token != token or session.closed:
                raise SessionConflict(f"session {token[:32]!r} is not active (closed, timed out, or another page "
                                      f"took over); reload the page")
            session.last_seen = time.monotonic()
            return session

    def close(self) -> None:
        """Closes the active session (its worker stops after its current step)."""
        with self.lock:
            if self.session is not None:
                self.session.close()


@dataclasses.dataclass
class Variant:
    """One rollout along the session's path: its scene cache, whether it is wanted, its rollout (started by the
    worker) and its frames so far (JPEG, by frame index)."""

    cache: str
    enabled: bool
    frames: list[bytes]
    run: Rollout | None = None
    chunks: int = 0


class ExploreSession:
    """One person's exploration (see the module docstring)."""

    def __init__(self, explorer: Explorer, token: str):
        self.explorer, self.token = explorer, token
        self.last_seen = time.monotonic()
        self.closed = False
        self.error: str | None = None  # why generation stopped; the session still answers, for the page to say
        self.stage: dict | None = None  # what the worker is doing: {"variant", "chunk", "stage"}
        self.cond = threading.Condition()
        scene = explorer.scene
        self.poses = np.repeat(scene.pose[None], explorer.num_frames, 0).astype(np.float32)  # [N, 4, 4]
        self.path_chunks = 0
        first = encode_image(scene.frame, "JPEG")
        self.variants = {name: Variant(cache, name == "memory", [first]) for name, cache in VARIANTS.items()}
        self.point_colors = PointColors(explorer.generator.space)  # the memory's points, each decoded once
        self.points = np.zeros((0, 3), np.float32)
        self.colors = np.zeros((0, 3), np.uint8)
        self.map_version = 0
        self._map: tuple[int, bytes] | None = None
        self.worker = threading.Thread(target=self._work, name=f"explore-{token}", daemon=True)
        self.worker.start()

    @property
    def active(self) -> bool:
        return not self.closed and self.error is None

    # ---- requests (HTTP threads) ----

    def move(self, action, count=1) -> dict:
        """Adds ``count`` chunks of ``action`` to the path; the worker generates them in order."""
        if not isinstance(action, str) or action not in ACTIONS:
            raise ValueError(f"action: expected one of {sorted(ACTIONS)}, got {str(action)[:40]!r}")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_MOVES_PER_REQUEST:
            raise ValueError(f"count: expected an int in [1, {MAX_MOVES_PER_REQUEST}], got {str(count)[:40]}")
        explorer, new = self.explorer, self.explorer.chunk_frames - 1
        with self.cond:
            if self.error is not None:
                raise SessionConflict(f"generation stopped ({self.error}); reload the page to start again")
            left = explorer.max_chunks - self.path_chunks
            if count > left:
                raise ValueError(f"count: the path holds at most {explorer.max_chunks} moves and {left} are left; "
                                 f"reload the page to start again")
            for _ in range(count):
                end = 1 + new * self.path_chunks
                self.poses[end:end + new] = move_poses(self.poses[end - 1], action, new, explorer.scene.bounds)
                self.path_chunks += 1
            self.map_version += 1
            self.cond.notify_all()
            return {"path_chunks": self.path_chunks}

    def set_compare(self, on) -> dict:
        """Turns the no-memory rollout on (it catches up with the path) or off (it pauses where it is)."""
        if not isinstance(on, bool):
            raise ValueError(f"on: expected true or false, got {str(on)[:40]}")
        with self.cond:
            self.variants["none"].enabled = on
            self.cond.notify_all()
        return {"compare": on}

    def state(self) -> dict:
        """What the page polls: path and frames so far, the worker's progress, the map's version, any error."""
        steps = self.explorer.steps
        with self.cond:
            progress = None if self.stage is None else {**self.stage, "step": steps.step, "steps": steps.steps}
            return {
                "path_chunks": self.path_chunks, "max_chunks": self.explorer.max_chunks,
                "frames_per_chunk": self.explorer.chunk_frames - 1,
                "fps": int(self.explorer.generator.config.sample.fps),
                "variants": {name: {"frames": len(v.frames), "chunks": v.chunks, "enabled": v.enabled}
                             for name, v in self.variants.items()},
                "compare": self.variants["none"].enabled, "busy": self.stage is not None, "progress": progress,
                "map_version": self.map_version, "error": self.error,
            }

    def frame(self, variant, index: int) -> bytes:
        """Frame ``index`` of ``variant`` as JPEG; ``NotReady`` when it is not generated yet."""
        if variant not in self.variants:
            raise ValueError(f"variant: expected one of {sorted(self.variants)}, got {str(variant)[:40]!r}")
        with self.cond:
            frames = self.variants[variant].frames
            if not 0 <= index < len(frames):
                raise NotReady(f"frame {index} of {variant!r} is not generated yet ({len(frames)} so far)")
            return frames[index]

    def map_png(self) -> bytes:
        """The memory's bird's-eye map with the path so far (planned moves included) as PNG."""
        scene = self.explorer.scene
        with self.cond:
            if self._map is not None and self._map[0] == self.map_version:
                return self._map[1]
            version, points, colors = self.map_version, self.points, self.colors
            poses = self.poses[:1 + (self.explorer.chunk_frames - 1) * self.path_chunks].copy()
        k = np.repeat(scene.intrinsics[None], len(poses), 0)
        png = encode_image(memory_map(points, colors, poses, k, scene.hw, size=self.explorer.map_size), "PNG")
        with self.cond:
            self._map = (version, png)
        return png

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # ---- the worker ----

    def _next_job(self) -> tuple[str, int] | None:
        """Waits for the next (variant, chunk) to generate, the memory first; None once the session is closed."""
        with self.cond:
            while not self.closed:
                for name, variant in self.variants.items():
                    if variant.enabled and variant.chunks < self.path_chunks:
                        return name, variant.chunks
                self.cond.wait()
            return None

    def _work(self) -> None:
        job = ("memory", None)  # first the memory's rollout alone: the map shows what the start frame stored
        while job is not None:
            try:
                with self.explorer.compute:
                    if not self.closed:
                        self._generate(*job)
            except Exception as err:  # the page shows it; the server and the next session carry on
                with self.cond:
                    self.error, self.stage = f"{type(err).__name__}: {err}", None
                return
            job = self._next_job()

    def _set_stage(self, name: str, chunk: int, stage: str) -> None:
        with self.cond:
            self.stage = {"variant": name, "chunk": chunk, "stage": stage}

    def _generate(self, name: str, index: int | None) -> None:
        """Chunk ``index`` of variant ``name`` (None: only start its rollout), its frames and the memory's points."""
        explorer, variant = self.explorer, self.variants[name]
        frames, start = [], 0
        if variant.run is None:
            self._set_stage(name, 0, "start")
            scene = explorer.scene
            depth = scene.depth_source(self.poses) if explorer.depth_source == "geometry" else explorer.depth_source
            variant.run = explorer.generator.start(start_clip(scene, explorer.num_frames), explorer.plan,
                                                   variant.cache, depth, None, explorer.seed, 0)
        if index is not None:
            run, chunk = variant.run, explorer.plan[index]
            pixels = np.asarray(chunk.pixel_pose_indices)
            run.poses[pixels] = self.poses[pixels]  # the path as it is now: this chunk's cameras are set
            self._set_stage(name, index, "generate")
            explorer.generator.run_chunk(run, chunk, explorer.steps)
            frames, start = [encode_image(frame, "JPEG") for frame in run.video[-1]], chunk.output_start
        points = colors = None
        if variant.cache == "latent":
            points, colors = self.point_colors(variant.run.cache.state)
        with self.cond:
            variant.frames[start:start + len(frames)] = frames
            variant.chunks += index is not None
            self.stage = None
            if points is not None:
                self.points, self.colors = points, colors
                self.map_version += 1
