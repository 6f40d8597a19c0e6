"""Per-compilation XLA options for convolution-heavy programs (the VAE), chosen per backend at first use.

On CPU, XLA runs convolutions through YNNPACK by default, whose convolution kernel is single-threaded here:
one 3×3 conv at 4×64×64×64 takes the same time on 1 core as on 2. Routing convolutions to XLA's Eigen
kernels (multi-threaded) while YNNPACK keeps the dots makes the VAE encode and decode 1.2–1.6× faster on 2
cores (``benchmarks/vae_bench.py``, sides ``ours`` and ``ours_ynn``). This is a per-``jit`` compiler option,
not a process-wide ``XLA_FLAGS`` setting: nothing else in the process changes, and a jaxlib that lacks the
option is detected by a probe compile (then the defaults are used, with a warning) instead of aborting the
process.

``MIRAGE_CPU_CONV=xla`` keeps XLA's default (YNNPACK) convolutions; ``eigen`` (the default) routes them to Eigen.
The variable is read once, at the first compile of a :class:`ConvJit` (set it before). Other backends get no
options.
"""

from __future__ import annotations

import functools
import os
import warnings

import jax
import jax.numpy as jnp

CPU_CONV_ENV = "MIRAGE_CPU_CONV"
CPU_CONV_CHOICES = ("eigen", "xla")
# YNNPACK keeps only the dots: convolutions fall back to Eigen's threaded kernels.
EIGEN_CONV_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def _probe_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.cache
def conv_options(backend: str) -> dict[str, str]:
    """Compiler options for convolution-heavy programs on ``backend`` ("cpu", "gpu", "tpu"...): on CPU (unless
    ``MIRAGE_CPU_CONV=xla``) :data:`EIGEN_CONV_OPTIONS` if this jaxlib accepts them; otherwise ``{}``."""
    choice = os.environ.get(CPU_CONV_ENV, "eigen")
    if choice not in CPU_CONV_CHOICES:
        raise ValueError(f"{CPU_CONV_ENV}={choice!r}: expected one of {CPU_CONV_CHOICES}")
    if backend != "cpu" or choice == "xla":
        return {}
    probe = jax.ShapeDtypeStruct((1, 4, 4, 2), jnp.float32), jax.ShapeDtypeStruct((3, 3, 2, 2), jnp.float32)
    try:
        jax.jit(_probe_conv, compiler_options=EIGEN_CONV_OPTIONS).lower(*probe).compile()
    except jax.errors.JaxRuntimeError as err:
        warnings.warn(f"this jaxlib rejects {EIGEN_CONV_OPTIONS} ({err}); using XLA's default CPU convolutions",
                      RuntimeWarning, stacklevel=2)  # fmt: skip
        return {}
    return dict(EIGEN_CONV_OPTIONS)


class ConvJit:
    """``jax.jit(fun, **jit_kwargs)`` compiled with :func:`conv_options` of the default backend.

    The jitted function is built at the first call (or ``lower``), so importing a module never initialises a
    backend (``XLA_FLAGS`` such as a simulated device count may still be set after import).
    """

    def __init__(self, fun, **jit_kwargs):
        self._fun, self._jit_kwargs = fun, jit_kwargs
        functools.update_wrapper(self, fun)

    @functools.cached_property
    def jitted(self):
        options = conv_options(jax.default_backend())
        return jax.jit(self._fun, compiler_options=options or None, **self._jit_kwargs)

    def __call__(self, *args, **kwargs):
        return self.jitted(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self.jitted.lower(*args, **kwargs)


def conv_jit(**jit_kwargs):
    """Decorator: ``@conv_jit(static_argnums=...)`` → a :class:`ConvJit` of the function."""
    return functools.partial(ConvJit, **jit_kwargs)
