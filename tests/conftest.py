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
