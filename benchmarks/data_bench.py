"""Data benchmark: procedural generator frames/s, Grain pipeline training examples/s (tiny config), peak RSS.

    python benchmarks/data_bench.py [--quick]

Prints a table and writes benchmarks/results/data.json. The pipeline number is what the trainer can draw
from the iterator (first batch, i.e. compile + dataset build, excluded and reported separately); compare it
with the training step's examples/s of the same config.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_generator(frames: int, height: int, width: int, repeats: int) -> dict:
    from mirage_jax.data import synthetic

    t = time.perf_counter()
    synthetic.render_clip(0, frames, height, width, "revisit")  # includes the one-off jit compile
    first = time.perf_counter() - t
    times, cpu = [], []
    for seed in range(1, repeats + 1):
        t, c = time.perf_counter(), time.process_time()
        synthetic.render_clip(seed, frames, height, width, "revisit")
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    clip_s, cpu_s = float(np.median(times)), float(np.median(cpu))
    return {"case": f"generator {frames}x{height}x{width}", "first_call_s": first, "clip_s": clip_s,
            "clip_cpu_s": cpu_s, "frames_per_s": frames / clip_s, "frames_per_cpu_s": frames / cpu_s}


def bench_pipeline(num_batches: int, data_dir: str, num_clips: int) -> dict:
    from mirage_jax.config import load_config
    from mirage_jax.data import pipeline
    from mirage_jax.models.latent_space import make_latent_space
    from mirage_jax.models.text import make_text_encoder

    config = load_config("tiny", [f"data.data_dir={data_dir}", f"data.num_clips={num_clips}"])
    t = time.perf_counter()
    source = pipeline.clip_source(config)
    build_s = time.perf_counter() - t
    it = pipeline.make_train_iterator(config, make_latent_space(config), make_text_encoder(config), source=source)
    t = time.perf_counter()
    next(it)
    first = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        next(it)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    it.close()
    bs = config.train.batch_size
    return {"case": f"pipeline tiny (B={bs}, {config.data.height}x{config.data.width})", "dataset_build_s": build_s,
            "first_batch_s": first, "batch_s": elapsed / num_batches, "examples_per_s": bs * num_batches / elapsed,
            "examples_per_cpu_s": bs * num_batches / cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, < 1 minute")
    parser.add_argument("--data-dir", default="", help="TFDS data_dir for the tiny procedural dataset (default: temp)")
    args = parser.parse_args()
    rows = []
    if args.quick:
        rows.append(bench_generator(9, 64, 112, 2))
    else:
        rows.append(bench_generator(49, 64, 112, 3))
        rows.append(bench_generator(33, 256, 448, 3))
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(bench_pipeline(3 if args.quick else 20, args.data_dir or tmp, 8 if args.quick else 32))
    rss = _rss_mib()
    # Wall-clock numbers depend on what else runs on the machine; per-CPU-second numbers much less so.
    print(f"{'case':<38} {'wall throughput':>22} {'per CPU-second':>16} {'first call s':>13}")
    for r in rows:
        if "frames_per_s" in r:
            print(f"{r['case']:<38} {r['frames_per_s']:>13.1f} frames/s {r['frames_per_cpu_s']:>16.1f} "
                  f"{r['first_call_s']:>13.2f}")
        else:
            print(f"{r['case']:<38} {r['examples_per_s']:>11.1f} examples/s {r['examples_per_cpu_s']:>16.1f} "
                  f"{r['first_batch_s']:>13.2f}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"peak RSS: {rss:.0f} MiB")
    pipe = rows[-1]
    print(f"PIPELINE: {pipe['examples_per_s']:.1f} training examples/s on the tiny config "
          f"(compare with the training step's examples/s)")
    out = Path(__file__).resolve().parent / "results" / "data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "rows": rows, "peak_rss_mib": rss}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
