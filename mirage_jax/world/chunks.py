"""The chunks of a rollout (the official iteration plan): which frames and poses each chunk generates.

A video of ``num_frames = 4N+1`` frames is generated in chunks of ``chunk_frames = 4M+1`` pixel frames
(33 = 9 latents by default) that overlap by one latent: chunk 0 makes frames ``[0, chunk_frames)``; every
later chunk starts from the previous chunk's last latent (its frame 0) and adds up to ``chunk_frames - 1`` new
frames. Latent ``i`` of chunk ``k`` takes the pose of pixel frame ``pose_start + 4i``; the global latent
``j`` of the whole video is pixel frame ``4j``. Example, 65 frames: chunk 0 = frames 0..32 (poses 0, 4, ..,
32), chunk 1 = frames 33..64 (poses 32, 36, .., 64; latent 0 is the re-used latent of frame 32).
"""

from __future__ import annotations

import dataclasses

from mirage_jax.video_shapes import FRAMES_PER_LATENT, check_video_length, num_latents


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One chunk of the plan.

    ``output_start/output_end``: the new output frames ``[start, end)`` it contributes; ``model_frames``: pixel
    frames it generates (4k+1, including the overlap frame for k ≥ 1); ``latent_start``: global latent index of
    its latent 0; ``pose_indices``: absolute pose index per latent ``[num_latents]``; ``pixel_pose_indices``:
    absolute pose index per generated pixel frame ``[model_frames]``.
    """

    index: int
    output_start: int
    output_end: int
    model_frames: int
    latent_start: int
    pose_indices: tuple[int, ...]
    pixel_pose_indices: tuple[int, ...]

    @property
    def num_latents(self) -> int:
        return num_latents(self.model_frames)

    @property
    def new_latents(self) -> slice:
        """The latents of this chunk that are new (all for chunk 0, all but the overlap latent 0 after)."""
        return slice(0 if self.index == 0 else 1, self.num_latents)


def iteration_plan(num_frames: int, chunk_frames: int = 33, start: int = 0) -> list[Chunk]:
    """The chunks generating ``num_frames`` (4N+1) frames from pose ``start`` in ``chunk_frames`` (4M+1) chunks."""
    check_video_length(num_frames, "frames")
    check_video_length(chunk_frames, "sample.chunk_frames")
    if chunk_frames < 1 + FRAMES_PER_LATENT:
        raise ValueError(f"sample.chunk_frames={chunk_frames}: expected >= 5 (at least 2 latent frames)")
    if start < 0:
        raise ValueError(f"start: expected >= 0, got {start}")
    chunks = []
    end = min(chunk_frames, num_frames)
    chunks.append(_chunk(0, 0, end, end, start))
    while end < num_frames:
        new = min(chunk_frames - 1, num_frames - end)
        chunks.append(_chunk(len(chunks), end, end + new, new + 1, start))
        end += new
    return chunks


def _chunk(index: int, out_start: int, out_end: int, model_frames: int, start: int) -> Chunk:
    pose_start = start + out_start - (1 if index else 0)
    latents = num_latents(model_frames)
    return Chunk(
        index=index,
        output_start=out_start,
        output_end=out_end,
        model_frames=model_frames,
        latent_start=(out_start - 1) // FRAMES_PER_LATENT if index else 0,
        pose_indices=tuple(pose_start + FRAMES_PER_LATENT * i for i in range(latents)),
        pixel_pose_indices=tuple(range(pose_start, pose_start + model_frames)),
    )
