"""The configuration schema and its loader.

Every experiment is a ``configs/<name>.py`` whose ``get_config()`` starts from ``base_config()`` and changes
sizes. ``load_config(path, overrides)`` loads one and applies ``--config.a.b=value`` overrides; an unknown
field or a value of the wrong type is a ``ValueError`` before anything is built or compiled.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import ml_collections

# The allowed values of the fields that name a choice (the modules that implement them take their names from
# here; mirage_jax.config_checks.validate_config checks them).
CHOICES = {
    "latent.kind": ("wan_vae", "patchify"),
    "text.kind": ("umt5", "none"),
    "model.score_source": ("constant", "hit_mask"),
    "memory.depth_downsample": ("bilinear", "robust"),
    "memory.reference_rule": ("frozen", "current"),
    "train.stages": ("vace", "lora", "full"),
    "train.schedule": ("constant", "cosine"),
    "sample.sampler": ("unipc", "euler"),
    "sample.sigma_grid": ("wan", "diffusers"),
    "sample.cache": ("latent", "none", "rgb"),
    "sample.depth_source": ("geometry", "head"),
    "data.trajectories": ("forward", "orbit", "pan", "revisit", "loop"),  # procedural camera paths
}


def base_config() -> ml_collections.ConfigDict:
    """All fields with their defaults (the real Wan2.2-TI2V-5B sizes; smaller configs override)."""
    c = ml_collections.ConfigDict()
    c.name = "base"
    c.seed = 0

    # Latent space: "wan_vae" (Wan2.2 VAE, 16x space / 4x time, 48 ch) or "patchify" (exact, parameter-free).
    c.latent = ml_collections.ConfigDict()
    c.latent.kind = "wan_vae"
    c.latent.channels = 48
    c.latent.spatial_factor = 16
    c.latent.vae = ml_collections.ConfigDict()
    c.latent.vae.base_dim = 160
    c.latent.vae.decoder_base_dim = 256
    c.latent.vae.dim_mult = (1, 2, 4, 4)
    c.latent.vae.num_res_blocks = 2
    c.latent.vae.temporal_downsample = (False, True, True)
    c.latent.vae.tile_hw = (30, 52)  # latent cells
    c.latent.vae.tile_stride_hw = (15, 26)
    c.latent.vae.z_dim = 48  # latent channels of the VAE (mean only)
    c.latent.vae.checkpoint = ""  # Orbax dir from `mirage-jax convert vae`; "" = random init (tests/benchmarks)
    c.latent.vae.compute_dtype = "float32"  # "bfloat16": the official inference precision, half the activations
    # Decode/encode in overlapping spatial tiles (bounded memory for large frames). Off by default: untiled is
    # exact and gives the latents training saw (the official trains untiled but decodes tiled at inference).
    c.latent.vae.tiled = False

    # Text encoder: "umt5" (real), or "none" (zero context, for CPU configs without captions).
    c.text = ml_collections.ConfigDict()
    c.text.kind = "umt5"
    c.text.max_length = 512
    c.text.dim = 4096
    c.text.drop_prob = 0.1
    c.text.tokenizer_path = ""  # local tokenizer.json (tokenizers) or *.model (sentencepiece) for umT5
    c.text.checkpoint = ""  # Orbax dir from `mirage-jax convert umt5`; "random" = random weights (tests, tiny)
    c.text.cache_dir = ""  # optional on-disk prompt-embedding cache (one .npz per prompt hash); "" = memory only
    c.text.umt5 = ml_collections.ConfigDict()  # umT5-XXL encoder sizes
    c.text.umt5.vocab_size = 256384
    c.text.umt5.num_layers = 24
    c.text.umt5.num_heads = 64
    c.text.umt5.head_dim = 64
    c.text.umt5.ffn_dim = 10240
    c.text.umt5.num_buckets = 32
    c.text.umt5.max_distance = 128
    c.text.umt5.eps = 1e-6

    # DiT + VACE + LoRA (docs/design.md §4).
    c.model = ml_collections.ConfigDict()
    c.model.dim = 3072
    c.model.num_layers = 30
    c.model.num_heads = 24
    c.model.ffn_dim = 14336
    c.model.patch_size = (1, 2, 2)
    c.model.freq_dim = 256
    c.model.eps = 1e-6
    c.model.rope_theta = 10000.0
    c.model.vace_layers = tuple(range(0, 30, 2))
    c.model.vace_in_channels = 96
    c.model.score_source = "constant"  # "constant" (official white-video latent) or "hit_mask"
    c.model.lora_rank = 32
    c.model.lora_alpha = 32.0
    c.model.scan_layers = True
    c.model.remat_policy = "nothing_saveable"  # "none", "nothing_saveable", "dots_saveable"
    c.model.compute_dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.attention = "xla"  # "xla", "cudnn", "splash", "chunked" (memory-efficient XLA)
    # Start training from these weights: a training workdir, a `mirage-jax convert dit` folder or an export
    # (mirage_jax.checkpoints). Groups the source lacks (VACE, LoRA) start fresh: zero after_proj, zero LoRA B.
    c.model.init_checkpoint = ""

    # Latent spatial memory (docs/design.md §3).
    c.memory = ml_collections.ConfigDict()
    c.memory.capacity = 262_144
    c.memory.feature_dtype = "bfloat16"
    c.memory.depth_downsample = "bilinear"  # "bilinear" (official-compatible) or "robust"
    c.memory.voxel_size = 0.1
    c.memory.dedup_voxel_size = 0.05  # metres: a revisit replaces the older points of these voxels (memory.init)
    c.memory.reference_iou_threshold = 0.04
    # What a history latent "sees" when references are chosen (memory.history): "frozen" = the points visible
    # from it right after its chunk was written (the official rule), "current" = recomputed from the cache now.
    c.memory.reference_rule = "frozen"
    c.memory.max_references = 4
    c.memory.num_preceding = 2

    # Data (docs/design.md §7).
    c.data = ml_collections.ConfigDict()
    # "procedural", a pose_clips dataset folder (data build: raw frames, encoded per example) or a latent
    # dataset folder (data encode: stored latents, no encoder runs while training)
    c.data.source = "procedural"
    c.data.data_dir = ""
    c.data.height = 704
    c.data.width = 1280
    c.data.clip_frames = 81
    c.data.target_frames = 33
    c.data.max_reference_candidates = 8
    c.data.num_clips = 64
    c.data.trajectories = ("revisit", "orbit", "pan", "forward", "loop")
    c.data.dynamic_objects = 0
    c.data.shuffle_seed = 0
    c.data.prefetch = 2
    c.data.windows_per_clip = 4  # data encode: training windows sampled (and stored) per clip
    c.data.latent_cache_dir = ""  # on-disk latent cache (data.latent_cache); "" = encode every time

    # Training (docs/design.md §5, §6).
    c.train = ml_collections.ConfigDict()
    c.train.stages = ("vace", "lora")
    c.train.num_steps = 10_000
    c.train.batch_size = 64
    c.train.grad_accum = 1
    c.train.lr = 1e-5
    c.train.warmup_steps = 0
    c.train.schedule = "constant"  # "constant" or "cosine"
    c.train.weight_decay = 1e-2
    c.train.b1 = 0.9
    c.train.b2 = 0.999
    c.train.clip_norm = 1.0
    c.train.shift = 5.0
    c.train.max_references = 4
    c.train.max_preceding = 2
    c.train.log_every = 10
    c.train.eval_every = 500
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 3
    c.train.stage_steps = ()  # optimizer steps per stage (one per train.stages entry); () = train.num_steps each
    c.train.eval_batches = 2  # fixed batches for the periodic evaluation loss (fixed sigmas and seed)
    c.train.eval_sigmas = (0.1, 0.3, 0.5, 0.7, 0.9)  # evaluation noise levels σ (used as is, no shift)
    c.train.async_checkpointing = True  # Orbax async saves (training continues while writing)
    c.train.depth_head = False  # also train mirage_jax.models.depth_head.LatentDepthHead on target_depth
    c.train.depth_loss_weight = 0.1  # weight of the depth-head loss in the total loss
    c.train.peak_tflops = 0.0  # per-device peak TFLOP/s for MFU; 0 = look up by device kind (unknown: no MFU)

    # Sampling (docs/design.md §5).
    c.sample = ml_collections.ConfigDict()
    c.sample.sampler = "unipc"  # "unipc" or "euler"
    c.sample.steps = 20
    c.sample.shift = 5.0
    c.sample.guidance_scale = 1.0
    c.sample.chunk_frames = 33
    c.sample.sigma_grid = "wan"  # "wan" (official loop: linspace(0.999, 0)) or "diffusers" (linspace(1, 1e-3))
    c.sample.integer_timesteps = "auto"  # model sees int(1000σ): "auto" (UniPC yes, Euler no), True, False
    c.sample.seed = 42  # noise seed of generation (one key split per chunk)
    c.sample.fps = 16  # frame rate of the written mp4 files
    c.sample.cache = "latent"  # scene cache for generation: "latent" memory, "rgb" point cache, "none"
    c.sample.depth_source = "geometry"  # write-back depth: "geometry" (given / ground truth) or "head"

    # Device mesh and logical-axis rules (docs/design.md §8).
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1
    c.mesh.fsdp = -1  # -1: all remaining devices
    c.mesh.context = 1  # splits every frame's tokens (context parallelism: models/context_parallel.py)
    c.mesh.tensor = 1
    c.mesh.rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("kv", None),
        ("length", "context"),
        ("vocab", None),
        ("points", ("data", "fsdp")),
    )
    return c


def _parse_value(text: str, current):
    """Parses an override string to the type of the field's current value."""
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        value = ast.literal_eval(text) if text.strip()[:1] in "([" else tuple(v for v in text.split(",") if v)
        return tuple(value) if isinstance(value, (tuple, list)) else (value,)
    return ast.literal_eval(text)


# Fields that no longer exist, and where their value lives now (an override of one is an error saying so).
REMOVED_FIELDS = {
    "model.text_dim": "the DiT's text width is config.text.dim",
    "model.in_channels": "the DiT's latent channels are config.latent.channels",
    "model.out_channels": "the DiT's latent channels are config.latent.channels",
    "latent.temporal_factor": "always 4 pixel frames per latent (mirage_jax.video_shapes.FRAMES_PER_LATENT)",
    "data.preceding_frames": "the preceding context is config.memory.num_preceding latents",
}


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies ``["a.b=value", ...]`` (a leading ``--config.`` or ``config.`` is accepted) in place."""
    for item in overrides:
        key, sep, text = item.removeprefix("--").removeprefix("config.").partition("=")
        if not sep:
            raise ValueError(f"config override {item!r}: expected --config.field=value")
        if key in REMOVED_FIELDS:
            raise ValueError(f"config override {item!r}: config.{key} was removed; {REMOVED_FIELDS[key]}")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise ValueError(f"config override {item!r}: no section {part!r} in config.{'.'.join(parents)}")
            node = node[part]
        if leaf not in node:
            raise ValueError(
                f"config override {item!r}: unknown field config.{key}; fields here: {sorted(node.keys())}"
            )
        try:
            value = _parse_value(text, node[leaf])
        except (ValueError, SyntaxError) as err:
            raise ValueError(f"config override {item!r}: cannot parse for config.{key}: {err}") from None
        node[leaf] = value
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Loads ``get_config()`` from a config file (``configs/tiny.py``, or a bare name like ``tiny``), or a
    stored config (``WORKDIR/config.json``).

    A relative path that does not exist from the working directory is looked up from the project root, so
    the default ``configs/tiny.py`` works wherever the command is run.
    """
    path = Path(path)
    root = Path(__file__).resolve().parent.parent
    if not path.suffix:
        path = root / "configs" / f"{path}.py"
    if not path.is_file() and not path.is_absolute() and (root / path).is_file():
        path = root / path
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    if path.suffix == ".json":  # a run's stored config (WORKDIR/config.json, a converted folder's config.json)
        config, unknown = config_from_json(path.read_text())
        if unknown:
            raise ValueError(f"config file {str(path)!r}: fields this version does not know: {unknown}")
        return apply_overrides(config, overrides)
    spec = importlib.util.spec_from_file_location(f"mirage_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    return apply_overrides(config, overrides)


# The fields that define what a trained model computes, by parameter group: a checkpoint is only meaningful with
# these values, so whatever reads a checkpoint takes them from the checkpoint's stored config.
MODEL_FIELDS = {
    "base": ("model.dim", "model.num_layers", "model.num_heads", "model.ffn_dim", "model.patch_size",
             "latent.channels", "text.dim", "model.freq_dim", "model.eps",
             "model.rope_theta"),
    "vace": ("model.vace_layers", "model.vace_in_channels", "model.score_source"),
    "lora": ("model.lora_rank", "model.lora_alpha"),
    "latent": ("latent.kind", "latent.channels", "latent.spatial_factor", "latent.vae.base_dim",
               "latent.vae.decoder_base_dim", "latent.vae.dim_mult", "latent.vae.num_res_blocks",
               "latent.vae.temporal_downsample", "latent.vae.z_dim"),
    "text": ("text.kind", "text.dim", "text.umt5.vocab_size", "text.umt5.num_layers", "text.umt5.num_heads",
             "text.umt5.head_dim", "text.umt5.ffn_dim", "text.umt5.num_buckets", "text.umt5.max_distance",
             "text.umt5.eps"),
}


# The fields a resumed training run may change (mirage_jax.train.loop checks that every other field equals the
# run's): how long it runs, how it logs and saves, where its files are, how the work is laid out on devices.
RESUME_ADJUSTABLE = frozenset({
    "name", "train.num_steps", "train.stage_steps", "train.log_every", "train.eval_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.async_checkpointing", "train.peak_tflops",
    "model.init_checkpoint", "model.attention", "model.remat_policy", "data.data_dir", "data.prefetch",
    "data.latent_cache_dir", "data.windows_per_clip", "text.cache_dir", "latent.vae.checkpoint", "text.checkpoint",
    "text.tokenizer_path",
    "latent.vae.tiled", "latent.vae.tile_hw", "latent.vae.tile_stride_hw",
    "mesh.data", "mesh.fsdp", "mesh.context", "mesh.tensor", "mesh.rules",
    *(f"sample.{name}" for name in base_config().sample),  # generation settings: training never reads them
})


def model_fields(groups=tuple(MODEL_FIELDS)) -> tuple[str, ...]:
    """The dotted model-defining fields of ``groups`` (default: all of ``MODEL_FIELDS``)."""
    return tuple(field for group in groups for field in MODEL_FIELDS[group])


def flat_fields(config: ml_collections.ConfigDict, prefix: str = "") -> dict:
    """``{"section.field": value}`` of every leaf of ``config``."""
    out = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flat_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def get_field(config: ml_collections.ConfigDict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def set_field(config: ml_collections.ConfigDict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value


def _like(value, reference):
    """``value`` (from JSON) in the type of ``reference`` (lists become tuples, ints become floats, ...)."""
    if isinstance(reference, (tuple, list)) and isinstance(value, (tuple, list)):
        inner = reference[0] if reference else None
        return tuple(_like(v, inner) if inner is not None else _tuples(v) for v in value)
    if isinstance(reference, bool) or reference is None or isinstance(value, bool):
        return value
    if isinstance(reference, float) and isinstance(value, (int, float)):
        return float(value)
    return _tuples(value)


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (tuple, list)) else value


def config_from_json(text: str) -> tuple[ml_collections.ConfigDict, list[str]]:
    """A stored config (a run's ``config.json``) as ``base_config()`` with the stored values, typed like the
    base; also returns the stored fields this version does not know (they are dropped)."""
    config = base_config()
    known = flat_fields(config)
    unknown = []
    for key, value in flat_fields(ml_collections.ConfigDict(json.loads(text))).items():
        if key in known:
            set_field(config, key, _like(value, known[key]))
        else:
            unknown.append(key)
    return config, unknown


def differences(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict, fields) -> dict:
    """``{field: (a's value, b's value)}`` for the dotted ``fields`` whose values differ."""
    out = {}
    for key in fields:
        va, vb = _tuples(get_field(a, key)), _tuples(get_field(b, key))
        if va != vb and not (isinstance(va, (int, float)) and isinstance(vb, (int, float)) and float(va) == float(vb)):
            out[key] = (va, vb)
    return out


def describe_differences(diff: dict, a_name: str, b_name: str) -> str:
    """``"model.dim: 256 (a_name) vs 64 (b_name); ..."``."""
    return "; ".join(f"{key}: {va!r} ({a_name}) vs {vb!r} ({b_name})" for key, (va, vb) in diff.items())


def layered_config(stored: ml_collections.ConfigDict, origin: str, path: str | Path | None = None,
                   overrides: Sequence[str] = ()) -> tuple[ml_collections.ConfigDict, list[str]]:
    """The config of a command that reads a checkpoint: the checkpoint's ``stored`` config, then the config file
    ``path`` on top, then ``overrides``; returns ``(config, notes)``.

    The model-defining fields (``MODEL_FIELDS``) always come from the checkpoint: where the file differs, the
    checkpoint's value is kept and a note names the field and both values; an override that changes one is a
    ``ValueError`` naming both values (a checkpoint cannot compute another model).
    """
    config = ml_collections.ConfigDict(stored.to_dict())
    notes = []
    fixed = set(model_fields())
    if path is not None:
        from_file = load_config(path)
        stored_fields = flat_fields(config)
        for key, value in flat_fields(from_file).items():
            if _tuples(value) == _tuples(stored_fields.get(key)):
                continue
            if key in fixed:
                notes.append(f"config.{key}: {origin} has {stored_fields[key]!r}, kept ({path} says {value!r})")
            else:
                set_field(config, key, value)
    apply_overrides(config, overrides)
    diff = differences(stored, config, fixed)
    if diff:
        raise ValueError(f"{origin} was made with other model settings than the overrides: "
                         f"{describe_differences(diff, origin, 'override')}; drop those overrides")
    return config, notes


OVERRIDE_PREFIX = "--config."


def accept_config_overrides(parser: argparse.ArgumentParser) -> None:
    """Makes ``parser`` collect ``--config.a.b=value`` arguments into ``args.overrides`` (for ``load_config``).

    Every command that takes ``--config`` accepts overrides the same way; other unknown arguments stay errors.
    """
    parse_known = parser.parse_known_args

    def parse_args(args=None, namespace=None):
        known, extra = parse_known(args, namespace)
        overrides = [item for item in extra if item.startswith(OVERRIDE_PREFIX)]
        unknown = [item for item in extra if not item.startswith(OVERRIDE_PREFIX)]
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        known.overrides = overrides
        return known

    parser.parse_args = parse_args
    parser.epilog = "Override any config field with --config.section.field=value."
