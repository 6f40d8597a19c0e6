"""``benchmarks/accelerator_suite.py --smoke``: every part of the accelerator suite runs on CPU at tiny sizes.

CI runs it so that the suite an accelerator run depends on cannot rot. No timing is asserted: only that every
part ran, reported finite numbers and printed its table.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUITE = REPO / "benchmarks" / "accelerator_suite.py"
pytestmark = pytest.mark.xdist_group("accelerator_suite")  # one worker runs the smoke suite once
TITLES = ("a. training step", "b. one chunk of generation", "c. attention backends", "d. latent memory")


def run_suite(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(SUITE), "--smoke", "--out", str(out), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)


def assert_finite(values: dict, *keys: str) -> None:
    for key in keys:
        value = values[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, (key, value)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("suite") / "suite.json"
    done = run_suite(out, "--peak-tflops", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


@pytest.mark.slow
def test_smoke_records_the_environment_and_prints_every_table(smoke):
    report, stdout = smoke
    meta = report["meta"]
    assert meta["smoke"] and meta["platform"] == "cpu"
    for key in ("device_kind", "jax", "jaxlib", "date_utc"):
        assert meta[key]
    for title in TITLES:
        assert title in stdout
    assert "wrote" in stdout
    assert all(part["status"] == "ok" for part in report["parts"].values()), report["parts"]


@pytest.mark.slow
def test_smoke_training_step_reports_rates_and_mfu(smoke):
    train = smoke[0]["parts"]["train"]
    assert train["layers"] in (4, 2) and train["step_s_30_layers_extrapolated"]
    assert_finite(train, "compile_s", "warmup_s", "step_s", "tokens_per_s", "model_flops_per_step",
                  "achieved_tflops", "mfu", "step_s_30_layers")
    assert train["tokens_per_step"] == 15 * 2 * 4  # (4 + 9 + 2) latents of 4x8 cells in 2x2 patches


@pytest.mark.slow
def test_smoke_generation_chunk_reports_every_step_and_the_30_layer_estimate(smoke):
    gen = smoke[0]["parts"]["generation"]
    assert gen["extrapolated"] and gen["paper_seconds_per_frame"] == 0.25
    assert_finite(gen["steps_s"], "cache_read", "denoise", "decode", "write", "total")
    assert_finite(gen, "seconds_per_frame", "seconds_per_frame_30_layers", "denoise_30_layers_s", "depth_step_s",
                  "median_s", "warmup_s")


@pytest.mark.slow
def test_smoke_attention_compares_the_available_backends(smoke):
    attention = smoke[0]["parts"]["attention"]
    backends = attention["backends"]
    for impl in ("cudnn", "splash"):
        assert backends[impl] == {"status": "unavailable", "reason": "unavailable on cpu"}
    for impl in ("xla", "chunked"):
        b = backends[impl]
        assert b["status"] == "ok"
        assert_finite(b["forward"], "median_s", "warmup_s")
        assert_finite(b["forward_backward"], "median_s", "warmup_s")
        for name in ("out", "dq", "dk", "dv"):  # bf16 against the float32 reference
            assert_finite(b["agreement"][name], "rel_l2", "max_abs")
            assert b["agreement"][name]["rel_l2"] < 0.05, (impl, name, b["agreement"][name])


@pytest.mark.slow
def test_smoke_memory_read_and_write(smoke):
    mem = smoke[0]["parts"]["memory"]
    assert mem["points"] == 10_000
    assert_finite(mem, "read_ms_per_view", "write_ms_per_frame", "read_state_gbs", "state_bytes")


def test_parts_that_do_not_fit_the_budget_are_skipped_and_said_so(tmp_path):
    out = tmp_path / "suite.json"
    done = run_suite(out, "--budget", "0", "--parts", "memory,attention")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    parts = json.loads(out.read_text())["parts"]
    assert set(parts) == {"memory", "attention"}
    for part in parts.values():
        assert part["status"] == "skipped" and "budget" in part["reason"]
    assert "skipped" in done.stdout


@pytest.fixture(scope="module")
def suite():
    sys.path.insert(0, str(SUITE.parent))
    import accelerator_suite

    return accelerator_suite


def test_layer_search_moves_to_fewer_layers_only_on_out_of_memory(suite):
    def attempt(layers):
        if layers == 30:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 99 GiB")
        return {"seconds": 1.0}

    def fits(layers):
        return (layers != 24, "parameters alone need too much")

    result = suite.try_layers((30, 24, 20, 16), attempt, fits, deadline=float("inf"))
    assert result["status"] == "ok" and result["layers"] == 20 and result["seconds"] == 1.0
    assert [t.split(":")[0] for t in result["layers_tried"]] == ["30", "24"]
    assert "out of memory" in result["layers_tried"][0]

    def broken(layers):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        suite.try_layers((30, 24), broken, lambda n: (True, ""), deadline=float("inf"))


def test_model_attention_falls_back_to_xla_when_the_fused_kernel_failed_in_part_c(suite, monkeypatch):
    monkeypatch.setattr(suite.jax, "default_backend", lambda: "gpu")
    args = suite.parse_args(["--attention", "auto"])
    suite.settle_model_attention(args, {"backends": {"cudnn": {"status": "ok"}}})
    assert suite.model_attention(args.attention) == "cudnn" and not args.attention_note
    suite.settle_model_attention(args, {"backends": {"cudnn": {"status": "error", "reason": "unsupported"}}})
    assert suite.model_attention(args.attention) == "xla" and "cudnn error" in args.attention_note
