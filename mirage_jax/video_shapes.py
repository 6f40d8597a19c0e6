"""The frame ↔ latent time grid and the shape checks of videos and latents (one source for both latent spaces).

Latent frame 0 is pixel frame 0 alone; latent frame ``k >= 1`` covers pixel frames ``4k-3 .. 4k`` and takes the
pose and depth of pixel frame ``4k``. So a video of ``T = 4N+1`` frames has ``N+1`` latent frames.
"""

from __future__ import annotations

FRAMES_PER_LATENT = 4  # pixel frames per latent frame (the Wan2.2 VAE's temporal compression)


def num_latents(num_frames: int) -> int:
    """Latent frames of a ``4N+1``-frame video: ``N + 1``."""
    return 1 + (num_frames - 1) // FRAMES_PER_LATENT


def num_frames(num_latent_frames: int) -> int:
    """Pixel frames decoded from ``t`` latent frames: ``1 + 4(t - 1)``."""
    return 1 + FRAMES_PER_LATENT * (num_latent_frames - 1)


def longest_video(available: int) -> int:
    """The longest video length ``4N+1`` that fits in ``available`` frames (at least 1)."""
    return max(1, (available - 1) // FRAMES_PER_LATENT * FRAMES_PER_LATENT + 1)


def check_video_length(frames: int, name: str = "frames") -> int:
    """``frames`` must be a positive int ``4N+1`` (1, 5, 9, ..., 33, 65, ...); ``ValueError`` naming ``name``."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"{name}: expected a positive int of the form 4N+1, got {frames!r}")
    if (frames - 1) % FRAMES_PER_LATENT:
        lo = frames - (frames - 1) % FRAMES_PER_LATENT
        raise ValueError(f"{name}={frames} is not of the form 4N+1; use {lo} or {lo + FRAMES_PER_LATENT}")
    return frames


def check_video(shape: tuple[int, ...], spatial_factor: int) -> None:
    """Raises ``ValueError`` unless a video ``shape`` is ``[B, T, H, W, 3]``, T = 4N+1, H and W divisible by s."""
    shape = tuple(shape)
    if len(shape) != 5 or shape[-1] != 3:
        raise ValueError(f"video: expected [B, T, H, W, 3], got shape {shape}")
    _, frames, height, width, _ = shape
    if frames < 1 or (frames - 1) % FRAMES_PER_LATENT:
        raise ValueError(
            f"video: T={frames} frames; expected T = {FRAMES_PER_LATENT}N+1 (1, 5, 9, ...), never truncated silently"
        )
    if height % spatial_factor or width % spatial_factor or height == 0 or width == 0:
        raise ValueError(f"video: H×W = {height}×{width} must be positive multiples of {spatial_factor}")


def check_latents(shape: tuple[int, ...], channels: int) -> None:
    """Raises ``ValueError`` unless a latents ``shape`` is ``[B, t, h, w, channels]`` with t ≥ 1."""
    shape = tuple(shape)
    if len(shape) != 5 or shape[-1] != channels or shape[1] < 1:
        raise ValueError(f"latents: expected [B, t>=1, h, w, {channels}], got shape {shape}")
