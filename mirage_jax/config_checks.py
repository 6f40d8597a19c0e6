"""``validate_config(config)``: the value ranges and choices of every field, checked once, by every command,
before anything is built or compiled.

``mirage_jax.config.load_config`` already rejects unknown fields and wrongly typed values; this adds ranges,
choices (``config.CHOICES``) and cross-field rules (frame counts of the form 4N+1, a resolution the latent
space and the DiT patch divide, stages whose parameter group exists, a batch that the data-parallel devices
divide, ...). Every failure is one ``ValueError`` naming the field and what was expected. The model's own
structural rules (head split, VACE layer indices, attention backend) are checked when it is built
(``DiTSettings.validate``).
"""

from __future__ import annotations

from mirage_jax.config import CHOICES, get_field
from mirage_jax.video_shapes import FRAMES_PER_LATENT

# The latent memory's slot indices and point counts are int32, and a write sums up to ``capacity`` surviving
# points and ``capacity`` new ones (memory/write.py ``plan_insert``): 2 x capacity must fit in int32.
MAX_MEMORY_CAPACITY = (2**31 - 1) // 2


def memory_feature_dtype(dtype, name: str = "dtype"):
    """``dtype`` as a numpy dtype if the latent memory stores features faithfully in it: float32, bfloat16, or
    float64 when JAX's x64 mode is on (without it JAX would silently store float32). float16 is refused: it
    overflows above 65504. ``ValueError`` naming ``name`` otherwise."""
    import jax  # noqa: PLC0415  (this module is imported by commands that may not need JAX)
    import jax.numpy as jnp  # noqa: PLC0415

    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise ValueError(f"{name}: expected float32 or bfloat16, got {dtype!r}") from None
    if dtype == jnp.float16:
        raise ValueError(f"{name}: float16 is refused: it overflows above 65504 (a latent of 1e5 would be stored as "
                         "inf); use bfloat16 (same size, float32's range) or float32")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(f"{name}: float64 needs JAX's x64 mode (jax.config.update('jax_enable_x64', True)); "
                         "without it the features would silently be float32; use float32 or bfloat16")
    if dtype not in (jnp.float32, jnp.bfloat16, jnp.float64):
        raise ValueError(f"{name}: expected float32 or bfloat16, got {dtype}")
    return dtype


def _check(ok: bool, field: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"config.{field}={value!r}: expected {expected}")


def _stages(train) -> tuple[str, ...]:
    return (train.stages,) if isinstance(train.stages, str) else tuple(train.stages)


def _frames_4n1(field: str, value, minimum: int = 1) -> None:
    ok = isinstance(value, int) and value >= minimum and (value - 1) % FRAMES_PER_LATENT == 0
    _check(ok, field, value, f"a frame count 4N+1 >= {minimum}")


def check_choices(config) -> None:
    for field, allowed in CHOICES.items():
        value = get_field(config, field)
        values = (_stages(config.train) if field == "train.stages"
                  else tuple(value) if field == "data.trajectories" else (value,))
        _check(len(values) >= 1 and all(v in allowed for v in values), field, value, f"one of {allowed}")


def check_model(config) -> None:
    m = config.model
    for name in ("dim", "num_layers", "num_heads", "ffn_dim", "freq_dim", "vace_in_channels"):
        _check(int(m[name]) >= 1, f"model.{name}", m[name], ">= 1")
    _check(m.lora_rank >= 0, "model.lora_rank", m.lora_rank, ">= 0 (0 = no LoRA)")
    _check(m.lora_alpha > 0, "model.lora_alpha", m.lora_alpha, "> 0")
    _check(len(m.patch_size) == 3 and all(int(p) >= 1 for p in m.patch_size), "model.patch_size", m.patch_size,
           "(pt, ph, pw) of positive ints")
    _check(config.latent.channels >= 1, "latent.channels", config.latent.channels, ">= 1")
    _check(config.latent.spatial_factor >= 1, "latent.spatial_factor", config.latent.spatial_factor, ">= 1")
    _check(config.text.dim >= 1 and config.text.max_length >= 1, "text.dim/max_length",
           (config.text.dim, config.text.max_length), "positive sizes")
    _check(0 <= config.text.drop_prob <= 1, "text.drop_prob", config.text.drop_prob, "a probability in [0, 1]")


def check_data(config) -> None:
    d = config.data
    _, ph, pw = (int(p) for p in config.model.patch_size)
    s = int(config.latent.spatial_factor)
    _check(d.height >= 1 and d.height % (s * ph) == 0, "data.height", d.height,
           f"a positive multiple of {s * ph} (latent factor {s} x DiT patch {ph})")
    _check(d.width >= 1 and d.width % (s * pw) == 0, "data.width", d.width,
           f"a positive multiple of {s * pw} (latent factor {s} x DiT patch {pw})")
    _frames_4n1("data.target_frames", d.target_frames, minimum=1 + FRAMES_PER_LATENT)
    _check(d.clip_frames >= d.target_frames, "data.clip_frames", d.clip_frames,
           f">= data.target_frames ({d.target_frames})")
    _check(d.num_clips >= 1, "data.num_clips", d.num_clips, ">= 1")
    _check(d.windows_per_clip >= 1, "data.windows_per_clip", d.windows_per_clip, ">= 1")
    _check(d.dynamic_objects >= 0, "data.dynamic_objects", d.dynamic_objects, ">= 0 (moving objects per clip)")
    _check(d.max_reference_candidates >= 0 and d.prefetch >= 1, "data.max_reference_candidates/prefetch",
           (d.max_reference_candidates, d.prefetch), ">= 0 candidates, >= 1 prefetched batch")


def check_context_parallel(config) -> None:
    """A ``context`` mesh axis splits every frame's tokens and, inside attention, the heads: both must divide."""
    cp = int(config.mesh.context)
    _check(cp >= 1, "mesh.context", cp, ">= 1 (1 = no context parallelism)")
    if cp == 1:
        return
    _, ph, pw = (int(p) for p in config.model.patch_size)
    s = int(config.latent.spatial_factor)
    tokens = (int(config.data.height) // (s * ph)) * (int(config.data.width) // (s * pw))
    _check(int(config.model.num_heads) % cp == 0, "mesh.context", cp,
           f"a divisor of model.num_heads ({config.model.num_heads}): attention splits the heads over it")
    _check(tokens % cp == 0, "mesh.context", cp,
           f"a divisor of the tokens per frame ({tokens} at {config.data.height}x{config.data.width})")


def check_memory(config) -> None:
    m = config.memory
    _check(m.capacity >= 1, "memory.capacity", m.capacity, ">= 1")
    _check(m.capacity <= MAX_MEMORY_CAPACITY, "memory.capacity", m.capacity,
           f"<= {MAX_MEMORY_CAPACITY} (the memory's indices are int32; a write counts up to 2 x capacity points)")
    memory_feature_dtype(m.feature_dtype, f"config.memory.feature_dtype={m.feature_dtype!r}")
    _check(m.voxel_size > 0 and m.dedup_voxel_size > 0, "memory.voxel_size/dedup_voxel_size",
           (m.voxel_size, m.dedup_voxel_size), "positive sizes in metres")
    _check(0 <= m.reference_iou_threshold <= 1, "memory.reference_iou_threshold", m.reference_iou_threshold,
           "an IoU in [0, 1]")
    _check(m.max_references >= 0 and m.num_preceding >= 0, "memory.max_references/num_preceding",
           (m.max_references, m.num_preceding), ">= 0")


def check_sample(config) -> None:
    s = config.sample
    _check(s.steps >= 1, "sample.steps", s.steps, ">= 1")
    _check(s.shift > 0, "sample.shift", s.shift, "> 0")
    _check(s.guidance_scale > 0, "sample.guidance_scale", s.guidance_scale, "> 0 (1 = no guidance)")
    _frames_4n1("sample.chunk_frames", s.chunk_frames, minimum=1 + FRAMES_PER_LATENT)
    _check(s.fps >= 1, "sample.fps", s.fps, ">= 1")
    _check(s.integer_timesteps in ("auto", True, False), "sample.integer_timesteps", s.integer_timesteps,
           "'auto', true or false")


def check_train(config, device_count: int | None = None, process_count: int | None = None) -> None:
    """Training fields, and (with ``device_count``) the batch against the mesh's data-parallel devices."""
    t = config.train
    stages = _stages(t)
    if "vace" in stages:
        _check(len(config.model.vace_layers) > 0, "model.vace_layers", config.model.vace_layers,
               "non-empty when a 'vace' stage is trained")
    if "lora" in stages:
        _check(config.model.lora_rank > 0, "model.lora_rank", config.model.lora_rank,
               "> 0 when a 'lora' stage is trained")
    _check(t.num_steps >= 1, "train.num_steps", t.num_steps, ">= 1")
    _check(len(t.stage_steps) in (0, len(stages)), "train.stage_steps", t.stage_steps,
           f"() or one step count per stage ({len(stages)})")
    for n in t.stage_steps:
        _check(int(n) >= 1, "train.stage_steps", t.stage_steps, "step counts >= 1")
    _check(t.lr > 0, "train.lr", t.lr, "> 0")
    _check(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, ">= 0")
    _check(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, ">= 0")
    _check(0 <= t.b1 < 1 and 0 <= t.b2 < 1, "train.b1/b2", (t.b1, t.b2), "values in [0, 1)")
    _check(t.clip_norm >= 0, "train.clip_norm", t.clip_norm, ">= 0 (0 = no clipping)")
    _check(t.shift > 0, "train.shift", t.shift, "> 0")
    _check(t.max_references >= 0, "train.max_references", t.max_references, ">= 0")
    _check(t.max_preceding >= 0, "train.max_preceding", t.max_preceding, ">= 0")
    _check(t.log_every >= 1, "train.log_every", t.log_every, ">= 1")
    _check(t.eval_every >= 0, "train.eval_every", t.eval_every, ">= 0 (0 = no evaluation)")
    _check(t.checkpoint_every >= 1, "train.checkpoint_every", t.checkpoint_every, ">= 1")
    _check(t.keep_checkpoints >= 1, "train.keep_checkpoints", t.keep_checkpoints, ">= 1")
    _check(t.eval_batches >= 0, "train.eval_batches", t.eval_batches, ">= 0")
    _check(all(0 < s <= 1 for s in t.eval_sigmas), "train.eval_sigmas", t.eval_sigmas, "values in (0, 1]")
    _check(t.depth_loss_weight >= 0, "train.depth_loss_weight", t.depth_loss_weight, ">= 0")
    _check(t.peak_tflops >= 0, "train.peak_tflops", t.peak_tflops, ">= 0 (0 = look up by device)")
    _check(t.grad_accum >= 1, "train.grad_accum", t.grad_accum, ">= 1")
    _check(t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1")
    if device_count is None:
        return
    from mirage_jax.sharding import mesh_sizes

    processes = 1 if process_count is None else process_count
    sizes = mesh_sizes(config, device_count, processes)
    data_parallel = sizes["data"] * sizes["fsdp"]
    micro = t.batch_size // t.grad_accum
    _check(t.batch_size % t.grad_accum == 0 and micro % data_parallel == 0, "train.batch_size", t.batch_size,
           f"a multiple of grad_accum ({t.grad_accum}) × data-parallel devices (data×fsdp = {data_parallel})")
    _check(t.batch_size % processes == 0, "train.batch_size", t.batch_size,
           f"a multiple of the process count {processes}")


def validate_config(config, *, training: bool = False, device_count: int | None = None,
                    process_count: int | None = None) -> None:
    """Raises ``ValueError`` for any out-of-range or inconsistent field (cheap; compiles nothing).

    Every command checks the whole config; ``training`` adds the training fields, against the mesh of
    ``device_count`` devices (default: JAX's) and ``process_count`` processes.
    """
    check_choices(config)
    check_model(config)
    check_data(config)
    check_context_parallel(config)
    check_memory(config)
    check_sample(config)
    if training:
        import jax

        check_train(config, jax.device_count() if device_count is None else device_count,
                    jax.process_count() if process_count is None else process_count)
