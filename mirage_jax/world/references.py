"""The official reference rule for a rollout: what each generated latent saw right after its chunk was written."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from mirage_jax import memory
from mirage_jax.config import CHOICES
from mirage_jax.world.caches.base import Views, pad_frames

REFERENCE_RULES = CHOICES["memory.reference_rule"]


class FrozenReferences:
    """The official reference rule for a rollout (``memory.history``): the latent cells of every cache write,
    and what each generated latent saw right after its chunk was written.

    ``write`` takes the cache's write-back inputs (padded to ``write_frames`` as the caches do), ``record`` the
    new latents' cameras, ``select`` ranks the recorded latents for a chunk's target views.
    """

    def __init__(self, total_latents: int, writes: int, write_frames: int, lat_hw: tuple, depth_downsample: str):
        cells = writes * write_frames * lat_hw[0] * lat_hw[1]
        self.history = memory.init_history(total_latents, cells)
        self.write_frames, self.lat_hw, self.depth_downsample = write_frames, tuple(lat_hw), depth_downsample

    def write(self, depth, keep, k_depth, c2w) -> None:
        """Appends the cells of ``depth [T,Hd,Wd]`` (``keep`` or None, ``k_depth [T,3,3]``, ``c2w [T,4,4]``)."""
        n = self.write_frames
        keep = jnp.ones(np.shape(depth), bool) if keep is None else keep
        self.history = memory.append_cells(self.history, pad_frames(depth, n), pad_frames(k_depth, n, k_depth[0]),
                                           pad_frames(c2w, n, np.eye(4, dtype=np.float32)),
                                           pad_frames(jnp.asarray(keep, bool), n, False), self.lat_hw,
                                           depth_downsample=self.depth_downsample)

    def record(self, latent_indices, k_lat, c2w) -> None:
        self.history = memory.record_views(self.history, np.asarray(latent_indices), k_lat, c2w, self.lat_hw)

    def select(self, views: Views, num_history: int, k: int, threshold: float, voxel_size: float):
        """``(indices, ious)`` of the chosen history latents, best first (see ``select_references``)."""
        if k == 0 or num_history == 0:
            return [], []
        refs = memory.select_frozen(self.history, views.k_lat, views.c2w, views.lat_hw, k=k, threshold=threshold,
                                    voxel_size=voxel_size, num_history=num_history)
        idx, iou = np.asarray(refs.indices), np.asarray(refs.scores)
        return [int(i) for i in idx[idx >= 0]], [float(v) for v in iou[idx >= 0]]
