"""Shared test setup: CPU only, float32 matmuls at full precision, and the torch-parity switch.

Tests that need the PyTorch parity stack (torch, diffusers, transformers) call ``require_torch_stack()``.
It skips with a reason when the stack is absent, unless ``MIRAGE_REQUIRE_PARITY=1`` (set by ``.ci/run``),
in which case a missing stack is a failure: CI always runs the parity tests.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def require_torch_stack(*modules: str):
    """Imports ``torch`` and ``modules`` (e.g. "diffusers"); skips or fails (CI) when any is missing."""
    loaded = []
    for name in ("torch", *modules):
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as err:
            reason = f"parity stack missing: {name} ({err}); install with pip install -e '.[test]'"
            if os.environ.get("MIRAGE_REQUIRE_PARITY") == "1":
                pytest.fail(f"MIRAGE_REQUIRE_PARITY=1 but {reason}")
            pytest.skip(reason)
    return loaded if len(loaded) > 1 else loaded[0]


@pytest.fixture
def torch_stack():
    """The torch module (skip or fail as ``require_torch_stack``)."""
    return require_torch_stack()


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent JAX compilation cache for the module (and the environment for its subprocesses, returned):
    tests that build the same programs several times (training runs, CLI calls) compile them once."""
    from jax._src import compilation_cache

    cache = str(tmp_path_factory.mktemp("jax_cache"))
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {k: getattr(jax.config, k) for k in names}
    for name, value in zip(names, (cache, 0.0, 0)):
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    yield dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    for k, v in saved.items():
        jax.config.update(k, v)
    compilation_cache.reset_cache()
