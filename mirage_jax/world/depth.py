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

from mirage_jax.config import CHOICES
from mirage_jax.models.depth_head import LatentDepthHead

DEPTH_SOURCES = CHOICES["sample.depth_source"]


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
        return self._fn(self._state, jnp.asarray(latents, jnp.float32)), None


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
