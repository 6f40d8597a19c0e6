"""Shared test setup: CPU only, 8 simulated devices, float32 matmuls at full precision, no silent skips.

Multi-device behaviour is tested on ``DEVICES`` simulated CPU devices: the session asks XLA for them itself
(unless ``XLA_FLAGS`` already sets a count), so a plain ``pytest`` runs the multi-device tests too.

Tests that need the PyTorch parity stack (torch, diffusers, transformers) call ``require_torch_stack()``.
It skips with a reason when the stack is absent, unless ``MIRAGE_REQUIRE_PARITY=1`` (set by ``.ci/run``),
in which case a missing stack is a failure: CI always runs the parity tests. In that mode every other skip
fails too, unless ``ALLOWED_SKIPS`` lists the test with its reason.
"""

from __future__ import annotations

import importlib
import os

DEVICES = 8
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# test id prefix -> why CI may skip it (none today: with the parity stack and 8 devices everything runs)
ALLOWED_SKIPS: dict[str, str] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``MIRAGE_REQUIRE_PARITY=1`` (CI), a skip not listed in ``ALLOWED_SKIPS`` is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    strict = os.environ.get("MIRAGE_REQUIRE_PARITY") == "1"
    if strict and report.skipped and not any(item.nodeid.startswith(prefix) for prefix in ALLOWED_SKIPS):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, and not listed in tests/conftest.py ALLOWED_SKIPS: {reason}"


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
