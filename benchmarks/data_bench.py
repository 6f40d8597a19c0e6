"""Data benchmark: procedural generator frames/s, Grain pipeline training examples/s (tiny config), the latent
encode (``data encode``) clips/s and the latent pipeline's examples/s against the training step's, peak RSS.

    python benchmarks/data_bench.py [--quick]

Latent input (``data encode``): encode throughput on ``tiny_wan`` (Wan2.2 VAE and umT5 kinds, random weights) at
its 64x96 size, then examples/s of the latent pipeline (2 worker threads) against the ``tiny_wan`` training
step measured here; and at the real sizes (704x1280, 48 channels, 512x4096 text) the latent pipeline over a
dataset of stand-in latents (random values of the real shapes and geometry of real procedural clips: the
pipeline's cost depends on the shapes only) against the real step's examples/s per 8-GPU host *estimated* from
its FLOPs at 40% MFU of an H100 (989 dense bf16 TFLOP/s): an estimate, not a measurement. Target: the latent
pipeline feeds >= 10x the real step's examples/s per host.

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
    bs = config.train.batch_size
    return {"case": f"pipeline tiny (B={bs}, {config.data.height}x{config.data.width})", "dataset_build_s": build_s,
            **_draw_batches(it, num_batches, bs)}


def _draw_batches(it, num_batches: int, batch_size: int) -> dict:
    """The first batch's seconds (compilation), then the steady rate over ``num_batches`` more; closes ``it``."""
    t = time.perf_counter()
    next(it)
    first = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    for _ in range(num_batches):
        next(it)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    it.close()
    return {"first_batch_s": first, "batch_s": elapsed / num_batches,
            "examples_per_s": batch_size * num_batches / elapsed, "examples_per_cpu_s": batch_size * num_batches / cpu}


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


H100_TFLOPS, MFU, GPUS_PER_HOST = 989.0, 0.4, 8
REAL_HW, REAL_FRAMES = (704, 1280), 41  # 41 frames: a 33-frame target window plus two preceding latents


class StandInEncoder:
    """Random latents and text embeddings of ``config``'s shapes (``data.encode.WindowEncoder``'s interface)."""

    def __init__(self, config):
        from mirage_jax.data.training_example import ExampleSizes

        self.sizes, self.rng = ExampleSizes.from_config(config), np.random.default_rng(0)
        self.space = self
        self.text = self
        self.spatial_factor = int(config.latent.spatial_factor)

    def encode(self, what):
        if isinstance(what, list):  # captions -> [n, L, D]
            return self.rng.normal(size=(len(what), self.sizes.text_length, self.sizes.text_dim)).astype(np.float32)
        b, t, h, w, _ = np.shape(what)  # a video -> its latents
        s = self.spatial_factor
        return np.zeros((b, 1 + (t - 1) // 4, h // s, w // s, self.sizes.channels), np.float32)

    def windows(self, items):
        from mirage_jax.data.windows import encoded_window

        z = self.sizes
        shape = (z.height, z.width, z.channels)
        return [encoded_window(w, *(self.rng.normal(size=(n, *shape)).astype(np.float32)
                                    for n in (z.targets, z.preceding, z.references))) for w, _ in items]


def _pose_clips(root: Path, num_clips: int, hw: tuple[int, int], frames: int) -> Path:
    from mirage_jax.data import tfds_io
    from mirage_jax.data.pose_clips import pose_clips_dataset_builder as pcb

    config = pcb.make_config("procedural", height=hw[0], width=hw[1], num_frames=frames, num_clips=num_clips,
                             num_test_clips=1)
    return tfds_io.build(config, root)


def bench_encode(root: Path, num_clips: int) -> tuple[dict, Path]:
    """``tiny_wan`` encode clips/s: one encode compiles, a second of the same clips into a new folder is timed."""
    from mirage_jax.config import load_config
    from mirage_jax.data.encode import encode_dataset

    config = load_config("configs/tiny_wan.py", ["data.windows_per_clip=2"])
    source = _pose_clips(root / "tiny_wan_clips", num_clips, (config.data.height, config.data.width), 49)
    t = time.perf_counter()
    encode_dataset(config, source, root / "latents_cold", progress=False)
    cold = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    folder = encode_dataset(config, source, root / "latents", progress=False)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    clips = num_clips + 1  # the test clip too
    return {"case": f"encode tiny_wan {config.data.height}x{config.data.width} ({clips} clips x 2 windows)",
            "clips_per_s": clips / elapsed, "clips_per_cpu_s": clips / cpu, "first_encode_s": cold}, folder


def bench_latent_pipeline(config, name: str, num_batches: int) -> dict:
    """Examples/s the trainer can draw from the latent pipeline (2 threads), no encoder built."""
    from mirage_jax.data import pipeline

    it = pipeline.make_train_iterator(config, None, None, num_threads=2)
    bs = config.train.batch_size
    return {"case": f"latent pipeline {name} (B={bs}, 2 threads)", **_draw_batches(it, num_batches, bs)}


def real_step_estimate(config) -> dict:
    """The real-size training step's examples/s per 8-GPU host at 40% MFU of an H100, from its FLOPs."""
    from flax import nnx

    from mirage_jax.models import build_model
    from mirage_jax.train.metrics import dense_parameter_count, tokens_per_example, train_flops_per_example

    params = dense_parameter_count(nnx.state(nnx.eval_shape(lambda: build_model(config)), nnx.Param))
    tokens = tokens_per_example(config, config.train.max_references, config.train.max_preceding)
    flops = train_flops_per_example(config, params, tokens)
    per_gpu = H100_TFLOPS * 1e12 * MFU / flops
    return {"case": "training step real size (estimate)", "dense_params": params, "tokens_per_example": tokens,
            "flops_per_example": flops, "examples_per_s_per_gpu": per_gpu,
            "examples_per_s_per_host": per_gpu * GPUS_PER_HOST}


def bench_latent_input(root: Path, quick: bool) -> dict:
    """The latent-input rows: encode, the tiny_wan pipeline vs its step, the real-size pipeline vs the estimate."""
    from mirage_jax.config import load_config
    from mirage_jax.data.encode import encode_dataset

    encode_row, tiny_latents = bench_encode(root, 3 if quick else 8)
    tiny = load_config("configs/tiny_wan.py", [f"data.source={tiny_latents}"])
    tiny_pipe = bench_latent_pipeline(tiny, "tiny_wan", 5 if quick else 40)
    tiny_step = None
    if not quick:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from train_bench import measure

        overrides = [f"--config.data.source={tiny_latents}", "--config.train.stage_steps=()"]  # measure: 'full'
        result = measure("configs/tiny_wan.py", overrides, 5, str(root))
        tiny_step = {"case": f"training step tiny_wan (B={result['batch_size']})",
                     "examples_per_s": result["examples_per_second"]}
    real = load_config("wan22_ti2v_5b", [f"data.height={REAL_HW[0]}", f"data.width={REAL_HW[1]}",
                                "data.windows_per_clip=4"])
    source = _pose_clips(root / "real_clips", 2 if quick else 6, REAL_HW, REAL_FRAMES)
    real_latents = encode_dataset(real, source, root / "real_latents", progress=False, encoder=StandInEncoder(real))
    real.data.source = str(real_latents)
    real.train.batch_size = 2
    real_pipe = bench_latent_pipeline(real, "real size 704x1280", 4 if quick else 24)
    return {"encode": encode_row, "tiny_wan_pipeline": tiny_pipe, "tiny_wan_step": tiny_step,
            "real_pipeline": real_pipe, "real_step_estimate": real_step_estimate(real)}


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
        latent = bench_latent_input(Path(tmp), args.quick)
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
    _print_latent_input(latent)
    out = Path(__file__).resolve().parent / "results" / "data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": args.quick, "rows": rows, "training_step": train, "latent_input": latent,
                               "peak_rss_mib": rss, "load_average": load}, indent=2))
    print(f"wrote {out}")


def _print_latent_input(latent: dict) -> None:
    enc, tiny, real, est = latent["encode"], latent["tiny_wan_pipeline"], latent["real_pipeline"], \
        latent["real_step_estimate"]
    print()
    print(f"{'latent input':<52} {'wall':>20} {'per CPU-second':>16}")
    print(f"{enc['case']:<52} {enc['clips_per_s']:>14.2f} clip/s {enc['clips_per_cpu_s']:>16.2f}")
    for row in (tiny, real):
        print(f"{row['case']:<52} {row['examples_per_s']:>10.1f} examples/s {row['examples_per_cpu_s']:>16.1f}")
    if latent["tiny_wan_step"] is not None:
        step = latent["tiny_wan_step"]
        print(f"{step['case']:<52} {step['examples_per_s']:>10.2f} examples/s "
              f"(the latent pipeline: {tiny['examples_per_s'] / step['examples_per_s']:.0f}x)")
    ratio = real["examples_per_s"] / est["examples_per_s_per_host"]
    print(f"{est['case']:<52} {est['examples_per_s_per_host']:>10.2f} examples/s per {GPUS_PER_HOST}-GPU host "
          f"({est['flops_per_example'] / 1e12:.0f} TFLOP per example at {MFU:.0%} MFU of an H100: an estimate)")
    print(f"FEED: the latent pipeline makes {real['examples_per_s']:.1f} real-size examples/s with 2 threads, "
          f"{ratio:.1f}x what the real step consumes per host (target >= 10x)")


if __name__ == "__main__":
    main()
