"""Depth for the memory write-back: where the metric depth of newly generated frames comes from.

A depth source is any callable ``source(latents [T,h,w,C], frames [T,H,W,3] in [-1,1], pose_indices [T])
-> (depth [T,Hd,Wd], keep [T,Hd,Wd] bool or None)``; the rollout scales the intrinsics to ``(Hd, Wd)``. Kinds:

- ``GeometryDepth``: the depth maps of the input geometry (ground truth for procedural worlds), by pose index.
- ``HeadDepth``: a :class:`LatentDepthHead` that predicts metric depth at latent resolution from the denoised
  latents, so the memory is written without decoding and without an external depth model.
- any user callable with the signature above (e.g. a monocular depth network on the decoded frames).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirage_jax.memory import downsample_depth

DEPTH_SOURCES = ("geometry", "head")


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


class GeometryDepth:
    """Depth (and static masks) of the input geometry by absolute pose index: ``depths [N,H,W]``."""

    def __init__(self, depths: np.ndarray, masks: np.ndarray | None = None):
        self.depths = np.asarray(depths, np.float32)
        self.masks = None if masks is None else np.asarray(masks, bool)

    def __call__(self, latents, frames, pose_indices):
        idx = np.asarray(pose_indices)
        return self.depths[idx], None if self.masks is None else self.masks[idx]


class HeadDepth:
    """Depth at latent resolution from a :class:`LatentDepthHead` (one compiled call per shape)."""

    def __init__(self, head: LatentDepthHead):
        graphdef, state = nnx.split(head)
        self._state = state
        self._fn = jax.jit(lambda s, z: nnx.merge(graphdef, s)(z[None])[0])

    def __call__(self, latents, frames, pose_indices):
        return np.asarray(self._fn(self._state, jnp.asarray(latents, jnp.float32))), None


def make_depth_source(kind, clip: dict | None = None, head: LatentDepthHead | None = None):
    """``"geometry"`` (needs ``clip`` depths for every pose), ``"head"`` (needs ``head``), or a callable."""
    if callable(kind):
        return kind
    if kind == "geometry":
        if clip is None:
            raise ValueError("depth_source='geometry' needs the geometry's depths (a clip with 'depths')")
        return GeometryDepth(clip["depths"], clip.get("masks"))
    if kind == "head":
        if head is None:
            raise ValueError("depth_source='head' needs a trained LatentDepthHead: train with "
                             "--config.train.depth_head=true, or use --depth-source geometry")
        return HeadDepth(head)
    raise ValueError(f"depth_source: expected one of {DEPTH_SOURCES} or a callable, got {kind!r}")
