"""Accelerator suite: one command, one device, a time budget (default 8 min): the numbers a GPU or TPU owes us.

Parts (each from the library's own code paths, random weights, the first call -- compilation -- timed apart,
then repetitions with ``block_until_ready`` while the part's share of the budget lasts):

  a. train       one DiT+VACE+LoRA training step (``train.step.make_train_step``, the VACE stage, AdamW, bf16
                 compute, fp32 master weights) at the real width (3072, 24 heads, FFN 14336) on a 704x1280
                 example with 4 references and 2 preceding latents (15 frames, 13200 tokens), batch 1: step
                 time, tokens/s, MFU from the model FLOPs (``train.metrics``). As many layers as fit.
  b. generation  one 33-frame chunk at 704x1280 through ``WorldGenerator.generate`` (latent memory read,
                 reference choice, the compiled 20-step UniPC loop of the real-size DiT, Wan2.2 VAE decode in
                 bf16, depth from the latent depth head, memory write-back): seconds per frame next to the
                 paper's 0.25 s. Fewer layers than 30 are extrapolated to 30 (linear in layers, marked *).
  c. attention   the backends (xla, cudnn, splash, chunked) at the DiT's self-attention size with padded frames
                 masked: forward and forward+backward time, agreement with float32 XLA attention.
  d. memory      latent memory read (9 views) and in-place write (8 frames, depth 704x1280) at 1M points.

    python benchmarks/accelerator_suite.py                  # the accelerator run, <= 8 min
    python benchmarks/accelerator_suite.py --smoke          # every code path at tiny sizes on CPU (CI)

Prints a table per part and writes ``benchmarks/results/accelerator_suite.json``. A part that does not fit
the budget is skipped and says so; backends the platform lacks are listed as unavailable.
"""

from __future__ import annotations

# ruff: noqa: E402 -- the budget's clock starts before the imports, and --smoke pins JAX to the CPU before JAX loads
import os
import sys
import time

START = time.perf_counter()  # the budget counts from here: imports, compilation and device start included
if __name__ == "__main__" and "--smoke" in sys.argv[1:]:
    os.environ["JAX_PLATFORMS"] = "cpu"  # the smoke run is the CPU check of every code path, on any machine
elif __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")  # GPU: room for the most layers
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the shared benchmark helpers

import argparse
import dataclasses
import gc
import json
import math
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from memory_bench import HW, READ_VIEWS, WRITE_FRAMES, InPlace, cameras, filled_memory
from timing import Budget, device_memory_bytes, environment, is_out_of_memory, measure, print_table

from mirage_jax import geometry, memory
from mirage_jax.config import load_config
from mirage_jax.config_checks import validate_config
from mirage_jax.data.synthetic import render_clip
from mirage_jax.data.training_example import MODEL_INPUTS, ExampleSizes
from mirage_jax.models import DiTSettings, WanDiT, build_model
from mirage_jax.models.attention import attend, check_available
from mirage_jax.models.depth_head import make_depth_head
from mirage_jax.models.lora import trainable_filter
from mirage_jax.sharding import make_mesh
from mirage_jax.train import metrics as train_metrics
from mirage_jax.train.loss import LossSettings
from mirage_jax.train.optimizer import make_optimizer
from mirage_jax.train.step import batch_sharding, make_train_step, new_train_state
from mirage_jax.world.depth import HeadDepth
from mirage_jax.world.generator import WorldGenerator

RESULTS = Path(__file__).resolve().parent / "results" / "accelerator_suite.json"
PAPER_SECONDS_PER_FRAME = 0.25  # Mirage on one H100, end to end
REAL_LAYERS = 30
NEW_FRAMES_PER_CHUNK = 32  # a chunk after the first adds 32 frames (33 with the shared one)
PARTS = ("train", "generation", "attention", "memory")
PART_WEIGHTS = {"memory": 0.1, "attention": 0.2, "generation": 0.35, "train": 0.35}  # shares of what is left
RUN_ORDER = ("memory", "attention", "generation", "train")
BACKENDS = ("xla", "cudnn", "splash", "chunked")


@dataclasses.dataclass(frozen=True)
class Scale:
    """The sizes of one run of the suite."""

    name: str
    dim: int
    heads: int
    ffn: int
    text_dim: int
    text_length: int
    height: int  # pixels
    width: int
    vae_dims: tuple[int, int]  # encoder / decoder base widths
    vae_dtype: str  # the VAE's compute dtype (bf16 as the official inference; XLA:CPU compiles float32 faster)
    score_source: str  # the VACE score channels: "constant" (real: a VAE encode per shape) or "hit_mask"
    sample_steps: int
    layers: tuple[int, ...]  # layer counts to try, largest first
    memory_points: int
    depth_factor: int  # depth resolution / latent resolution of the memory write
    max_reps: int
    min_part_seconds: float  # a part starts only with this much of the budget left

    @property
    def tokens_per_frame(self) -> int:
        return (self.height // 32) * (self.width // 32)


REAL = Scale("real", dim=3072, heads=24, ffn=14336, text_dim=4096, text_length=512, height=704, width=1280,
             vae_dims=(160, 256), vae_dtype="bfloat16", score_source="constant", sample_steps=20,
             layers=(30, 24, 20, 16, 12, 8, 4, 2, 1), memory_points=1_000_000, depth_factor=16, max_reps=5,
             min_part_seconds=30.0)
SMOKE = Scale("smoke", dim=64, heads=2, ffn=128, text_dim=32, text_length=8, height=64, width=128,
              vae_dims=(16, 32), vae_dtype="float32", score_source="hit_mask", sample_steps=2, layers=(4, 2),
              memory_points=10_000, depth_factor=4, max_reps=2, min_part_seconds=0.0)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every part at tiny sizes on CPU (CI)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for everything (default 8 min)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    parser.add_argument("--layers", default=None, help="layer counts to try, largest first (e.g. 30,16,8)")
    parser.add_argument("--attention", default="auto", choices=("auto", *BACKENDS),
                        help="the model's attention (auto: cudnn on GPU, splash on TPU, xla elsewhere)")
    parser.add_argument("--stage", default="vace", choices=("vace", "lora", "full"), help="what the step trains")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="per-device peak TFLOP/s for MFU (default: by device kind; unknown on CPU)")
    parser.add_argument("--out", default=str(RESULTS), help="the JSON file to write")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    args.attention_note = ""  # why the model's attention differs from the platform's default (part c)
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; expected a subset of {PARTS}")
    return args


def layer_candidates(args, scale: Scale) -> tuple[int, ...]:
    if args.layers is None:
        return scale.layers
    return tuple(sorted({int(n) for n in args.layers.split(",")}, reverse=True))


def model_attention(requested: str) -> str:
    """The attention backend the model runs with: ``requested``, or the platform's fused kernel for ``auto``."""
    if requested != "auto":
        return requested
    return {"gpu": "cudnn", "tpu": "splash"}.get(jax.default_backend(), "xla")


# ---- configs --------------------------------------------------------------------------------------------------


def suite_config(scale: Scale, layers: int, attention: str, peak_tflops: float = 0.0):
    """The real-size config (``configs/wan22_ti2v_5b.py``) at ``layers`` layers (VACE after every second one, as
    the real 15 of 30), no text encoder (a zero context of the real length), one device, batch 1."""
    config = load_config("wan22_ti2v_5b")
    m = config.model
    m.dim, m.num_heads, m.ffn_dim, m.num_layers = scale.dim, scale.heads, scale.ffn, layers
    m.vace_layers = tuple(range(0, layers, 2))
    m.attention, m.score_source = attention, scale.score_source
    config.text.kind, config.text.dim, config.text.max_length = "none", scale.text_dim, scale.text_length
    config.data.height, config.data.width = scale.height, scale.width
    config.latent.vae.base_dim, config.latent.vae.decoder_base_dim = scale.vae_dims
    config.latent.vae.compute_dtype = scale.vae_dtype
    config.sample.steps = scale.sample_steps
    config.train.batch_size, config.train.peak_tflops = 1, float(peak_tflops)
    config.mesh.fsdp = 1
    validate_config(config)
    return config


def parameter_bytes(config, stage: str | None) -> int:
    """Device bytes of the model's fp32 parameters, plus the AdamW moments of ``stage``'s trainable part."""
    abstract = nnx.eval_shape(lambda: WanDiT(DiTSettings.from_config(config), rngs=nnx.Rngs(0)))
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(abstract)))
    if stage is None:
        return int(total)
    moments = 2 * sum(x.size * 4 for x in jax.tree.leaves(nnx.state(abstract, trainable_filter(stage))))
    return int(total + moments)


def fits_memory(config, stage: str | None, fraction: float) -> tuple[bool, str]:
    """Whether parameters (and optimizer moments) alone stay under ``fraction`` of the device memory."""
    limit = device_memory_bytes()
    need = parameter_bytes(config, stage)
    if limit is None or need <= fraction * limit:
        return True, ""
    return False, f"parameters{' + AdamW' if stage else ''} alone need {need / 2**30:.1f} GiB of {limit / 2**30:.1f}"


def try_layers(candidates, attempt, fits, deadline: float) -> dict:
    """Runs ``attempt(layers)`` for the largest layer count that ``fits`` and does not run out of memory."""
    tried = []
    for layers in candidates:
        gc.collect()  # the arrays of an attempt that ran out of memory (held by its traceback until now)
        if time.perf_counter() > deadline:
            tried.append(f"{layers}: not tried, the part's time is up")
            break
        ok, why = fits(layers)
        if not ok:
            tried.append(f"{layers}: {why}")
            continue
        try:
            return {"status": "ok", "layers": layers, "layers_tried": tried, **attempt(layers)}
        except Exception as err:  # noqa: BLE001 - only out-of-memory moves on to fewer layers
            if not is_out_of_memory(err):
                raise
            tried.append(f"{layers}: out of memory ({str(err).splitlines()[0][:120]})")
    return {"status": "skipped", "reason": "no layer count fitted", "layers_tried": tried}


# ---- a. training step -----------------------------------------------------------------------------------------


def random_batch(config, mesh, rules) -> dict:
    """A batch of one training example at the config's sizes (every reference and preceding slot real)."""
    rng = np.random.default_rng(0)
    batch = {}
    for key, (shape, dtype) in ExampleSizes.from_config(config).shapes(1).items():
        if key not in MODEL_INPUTS:
            continue
        if dtype.kind == "b":
            value = np.ones(shape, bool) if key.endswith("_mask") else rng.random(shape) < 0.7
        else:
            value = rng.standard_normal(shape).astype(dtype)
        batch[key] = jax.device_put(value, batch_sharding(mesh, len(shape), rules))
    return batch


def train_step_at(config, stage: str, deadline: float, end: float, max_reps: int) -> dict:
    """Compiles and times the training step of ``config`` on one device."""
    mesh = make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[:1])
    rules = DiTSettings.from_config(config).rules
    model = build_model(config)  # one device: the same program as generation's, placed by new_train_state
    dense = train_metrics.dense_parameter_count(nnx.state(model, nnx.Param))
    tx = make_optimizer(config.train, int(config.train.num_steps))
    graphdef, state, shardings = new_train_state(model, trainable_filter(stage), tx, mesh, rules, jax.random.key(0))
    del model
    batch = random_batch(config, mesh, rules)
    sizes = ExampleSizes.from_config(config)
    step = make_train_step(graphdef, tx, LossSettings.from_config(config), grad_accum=1, state_sharding=shardings,
                           batch_shardings={k: v.sharding for k, v in batch.items()}, mesh=mesh)
    context = jnp.zeros((sizes.text_length, sizes.text_dim), jnp.float32)
    score = jnp.zeros((sizes.targets + sizes.preceding, sizes.height, sizes.width, sizes.channels), jnp.float32)
    score = score if config.model.score_source == "constant" else None
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, context, score).compile()
    compile_s = time.perf_counter() - t0
    held = {"state": state}
    del state

    def one_step():
        held["state"], metrics = compiled(held["state"], batch, context, score)
        return held["state"], metrics

    timing = measure(one_step, deadline=deadline, end=end, max_reps=max_reps)
    tokens = train_metrics.tokens_per_example(config, sizes.references, sizes.preceding)
    return {"stage": stage, "attention": config.model.attention, "compile_s": compile_s, **timing,
            "tokens_per_step": tokens, "dense_params": dense,
            "model_flops_per_step": train_metrics.train_flops_per_example(config, dense, tokens),
            "compiled_bytes": compiled_bytes(compiled)}


def compiled_bytes(compiled) -> int | None:
    """Arguments + outputs - aliased + temporaries of a compiled program (None where not reported)."""
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    return int(mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
               + mem.temp_size_in_bytes)


def train_part(args, scale: Scale, deadline: float, end: float) -> dict:
    attention = model_attention(args.attention)

    def config(layers):
        return suite_config(scale, layers, attention, args.peak_tflops)

    result = try_layers(layer_candidates(args, scale),
                        lambda n: train_step_at(config(n), args.stage, deadline, end, scale.max_reps),
                        lambda n: fits_memory(config(n), args.stage, 0.85), deadline)
    if result["status"] == "ok":
        result.update(train_rates(result, config(result["layers"])))
    return result


def train_rates(result: dict, config) -> dict:
    """Tokens/s, achieved TFLOP/s, MFU and the 30-layer step time (extrapolated when fewer layers ran)."""
    step_s = result["median_s"]
    if step_s is None:
        return {}
    peak = train_metrics.peak_flops_per_device(config)
    achieved = result["model_flops_per_step"] / step_s
    return {"step_s": step_s, "tokens_per_s": result["tokens_per_step"] / step_s, "achieved_tflops": achieved / 1e12,
            "peak_tflops": None if peak is None else peak / 1e12, "mfu": None if peak is None else achieved / peak,
            "step_s_30_layers": step_s * REAL_LAYERS / result["layers"],
            "step_s_30_layers_extrapolated": result["layers"] != REAL_LAYERS}


# ---- b. one chunk of generation -------------------------------------------------------------------------------


def generation_at(config, deadline: float, end: float, max_reps: int) -> dict:
    """Times ``WorldGenerator.generate`` of one 33-frame chunk (each call a fresh rollout) and the depth step."""
    head = make_depth_head(config)
    generator = WorldGenerator(config, build_model(config), depth_head=head)
    clip = render_clip(0, 33, config.data.height, config.data.width, "loop")
    chunks = []

    def one_chunk():
        result = generator.generate(clip, 33, cache="latent", depth_source="head", prompt="", seed=0,
                                    progress=False)
        chunks.append(result.chunks[0])
        return result.latents

    timing = measure(one_chunk, deadline=deadline, end=end, max_reps=max_reps)
    factor = int(config.latent.spatial_factor)
    latents = jnp.zeros((8, config.data.height // factor, config.data.width // factor, int(config.latent.channels)))
    depth_source = HeadDepth(head)
    depth = measure(lambda: depth_source(latents, None, None)[0], deadline=deadline, end=end, max_reps=max_reps)
    steps = [c["timings_s"] for c in chunks[1:]]  # the first call compiled
    return {"attention": config.model.attention, "sample_steps": int(config.sample.steps),
            "vae_dtype": str(config.latent.vae.compute_dtype),
            "hw": [int(config.data.height), int(config.data.width)], **timing,
            "steps_s": {k: statistics.median([s[k] for s in steps]) for k in steps[0]} if steps else None,
            "depth_step_s": depth["median_s"], "depth_warmup_s": depth["warmup_s"]}


def generation_part(args, scale: Scale, deadline: float, end: float) -> dict:
    attention = model_attention(args.attention)

    def config(layers):
        return suite_config(scale, layers, attention, args.peak_tflops)

    result = try_layers(layer_candidates(args, scale),
                        lambda n: generation_at(config(n), deadline, end, scale.max_reps),
                        lambda n: fits_memory(config(n), None, 0.7), deadline)
    if result["status"] == "ok" and result["steps_s"]:
        result.update(generation_rates(result))
    return result


def generation_rates(result: dict) -> dict:
    """Seconds per new frame, measured and with the denoising extrapolated to 30 layers."""
    steps, layers = result["steps_s"], result["layers"]
    denoise_30 = steps["denoise"] * REAL_LAYERS / layers
    total_30 = steps["total"] - steps["denoise"] + denoise_30
    return {"seconds_per_frame": steps["total"] / NEW_FRAMES_PER_CHUNK, "denoise_30_layers_s": denoise_30,
            "chunk_30_layers_s": total_30, "seconds_per_frame_30_layers": total_30 / NEW_FRAMES_PER_CHUNK,
            "extrapolated": layers != REAL_LAYERS, "paper_seconds_per_frame": PAPER_SECONDS_PER_FRAME}


# ---- c. attention backends ------------------------------------------------------------------------------------


def attention_inputs(scale: Scale):
    """q, k, v ``[1, S, H, d]`` in bf16 over the 15 frames of a training example ``[4 ref | 9 tgt | 2 prec]``,
    one empty reference slot and one empty preceding slot masked; and the key mask ``[1, S]``."""
    frame_mask = [False, True, True, True] + [True] * 9 + [True, False]
    key_mask = jnp.repeat(jnp.asarray([frame_mask]), scale.tokens_per_frame, axis=1)
    shape = (1, key_mask.shape[1], scale.heads, scale.dim // scale.heads)
    q, k, v, cotangent = (jax.random.normal(key, shape, jnp.float32) for key in jax.random.split(jax.random.key(0), 4))
    return (q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16)), key_mask, cotangent


def attention_functions(impl: str, key_mask, cotangent):
    """Compiled forward ``(q, k, v) -> out`` and forward+backward ``(q, k, v) -> (dq, dk, dv)`` of ``impl``."""
    def forward(q, k, v):
        return attend(q, k, v, key_mask, impl)

    def loss(q, k, v):
        return jnp.sum(forward(q, k, v).astype(jnp.float32) * cotangent)

    return jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def agreement(got, want) -> dict:
    """Relative L2 error and max absolute error of each output against the float32 reference."""
    out = {}
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        out[name] = {"rel_l2": float(np.linalg.norm(g - w) / max(np.linalg.norm(w), 1e-30)),
                     "max_abs": float(np.max(np.abs(g - w)))}
    return out


def reference_attention(qkv, key_mask, cotangent):
    """Float32 XLA attention at full matmul precision: output and gradients."""
    with jax.default_matmul_precision("highest"):
        forward, backward = attention_functions("xla", key_mask, cotangent)
        q32 = [a.astype(jnp.float32) for a in qkv]
        return (forward(*q32), *backward(*q32))


def one_backend(impl: str, qkv, key_mask, cotangent, reference, deadline: float, end: float, reps: int) -> dict:
    try:
        check_available(impl)
    except ValueError:
        return {"status": "unavailable", "reason": f"unavailable on {jax.default_backend()}"}
    forward, backward = attention_functions(impl, key_mask, cotangent)
    fwd = measure(lambda: forward(*qkv), deadline=deadline, end=end, max_reps=reps)
    bwd = measure(lambda: backward(*qkv), deadline=deadline, end=end, max_reps=reps)
    result = {"status": "ok", "forward": fwd, "forward_backward": bwd}
    if reference is not None:
        result["agreement"] = agreement((forward(*qkv), *backward(*qkv)), reference)
    return result


def attention_part(args, scale: Scale, deadline: float, end: float) -> dict:
    qkv, key_mask, cotangent = attention_inputs(scale)
    b, s, h, d = qkv[0].shape
    try:
        reference, note = reference_attention(qkv, key_mask, cotangent), ""
    except Exception as err:  # noqa: BLE001
        if not is_out_of_memory(err):
            raise
        reference, note = None, "the float32 reference ran out of memory: no agreement"
    backends = {}
    for i, impl in enumerate(BACKENDS):
        share = time.perf_counter() + (deadline - time.perf_counter()) / (len(BACKENDS) - i)
        try:
            backends[impl] = one_backend(impl, qkv, key_mask, cotangent, reference, share, end, scale.max_reps)
        except Exception as err:  # noqa: BLE001 - a backend that fails here is a finding, not a crash
            backends[impl] = {"status": "error", "reason": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    valid_keys = int(key_mask.sum())
    return {"status": "ok", "shape": [b, s, h, d], "valid_keys": valid_keys, "dtype": "bfloat16", "note": note,
            "forward_flops": 4.0 * b * h * s * valid_keys * d, "backends": backends}


# ---- d. memory at 1M points -----------------------------------------------------------------------------------


def midway(deadline: float) -> float:
    """The time halfway between now and ``deadline``."""
    return (time.perf_counter() + deadline) / 2


def memory_part(args, scale: Scale, deadline: float, end: float) -> dict:
    """Read of 9 views and in-place write of 8 frames (as the rollout's cache) of a full bf16 memory."""
    rng = np.random.default_rng(0)
    mem = filled_memory(rng, scale.memory_points, jnp.bfloat16)
    k_read, pose_read = (jnp.asarray(a) for a in cameras(rng, READ_VIEWS))
    k_lat, pose_write = cameras(rng, WRITE_FRAMES)
    pose_write = jnp.asarray(pose_write)
    depth_hw = (HW[0] * scale.depth_factor, HW[1] * scale.depth_factor)
    k_depth = jnp.asarray(geometry.scale_intrinsics(k_lat, HW, depth_hw), jnp.float32)
    depths = jnp.asarray(rng.uniform(1.0, 5.0, (WRITE_FRAMES, *depth_hw)), jnp.float32)
    latents = jnp.asarray(rng.standard_normal((WRITE_FRAMES, *HW, 48)), jnp.float32)
    read = measure(lambda: memory.read(mem, k_read, pose_read, HW), deadline=midway(deadline),
                   end=end, max_reps=3 * scale.max_reps)
    write = InPlace(lambda m: memory.write(m, latents, depths, k_depth, pose_write, donate=True), mem)
    wrote = measure(write, deadline=deadline, end=end, max_reps=3 * scale.max_reps)
    state = memory.memory_bytes(mem)
    result = {"status": "ok", "points": scale.memory_points, "latent_hw": list(HW), "depth_hw": list(depth_hw),
              "feature_dtype": "bfloat16", "state_bytes": state, "read": read, "write": wrote}
    if read["median_s"] and wrote["median_s"]:
        result.update(read_ms_per_view=1e3 * read["median_s"] / READ_VIEWS,
                      write_ms_per_frame=1e3 * wrote["median_s"] / WRITE_FRAMES,
                      read_state_gbs=READ_VIEWS * state / read["median_s"] / 1e9)
    return result


# ---- the report -----------------------------------------------------------------------------------------------

Row = tuple[str, str, str]


def seconds(value: float | None) -> str:
    """``12.3 s`` / ``45.6 ms`` / ``-``."""
    if value is None:
        return "-"
    return f"{value:.2f} s" if value >= 1 else f"{1e3 * value:.2f} ms"


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.3g} GiB"


def reps_note(timing: dict) -> str:
    return f"median of {len(timing['times_s'])}, first call {seconds(timing['warmup_s'])}"


def status_rows(result: dict) -> list[Row] | None:
    """One row for a part that did not run (skipped, error), else None."""
    if result["status"] == "ok":
        return None
    return [("status", result["status"], result.get("reason", ""))]


def layer_rows(result: dict) -> list[Row]:
    tried = "".join(f"; {t}" for t in result["layers_tried"])
    return [("layers", f"{result['layers']} of {REAL_LAYERS}", f"VACE after every second layer{tried}")]


def train_rows(r: dict) -> list[Row]:
    if r["status"] != "ok":
        return status_rows(r) + [("layers tried", "", "; ".join(r.get("layers_tried", [])))]
    star = "*" if r.get("step_s_30_layers_extrapolated") else ""
    mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f} %"
    peak = "peak unknown for this device (--peak-tflops)" if r.get("peak_tflops") is None else \
        f"of {r['peak_tflops']:.0f} TFLOP/s peak"
    return layer_rows(r) + [
        ("stage / attention", f"{r['stage']} / {r['attention']}", "bf16 compute, fp32 weights + AdamW, batch 1"),
        ("tokens per step", f"{r['tokens_per_step']}", "4 ref + 9 target + 2 preceding latents"),
        ("compile", seconds(r["compile_s"]), "lower + compile, apart from the timings"),
        ("step time", seconds(r.get("step_s")), reps_note(r)),
        (f"step time, {REAL_LAYERS} layers{star}", seconds(r.get("step_s_30_layers")), "linear in layers"),
        ("tokens/s", f"{r.get('tokens_per_s', 0):.0f}", ""),
        ("model FLOP per step", f"{r['model_flops_per_step']:.3g}", "3 x forward, mirage_jax.train.metrics"),
        ("achieved TFLOP/s", f"{r.get('achieved_tflops', 0):.3g}", ""),
        ("MFU", mfu, peak),
        ("compiled memory", gib(r["compiled_bytes"]), "arguments + outputs - aliased + temporaries"),
    ]


def generation_rows(r: dict) -> list[Row]:
    if r["status"] != "ok":
        return status_rows(r) + [("layers tried", "", "; ".join(r.get("layers_tried", [])))]
    steps = r["steps_s"] or {}
    star = "*" if r.get("extrapolated") else ""
    context = steps.get("total", 0) - sum(steps.get(k, 0) for k in ("cache_read", "denoise", "decode", "write"))
    rows = layer_rows(r) + [
        ("chunk, generator total", seconds(steps.get("total")), f"33 frames at {r['hw'][0]}x{r['hw'][1]}; "
                                                                f"{reps_note(r)}"),
        ("  memory read (9 views)", seconds(steps.get("cache_read")), ""),
        ("  references + control", seconds(context if steps else None), ""),
        ("  denoise", seconds(steps.get("denoise")), f"UniPC {r['sample_steps']} steps, {r['attention']} attention"),
        ("  VAE decode", seconds(steps.get("decode")), f"Wan2.2 VAE, {r['vae_dtype']}, untiled"),
        ("  write back", seconds(steps.get("write")), "depth head + memory write + reference record"),
        ("depth step alone", seconds(r["depth_step_s"]), "latent depth head on 8 latents"),
        (f"denoise, {REAL_LAYERS} layers{star}", seconds(r.get("denoise_30_layers_s")), "linear in layers"),
        ("seconds per frame", f"{r['seconds_per_frame']:.3f}" if steps else "-",
         f"chunk / {NEW_FRAMES_PER_CHUNK} new frames, {r['layers']} layers"),
        (f"seconds per frame, {REAL_LAYERS} layers{star}",
         f"{r['seconds_per_frame_30_layers']:.3f}" if steps else "-",
         f"paper: {PAPER_SECONDS_PER_FRAME} s per frame (H100)"),
        ("generate() call", seconds(r["median_s"]), "+ first-frame encode, frames to the host"),
    ]
    return rows


def backend_rows(impl: str, b: dict, flops: float) -> list[Row]:
    if b["status"] != "ok":
        return [(impl, b["status"], b.get("reason", ""))]
    fwd, both = b["forward"]["median_s"], b["forward_backward"]["median_s"]
    agree = b.get("agreement")
    out_err = "" if agree is None else f"; out rel. error {agree['out']['rel_l2']:.1e}"
    grad_err = "" if agree is None else "; rel. error " + " ".join(
        f"{k} {agree[k]['rel_l2']:.1e}" for k in ("dq", "dk", "dv"))
    fwd_rate = f"{flops / fwd / 1e12:.2f} TFLOP/s" if fwd else "-"
    both_rate = f"{3 * flops / both / 1e12:.2f} TFLOP/s" if both else "-"
    return [(f"{impl} forward", seconds(fwd), fwd_rate + out_err),
            (f"{impl} forward+backward", seconds(both), both_rate + grad_err)]


def attention_rows(r: dict) -> list[Row]:
    if r["status"] != "ok":
        return status_rows(r)
    b, s, h, d = r["shape"]
    rows = [("q, k, v", f"[{b}, {s}, {h}, {d}]", f"bf16, {r['valid_keys']} valid keys; errors vs float32 xla")]
    for impl, backend in r["backends"].items():
        rows += backend_rows(impl, backend, r["forward_flops"])
    return rows + ([("note", "", r["note"])] if r["note"] else [])


def memory_rows(r: dict) -> list[Row]:
    if r["status"] != "ok":
        return status_rows(r)
    h, w = r["latent_hw"]
    return [
        ("points", f"{r['points']:,}", f"{r['state_bytes'] / 2**20:.1f} MiB, {r['feature_dtype']} features"),
        ("read, per view", f"{r.get('read_ms_per_view', float('nan')):.3f} ms",
         f"9 views at {h}x{w}; {r.get('read_state_gbs', float('nan')):.1f} GB/s of state; {reps_note(r['read'])}"),
        ("write, per frame", f"{r.get('write_ms_per_frame', float('nan')):.3f} ms",
         f"8 frames, depth {r['depth_hw'][0]}x{r['depth_hw'][1]}, in place; {reps_note(r['write'])}"),
    ]


TITLES = {"train": "a. training step (DiT + VACE + LoRA)", "generation": "b. one chunk of generation",
          "attention": "c. attention backends", "memory": "d. latent memory"}
ROWS = {"train": train_rows, "generation": generation_rows, "attention": attention_rows, "memory": memory_rows}


def print_report(report: dict) -> None:
    m = report["meta"]
    print(f"accelerator suite ({m['scale']['name']} sizes): {m['device_kind']} ({m['platform']}), jax {m['jax']}, "
          f"jaxlib {m['jaxlib']}, {m['date_utc']} UTC; model attention {m['model_attention']}"
          + (f" ({m['model_attention_note']})" if m["model_attention_note"] else ""))
    for part in PARTS:
        if part in report["parts"]:
            result = report["parts"][part]
            print_table(f"{TITLES[part]} ({result['part_s']:.0f} s)", ROWS[part](result))
    print(f"\n* extrapolated to {REAL_LAYERS} layers from the layers measured (linear in layers)")


# ---- the run --------------------------------------------------------------------------------------------------

RUNNERS = {"train": train_part, "generation": generation_part, "attention": attention_part, "memory": memory_part}


def settle_model_attention(args, attention: dict) -> None:
    """After part c: with ``--attention auto`` the model keeps the platform's fused kernel only if it ran there
    (forward and backward at the DiT's size); otherwise it falls back to ``xla``, and ``args`` says why."""
    fused = model_attention(args.attention)
    backend = attention.get("backends", {}).get(fused, {"status": "not run"})
    if args.attention == "auto" and fused != "xla" and backend["status"] != "ok":
        args.attention, args.attention_note = "xla", f"{fused} {backend['status']} in part c: the model uses xla"


def run_parts(args, scale: Scale, budget) -> dict:
    """Runs the chosen parts in ``RUN_ORDER``, each with its share of the budget left; never raises."""
    results = {}
    order = [p for p in RUN_ORDER if p in args.parts]
    for i, part in enumerate(order):
        weights = [PART_WEIGHTS[p] for p in order[i:]]
        started = time.perf_counter()
        if budget.left() < scale.min_part_seconds:
            results[part] = {"status": "skipped", "reason": f"{max(budget.left(), 0):.0f} s of the budget left"}
        else:
            print(f"[{budget.elapsed():6.1f} s] {part} ...", flush=True)
            results[part] = run_part(part, args, scale, budget.deadline(weights[0] / sum(weights)), budget.end)
        results[part]["part_s"] = time.perf_counter() - started
        if part == "attention":
            settle_model_attention(args, results[part])
        gc.collect()
    return results


def run_part(part: str, args, scale: Scale, deadline: float, end: float) -> dict:
    """One part's result; an exception becomes ``{"status": "error"}`` so that the other parts still run."""
    try:
        return RUNNERS[part](args, scale, deadline, end)
    except Exception as err:  # noqa: BLE001
        return {"status": "error", "reason": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}


def finite_or_none(tree):
    """The report with numpy scalars as Python numbers and non-finite floats as None (strict JSON)."""
    if isinstance(tree, dict):
        return {k: finite_or_none(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [finite_or_none(v) for v in tree]
    if hasattr(tree, "item") and not isinstance(tree, (str, bytes)):
        tree = tree.item()
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


def main(argv=None) -> int:
    args = parse_args(argv)
    scale = SMOKE if args.smoke else REAL
    budget = Budget(args.budget, start=START)
    meta = {**environment(), "scale": dataclasses.asdict(scale), "smoke": args.smoke, "budget_s": args.budget,
            "argv": sys.argv[1:]}
    parts = run_parts(args, scale, budget)
    meta.update(model_attention=model_attention(args.attention), model_attention_note=args.attention_note,
                elapsed_s=budget.elapsed())
    report = finite_or_none({"meta": meta, "parts": parts})
    print_report(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, allow_nan=False))
    print(f"\nwrote {out} ({meta['elapsed_s']:.0f} s of the {args.budget:.0f} s budget)")
    return 1 if any(p["status"] == "error" for p in parts.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
