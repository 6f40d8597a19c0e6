"""Data benchmark: procedural generator frames/s, Grain pipeline training examples/s (tiny config), peak RSS.

    python benchmarks/data_bench.py [--quick]

Prints a table and writes benchmarks/results/data.json. Generator: warm seconds per clip (median over new
seeds) for every trajectory at 33x256x448 and with moving objects, and the cold first call (jit compile) of
each new shape. The pipeline number is what the trainer can draw from the iterator (first batch, i.e. compile
+ dataset build, excluded and reported separately); the full run measures the tiny config's training step in a
fresh process right after it, to show the pipeline is not the bottleneck. The load average is printed: the
machine's cores may be shared, and wall numbers then include waiting for one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_generator(frames: int, height: int, width: int, repeats: int, trajectory: str = "revisit",
                    dynamic_objects: int = 0) -> dict:
    """Warm clips/s of ``render_clip`` (median over ``repeats`` new seeds: a new world never recompiles) and,
    when this shape is new to the process, the cold first call (jit compile included) as ``first_call_s``."""
    from mirage_jax.data import synthetic

    compiled = synthetic._render._cache_size()  # noqa: SLF001
    t = time.perf_counter()
    synthetic.render_clip(0, frames, height, width, trajectory, dynamic_objects)
    first = time.perf_counter() - t
    recompiled = synthetic._render._cache_size() > compiled  # noqa: SLF001
    times, cpu = [], []
    for seed in range(1, repeats + 1):
        t, c = time.perf_counter(), time.process_time()
        synthetic.render_clip(seed, frames, height, width, trajectory, dynamic_objects)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    if synthetic._render._cache_size() != compiled + recompiled:  # noqa: SLF001
        raise RuntimeError("the renderer recompiled for a new seed")
    clip_s, cpu_s = float(np.median(times)), float(np.median(cpu))
    moving = f" +{dynamic_objects} moving" if dynamic_objects else ""
    return {"case": f"generator {frames}x{height}x{width} {trajectory}{moving}",
            "first_call_s": first if recompiled else None, "clip_s": clip_s, "clip_cpu_s": cpu_s,
            "frames_per_s": frames / clip_s, "frames_per_cpu_s": frames / cpu_s}


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


def bench_training_step(data_dir: str, window: int) -> dict:
    """The tiny config's training examples/s (steady state), measured by ``train_bench.measure`` in a fresh
    process right after the pipeline, on the same data_dir; also its share of time waiting for data."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from train_bench import measure; "
            "print('RESULT', json.dumps(measure('tiny', [], int(sys.argv[3]), sys.argv[2])))")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), data_dir, str(window)],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    return {"case": f"training step tiny (B={result['batch_size']})", "examples_per_s": result["examples_per_second"],
            "data_wait_fraction": result["data_wait_fraction"], "steps_measured": window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, < 1 minute")
    parser.add_argument("--data-dir", default="", help="TFDS data_dir for the tiny procedural dataset (default: temp)")
    args = parser.parse_args()
    from mirage_jax.data import synthetic

    load_before = os.getloadavg()
    rows = []
    if args.quick:
        rows.append(bench_generator(9, 64, 112, 2))
        rows.append(bench_generator(33, 256, 448, 2))
    else:
        rows.append(bench_generator(49, 64, 112, 3))
        rows += [bench_generator(33, 256, 448, 3, trajectory) for trajectory in synthetic.TRAJECTORIES]
        rows.append(bench_generator(33, 256, 448, 3, "revisit", dynamic_objects=2))
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(bench_pipeline(3 if args.quick else 20, args.data_dir or tmp, 8 if args.quick else 32))
        train = None if args.quick else bench_training_step(args.data_dir or tmp, 5)
    rss = _rss_mib()
    # Wall-clock numbers depend on what else runs on the machine; per-CPU-second numbers much less so.
    print(f"{'case':<44} {'wall throughput':>22} {'per CPU-second':>16} {'warm s/clip':>12} {'cold first s':>13}")
    for r in rows:
        if "frames_per_s" in r:
            cold = "-" if r["first_call_s"] is None else f"{r['first_call_s']:.2f}"
            print(f"{r['case']:<44} {r['frames_per_s']:>13.1f} frames/s {r['frames_per_cpu_s']:>16.1f} "
                  f"{r['clip_s']:>12.3f} {cold:>13}")
        else:
            print(f"{r['case']:<44} {r['examples_per_s']:>11.1f} examples/s {r['examples_per_cpu_s']:>16.1f} "
                  f"{r['batch_s']:>12.3f} {r['first_batch_s']:>13.2f}")
    load = {"before": load_before[0], "after_1min": os.getloadavg()[0], "cores": os.cpu_count()}
    print(f"load average: {load['before']:.1f} before, {load['after_1min']:.1f} at the end (1-min) on "
          f"{load['cores']} cores (other jobs share them: wall numbers include waiting for a core)")
    print(f"peak RSS: {rss:.0f} MiB")
    pipe = rows[-1]
    if train is None:
        print(f"PIPELINE: {pipe['examples_per_s']:.1f} training examples/s on the tiny config (run without --quick "
              f"to measure the training step beside it)")
    else:
        print(f"PIPELINE: {pipe['examples_per_s']:.1f} examples/s vs the tiny training step's "
              f"{train['examples_per_s']:.2f} examples/s ({pipe['examples_per_s'] / train['examples_per_s']:.0f}x; "
              f"the step waits for data {100 * train['data_wait_fraction']:.0f}% of its time)")
    out = Path(__file__).resolve().parent / "results" / "data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "rows": rows, "training_step": train, "peak_rss_mib": rss,
                               "load_average": load}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
