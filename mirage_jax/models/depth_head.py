"""The latent depth head: metric depth predicted from latents, so the memory can be written without decoding.

``LatentDepthHead`` is trained alongside the DiT (``config.train.depth_head``) with ``depth_head_loss`` on the
clean target latents; generation uses it as a write-back depth source (``mirage_jax.world.depth.HeadDepth``).
``make_depth_head(config, seed)`` builds the head a config trains.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirage_jax.memory import downsample_depth


class LatentDepthHead(nnx.Module):
    """Metric depth ``[B,T,h,w]`` from latents ``[B,T,h,w,C]``: per-frame 3×3 conv stack predicting log-depth.

    ``depth = exp(log_depth_offset + out)``; the output layer starts at zero, so an untrained head predicts
    a constant ``exp(log_depth_offset)`` (2 m by default) everywhere.
    """

    def __init__(self, channels: int, hidden: int = 64, num_layers: int = 3, *, rngs: nnx.Rngs,
                 log_depth_offset: float = float(np.log(2.0))):
        dims = [channels] + [hidden] * (num_layers - 1)
        self.convs = nnx.List([nnx.Conv(a, b, (3, 3), padding="SAME", rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
        self.out = nnx.Conv(dims[-1], 1, (3, 3), padding="SAME", kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.log_depth_offset = log_depth_offset

    def log_depth(self, latents: jax.Array) -> jax.Array:
        """Predicted log-depth ``[B,T,h,w]``."""
        b, t, h, w, c = latents.shape
        x = jnp.asarray(latents, jnp.float32).reshape(b * t, h, w, c)
        for conv in self.convs:
            x = jax.nn.gelu(conv(x))
        return (self.out(x)[..., 0] + self.log_depth_offset).reshape(b, t, h, w)

    def __call__(self, latents: jax.Array) -> jax.Array:
        """Metric z-depth ``[B,T,h,w]`` (> 0)."""
        return jnp.exp(self.log_depth(latents))


def depth_head_loss(head: LatentDepthHead, latents: jax.Array, depth: jax.Array) -> jax.Array:
    """Mean L1 error of log-depth over valid cells (finite, > 0).

    ``latents [B,T,h,w,C]``; ``depth [B,T,H,W]`` metric z-depth at latent resolution or an integer multiple of
    it (reduced with the memory's ``"robust"`` downsampling: a cell counts only if all its pixels are valid).
    """
    b, t, h, w, _ = latents.shape
    if depth.ndim != 4 or depth.shape[:2] != (b, t) or depth.shape[2] % h or depth.shape[3] % w:
        raise ValueError(f"depth: expected [B={b}, T={t}, k*{h}, k*{w}], got {tuple(depth.shape)}")
    if depth.shape[2:] != (h, w):
        d, ok = downsample_depth(depth.reshape(b * t, *depth.shape[2:]), None, (h, w), mode="robust")
        depth, valid = d.reshape(b, t, h, w), ok.reshape(b, t, h, w)
    else:
        valid = jnp.isfinite(depth) & (depth > 0)
    target = jnp.log(jnp.where(valid, depth, 1.0))
    err = jnp.abs(head.log_depth(latents) - target)
    return jnp.sum(jnp.where(valid, err, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def make_depth_head(config, seed: int = 0) -> LatentDepthHead:
    """The ``LatentDepthHead`` trained alongside the model when ``config.train.depth_head`` (default sizes)."""
    return LatentDepthHead(int(config.latent.channels), rngs=nnx.Rngs(seed))
