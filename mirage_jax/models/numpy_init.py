"""Host-side (numpy) parameter initialisation for the VAE and the text encoder, or abstract parameters to restore
a checkpoint into."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class Init:
    """Parameter initialiser: scaled normal kernels, zero biases, unit gammas, drawn with numpy (host).

    ``Init(None)`` gives abstract parameters (``jax.ShapeDtypeStruct``) to restore a checkpoint into without
    materialising random weights. Host numpy avoids compiling one XLA RNG program per parameter shape.
    """

    def __init__(self, seed: int | None = 0):
        self._gen = None if seed is None else np.random.default_rng(seed)

    def _param(self, shape, fill) -> nnx.Param:
        if self._gen is None:
            return nnx.Param(jax.ShapeDtypeStruct(tuple(shape), jnp.float32))
        return nnx.Param(jnp.asarray(fill(tuple(shape)), jnp.float32))

    def kernel(self, shape) -> nnx.Param:
        fan_in = int(np.prod(shape[:-1]))
        return self._param(shape, lambda s: self._gen.standard_normal(s, np.float32) / np.sqrt(fan_in))

    def zeros(self, shape) -> nnx.Param:
        return self._param(shape, lambda s: np.zeros(s, np.float32))

    def ones(self, shape) -> nnx.Param:
        return self._param(shape, lambda s: np.ones(s, np.float32))
