"""A content-addressed on-disk cache of latents, so VAE encodes are paid once per distinct input video.

``CachedLatentSpace(latent_space, cache_dir)`` behaves like ``latent_space`` (same attributes, ``decode``
passes through); ``encode(video)`` looks up ``<cache_dir>/<sha1 of the video's shape, dtype and bytes>.npy``
and computes + stores it on a miss (written to a temporary file, then renamed: safe with Grain's threads and
several processes). A cache folder filled by a previous run (or by a precompute pass over the dataset) is
simply used. Text embeddings need no second cache: text encoders cache by prompt.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


class CachedLatentSpace:
    """Wraps a latent space with an on-disk encode cache (see module docstring)."""

    def __init__(self, latent_space, cache_dir: str | os.PathLike):
        self.inner = latent_space
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.spatial_factor = latent_space.spatial_factor
        self.temporal_factor = latent_space.temporal_factor
        self.channels = latent_space.channels
        self.hits = self.misses = 0

    def key(self, video: np.ndarray) -> str:
        digest = hashlib.sha1(f"{video.shape}{video.dtype}{type(self.inner).__name__}".encode())
        digest.update(np.ascontiguousarray(video).tobytes())
        return digest.hexdigest()

    def encode(self, video) -> np.ndarray:
        """``latent_space.encode(video)`` as float32 numpy, from the cache when present."""
        video = np.asarray(video)
        path = self.cache_dir / f"{self.key(video)}.npy"
        if path.is_file():
            self.hits += 1
            return np.load(path, allow_pickle=False)
        self.misses += 1
        latents = np.asarray(self.inner.encode(video), np.float32)
        with tempfile.NamedTemporaryFile(dir=self.cache_dir, suffix=".tmp", delete=False) as f:
            np.save(f, latents, allow_pickle=False)
        os.replace(f.name, path)
        return latents

    def decode(self, latents):
        return self.inner.decode(latents)
