"""Training throughput of the tiny and small configs on this machine.

For each config, one training run in a fresh subprocess (so peak memory is per config): ``2·K`` steps logged
every ``K``; the first window holds the compilation, the second is the steady state reported here. Columns:
steps/s, examples/s, the share of wall time spent waiting for the input pipeline (``data_wait_fraction``),
achieved model TFLOP/s (FLOP formula in ``mirage_jax.train.metrics``), MFU where the device peak is known
(not on CPU), and peak memory (host peak RSS; plus device peak bytes where the backend reports them).

    python benchmarks/train_bench.py            # tiny (its own sizes) and small (64x112, batch 1: CPU-sized)
    python benchmarks/train_bench.py --quick    # < 1 min: both at 32x56, batch 1-2, few steps

Writes ``benchmarks/results/train.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"

CASES = {
    # mode: [(config, overrides, K steps per window)]; small runs at 64x112 with batch 1 here (at its own
    # 128x224 one CPU step takes minutes: 6720 tokens per example)
    "full": [("tiny", [], 10),
             ("small", ["--config.data.height=64", "--config.data.width=112", "--config.train.batch_size=1",
                        "--config.data.num_clips=4"], 3)],
    "quick": [("tiny", ["--config.data.height=32", "--config.data.width=56", "--config.train.batch_size=2",
                        "--config.data.num_clips=4"], 3),
              ("small", ["--config.data.height=32", "--config.data.width=56", "--config.train.batch_size=1",
                         "--config.data.num_clips=4"], 3)],
}


def measure(name: str, overrides: list[str], window: int, data_dir: str) -> dict:
    """One run in this process: returns the steady-state window's numbers and peak memory."""
    import jax

    from mirage_jax.config import load_config
    from mirage_jax.train.loop import train
    from mirage_jax.train.metrics import read_metrics

    config = load_config(name, overrides + [
        f"--config.train.num_steps={2 * window}", f"--config.train.log_every={window}", "--config.train.eval_every=0",
        f"--config.train.checkpoint_every={10 * window}", f"--config.data.data_dir={data_dir}", "--config.mesh.fsdp=1",
        "--config.train.stages=('full',)", "--config.train.warmup_steps=0"])
    with tempfile.TemporaryDirectory() as workdir:
        train(config, workdir)
        row = [r for r in read_metrics(workdir) if "loss" in r][-1]
    stats = jax.devices()[0].memory_stats() or {}
    from flax import nnx

    from mirage_jax.models import build_model
    from mirage_jax.train.metrics import dense_parameter_count, tokens_per_example, train_flops_per_example

    params = dense_parameter_count(nnx.state(nnx.eval_shape(lambda: build_model(config)), nnx.Param))
    tokens = tokens_per_example(config, config.train.max_references, config.train.max_preceding)
    flops = train_flops_per_example(config, params, tokens) * config.train.batch_size
    return {"config": name, "overrides": overrides, "batch_size": config.train.batch_size,
            "hw": [config.data.height, config.data.width], "tokens_per_example": tokens,
            "steps_per_second": row["steps_per_second"], "examples_per_second": row["examples_per_second"],
            "data_wait_fraction": row["data_wait_fraction"], "loss": row["loss"],
            "achieved_tflops": flops * row["steps_per_second"] / 1e12, "mfu": row.get("mfu"),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "device_peak_gib": stats.get("peak_bytes_in_use", 0) / 2**30 or None,
            "device": jax.devices()[0].device_kind, "steps_measured": window}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small shapes, few steps (< 1 min)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: JSON spec of one case, run in-process
    args = parser.parse_args()
    if args.one:
        spec = json.loads(args.one)
        print("RESULT " + json.dumps(measure(**spec)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as data_dir:
        for name, overrides, window in CASES["quick" if args.quick else "full"]:
            spec = json.dumps({"name": name, "overrides": overrides, "window": window, "data_dir": data_dir})
            out = subprocess.run([sys.executable, __file__, "--one", spec], capture_output=True, text=True)
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode or not lines:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(lines[-1][len("RESULT "):]))
    header = f"{'config':<7}{'batch':>6}{'HxW':>9}{'tokens':>8}{'steps/s':>9}{'ex/s':>8}{'data wait':>10}" \
             f"{'TFLOP/s':>9}{'MFU':>6}{'peak RSS GiB':>13}"
    print(header)
    for r in rows:
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        print(f"{r['config']:<7}{r['batch_size']:>6}{'x'.join(map(str, r['hw'])):>9}{r['tokens_per_example']:>8}"
              f"{r['steps_per_second']:>9.3f}{r['examples_per_second']:>8.2f}{100 * r['data_wait_fraction']:>9.1f}%"
              f"{r['achieved_tflops']:>9.4f}{mfu:>6}{r['peak_rss_gib']:>13.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"quick": args.quick, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
