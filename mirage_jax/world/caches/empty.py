"""No scene cache (the ``"none"`` variant): the model generates without memory."""

from __future__ import annotations

import jax.numpy as jnp

from mirage_jax.world.caches.base import Views


class NoCache:
    """No scene memory: reads are empty, nothing is stored, no references."""

    state = None

    def __init__(self, channels: int):
        self.channels = channels

    def write(self, latents, frames, depth, keep, k_depth, c2w, k_pix):
        return None

    def read(self, views: Views):
        t = len(views.k_lat)
        return jnp.zeros((t, *views.lat_hw, self.channels), jnp.float32), jnp.zeros((t, *views.lat_hw), bool)

    def references(self, *args, **kwargs):
        return [], []

    def num_points(self) -> int:
        return 0

    def bytes_used(self) -> int:
        return 0

    def bytes_allocated(self) -> int:
        return 0
