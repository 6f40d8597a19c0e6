"""``mirage-jax plan``: AOT-compile the training step on simulated devices and report per-device memory.

Nothing is allocated: the model, optimizer state and batch are abstract (``nnx.eval_shape``,
``jax.ShapeDtypeStruct`` with shardings from the logical axes); the step is the one ``mirage-jax train``
runs (``train.step.make_train_step``: DiT + VACE + LoRA forward, flow-matching loss, backward, gradient
clipping and AdamW with the configured schedule), lowered and compiled for the mesh, and
``compiled.memory_analysis()`` gives the per-device argument / temporary (activation) bytes.

    mirage-jax plan --config configs/wan22_ti2v_5b.py --mesh fsdp=8,tensor=1 [--stage vace|lora|full]
    mirage-jax plan --checkpoint RUN --mesh fsdp=8   # the model a run / converted folder / export holds

When JAX has not started yet, the number of simulated CPU devices is set from ``--mesh`` (XLA_FLAGS).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import time

from mirage_jax.config import accept_config_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="config file, e.g. configs/wan22_ti2v_5b.py (on top of --checkpoint's own config)")
    parser.add_argument("--checkpoint", default=None,
                        help="plan for the model of a training run / convert dit folder / export (its config)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a training run (default: latest)")
    parser.add_argument("--mesh", default="fsdp=8,tensor=1",
                        help="mesh sizes, e.g. data=1,fsdp=4,context=2,tensor=1")
    parser.add_argument("--stage", default="vace", choices=("vace", "lora", "full"), help="what trains")
    parser.add_argument("--height", type=int, default=44, help="latent height (704 px / 16)")
    parser.add_argument("--width", type=int, default=80, help="latent width (1280 px / 16)")
    parser.add_argument("--targets", type=int, default=9, help="target latent frames")
    parser.add_argument("--preceding", type=int, default=2, help="preceding latent frames")
    parser.add_argument("--references", type=int, default=4, help="reference latent frames")
    parser.add_argument("--batch-per-device", type=int, default=1, help="samples per data/fsdp shard")
    parser.add_argument("--frozen-dtype", default=None, help="storage dtype of frozen params (default: param_dtype)")
    parser.add_argument("--json", default=None, help="also write the report as JSON to this path")
    accept_config_overrides(parser)


def _simulate_devices(count: int) -> None:
    """Asks XLA for ``count`` host devices if no JAX backend is initialised yet."""
    import sys

    if "jax" in sys.modules:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _device_bytes(tree, shardings) -> int:
    import jax
    import numpy as np

    total = 0
    for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        total += int(np.prod(sharding.shard_shape(leaf.shape))) * np.dtype(leaf.dtype).itemsize
    return total


def parameter_counts(model) -> dict[str, int]:
    """``{"dit", "vace", "lora"}`` parameter counts of a (possibly abstract) ``WanDiT``."""
    from flax import nnx

    counts = {"dit": 0, "vace": 0, "lora": 0}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        key = "lora" if "lora" in str(path[-1]) else "vace" if path[0] == "vace" else "dit"
        counts[key] += int(var.size)
    return counts


def plan(config, mesh, *, stage: str, height: int, width: int, targets: int, preceding: int, references: int,
         batch_per_device: int = 1, frozen_dtype: str | None = None) -> dict:
    """Compiles the training step ``mirage-jax train`` runs (``train.step.make_train_step``: the flow-matching
    loss, the project's optimizer with its clipping and schedule, donated state) abstractly on ``mesh`` for one
    stage and a batch of the given latent sizes; returns counts, bytes per device and timings."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec

    from mirage_jax.data.training_example import MODEL_INPUTS, ExampleSizes
    from mirage_jax.models import DiTSettings, WanDiT
    from mirage_jax.models.lora import trainable_filter
    from mirage_jax.train.loss import LossSettings
    from mirage_jax.train.optimizer import make_optimizer
    from mirage_jax.train.step import batch_sharding, make_train_step, train_state_shardings

    s = DiTSettings.from_config(config)
    t0 = time.perf_counter()
    abstract = nnx.eval_shape(lambda: WanDiT(s, rngs=nnx.Rngs(0)))
    graphdef, trainable, frozen = nnx.split(abstract, trainable_filter(stage), ...)
    if frozen_dtype:
        frozen = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.dtype(frozen_dtype)), frozen)
    tx = make_optimizer(config.train, int(config.train.num_steps))
    state = {"trainable": {"dit": trainable}, "frozen": frozen, "opt": jax.eval_shape(tx.init, {"dit": trainable}),
             "step": jax.ShapeDtypeStruct((), jnp.int32), "rng": jax.eval_shape(lambda: jax.random.PRNGKey(0))}
    state_shardings = train_state_shardings(state, tx, mesh, s.rules)

    batch = batch_per_device * mesh.shape["data"] * mesh.shape["fsdp"]
    sizes = ExampleSizes(targets=targets, preceding=preceding, references=references, height=height, width=width,
                         channels=s.in_channels, text_length=int(config.text.max_length), text_dim=s.text_dim)
    shapes = {k: v for k, v in sizes.shapes(batch).items() if k in MODEL_INPUTS}
    batch_shardings = {k: batch_sharding(mesh, len(shape), s.rules) for k, (shape, _) in shapes.items()}
    replicated = NamedSharding(mesh, PartitionSpec())
    settings = LossSettings.from_config(config)
    score = None
    if settings.score_source == "constant":
        score = jax.ShapeDtypeStruct((targets + preceding, height, width, sizes.channels), jnp.float32,
                                     sharding=replicated)
    step = make_train_step(graphdef, tx, settings, grad_accum=int(config.train.grad_accum),
                           state_sharding=state_shardings, batch_shardings=batch_shardings, mesh=mesh)

    def placed(tree, shardings):
        return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), tree, shardings)

    abstract_batch = {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_shardings[k])
                      for k, (shape, dtype) in shapes.items()}
    with jax.set_mesh(mesh):
        empty_context = jax.ShapeDtypeStruct((sizes.text_length, sizes.text_dim), jnp.float32, sharding=replicated)
        lowered = step.lower(placed(state, state_shardings), abstract_batch, empty_context, score)
    t_lower = time.perf_counter() - t0
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t0 - t_lower
    mem = compiled.memory_analysis()
    per_device = {
        "trainable_params": _device_bytes(state["trainable"], state_shardings["trainable"]),
        "frozen_params": _device_bytes(frozen, state_shardings["frozen"]),
        "optimizer": _device_bytes(state["opt"], state_shardings["opt"]),
        "batch": _device_bytes(abstract_batch, batch_shardings),
        "arguments": int(mem.argument_size_in_bytes),
        "outputs": int(mem.output_size_in_bytes),
        "aliased": int(mem.alias_size_in_bytes),
        "temp_activations": int(mem.temp_size_in_bytes),
    }
    per_device["total"] = (per_device["arguments"] + per_device["outputs"] - per_device["aliased"]
                           + per_device["temp_activations"])
    frames = references + targets + preceding
    return {"mesh": dict(mesh.shape), "stage": stage, "global_batch": batch, "frames": frames,
            "tokens_per_sample": frames * (height // s.patch_size[1]) * (width // s.patch_size[2]),
            "param_counts": parameter_counts(abstract), "bytes_per_device": per_device,
            "lower_s": round(t_lower, 1), "compile_s": round(t_compile, 1)}


def _gb(n: int) -> str:
    return f"{n / 1e9:10.3f} GB"


def run(args: argparse.Namespace) -> int:
    from mirage_jax.sharding import MESH_AXES, parse_mesh_spec

    for name in ("targets", "preceding", "references", "batch_per_device", "height", "width"):
        minimum = 1 if name in ("targets", "batch_per_device", "height", "width") else 0
        if getattr(args, name) < minimum:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)}: expected >= {minimum}")

    sizes = {**dict.fromkeys(MESH_AXES, 1), **parse_mesh_spec(args.mesh)}  # axes not named: size 1
    if any(v < 1 for v in sizes.values()):
        raise ValueError(f"--mesh {args.mesh!r}: plan needs explicit positive sizes")
    count = math.prod(sizes.values())
    _simulate_devices(count)
    import jax

    from mirage_jax.config import load_config
    from mirage_jax.sharding import make_mesh

    if args.checkpoint is not None:
        from mirage_jax.checkpoints import open_source, resolve_config

        config, notes = resolve_config(open_source(args.checkpoint, args.step), args.config, args.overrides)
        for note in notes:
            print(f"note: {note}")
    elif args.config is None:
        raise ValueError("--config or --checkpoint: one is required (the model to plan for)")
    else:
        config = load_config(args.config, args.overrides)
    from mirage_jax.config_checks import validate_config

    for axis, size in sizes.items():  # the planned mesh and frame size, checked like a run's
        config.mesh[axis] = size
    factor = int(config.latent.spatial_factor)  # --height/--width are latent cells
    config.data.height, config.data.width = args.height * factor, args.width * factor
    validate_config(config)
    if len(jax.devices()) < count:
        raise ValueError(f"--mesh {args.mesh!r} needs {count} devices, JAX has {len(jax.devices())} "
                         f"(set XLA_FLAGS=--xla_force_host_platform_device_count={count} before JAX starts)")
    mesh = make_mesh(**sizes, devices=jax.devices()[:count])
    report = plan(config, mesh, stage=args.stage, height=args.height, width=args.width, targets=args.targets,
                  preceding=args.preceding, references=args.references, batch_per_device=args.batch_per_device,
                  frozen_dtype=args.frozen_dtype)
    c = report["param_counts"]
    print(f"config {config.name}  mesh {report['mesh']}  stage {args.stage}  global batch {report['global_batch']}"
          f"  frames {report['frames']}  tokens/sample {report['tokens_per_sample']}")
    print(f"parameters: DiT {c['dit'] / 1e9:.3f} B + VACE {c['vace'] / 1e9:.3f} B + LoRA {c['lora'] / 1e6:.1f} M")
    print("per-device bytes:")
    for key, value in report["bytes_per_device"].items():
        print(f"  {key:<18}{_gb(value)}")
    print(f"lower {report['lower_s']} s, compile {report['compile_s']} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0
