"""The RGB point-cache baseline (Spatia / Voyager style), on the same z-buffer as the latent memory.

Stores every valid pixel of every written frame as a coloured world point (a ``LatentMemory`` with C = 3 at
pixel resolution, de-duplication voxel 1 mm, so it grows with the rollout as those systems' caches do). A read
renders every pixel frame of the chunk at pixel resolution with ``memory.read`` (the same deterministic
z-buffer), then encodes the rendered video with the latent space: that render + encode is the per-chunk cost
the latent memory avoids. A latent cell counts as hit when at least half of its pixels (in the latent's
key frame) were rendered.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax import memory
from mirage_jax.video_shapes import FRAMES_PER_LATENT
from mirage_jax.world.caches.base import PointCache, Views

RGB_VOXEL = 1e-3  # metres: only exact re-observations of a surface point are merged


class RGBCache(PointCache):
    """Coloured points at pixel resolution; reads render and encode (``space``: the rollout's latent space).

    Views are rendered ``view_batch`` at a time (the z-buffer materialises ``[views, points]`` cells, which at
    704x1280 and millions of points would not fit in memory for a whole chunk at once).
    """

    def __init__(self, capacity: int, space, write_frames: int, view_batch: int = 4):
        super().__init__(memory.init(capacity, 3, jnp.float32, voxel_size=RGB_VOXEL), write_frames)
        self.space = space
        self.view_batch = view_batch

    def write(self, latents, frames, depth, keep, k_depth, c2w, k_pix):
        """Stores ``frames [T,H,W,3]`` in [-1,1] with ``depth [T,Hd,Wd]`` (nearest-upsampled to pixels) and
        ``k_pix [T,3,3]`` (intrinsics at pixel resolution)."""
        frames = np.asarray(jax.device_get(frames), np.float32)  # rendered at pixel resolution on the host
        depth = np.asarray(jax.device_get(depth), np.float32)
        fy, fx = frames.shape[1] // depth.shape[1], frames.shape[2] // depth.shape[2]
        if (fy, fx) != (1, 1):
            depth = np.repeat(np.repeat(depth, fy, axis=1), fx, axis=2)
            keep = None if keep is None else np.repeat(np.repeat(keep, fy, axis=1), fx, axis=2)
        return self._write(frames, depth, keep, k_pix, c2w, "robust")

    def render(self, views: Views):
        """Renders ``[F, H, W, 3]`` (0 where empty) and the pixel hit mask ``[F, H, W]``."""
        f, b = len(views.k_pix), self.view_batch
        pad = -f % b
        k = np.concatenate([views.k_pix, np.repeat(views.k_pix[-1:], pad, 0)])
        c2w = np.concatenate([views.c2w_pix, np.repeat(views.c2w_pix[-1:], pad, 0)])
        parts = [memory.read(self.state, jnp.asarray(k[i: i + b]), jnp.asarray(c2w[i: i + b]), views.pix_hw)
                 for i in range(0, f + pad, b)]
        return jnp.concatenate([p[0] for p in parts])[:f], jnp.concatenate([p[1] for p in parts])[:f]

    def read(self, views: Views):
        rgb, hit = self.render(views)
        scene = self.space.encode(rgb[None])[0]
        s = self.space.spatial_factor
        h, w = views.lat_hw
        key_hit = hit[::FRAMES_PER_LATENT].reshape(-1, h, s, w, s)
        return scene, key_hit.mean(axis=(2, 4)) >= 0.5
