"""Wan2.2 DiT (+ Mirage VACE, + LoRA) checkpoints -> ``WanDiT`` parameters and Orbax checkpoints.

Accepted inputs (safetensors only, read tensor by tensor, bf16 included, no torch):
  * the original Wan2.2 / DiffSynth DiT (``blocks.N.self_attn.q.weight``, ...; prefixes ``model.diffusion_model.``,
    ``diffusion_model.``, ``pipe.dit.`` are stripped),
  * diffusers ``save_pretrained`` folders of ``WanTransformer3DModel`` / ``WanVACETransformer3DModel``
    (renamed to original names: the table in docs/design.md §9),
  * the official Mirage VACE (``vace_blocks.*``, ``vace_patch_embedding.*``) and LoRA
    (``pipe.dit.blocks.N.{self_attn|cross_attn}.{q,k,v,o}|ffn.{0,2}.lora_{A,B}.weight``; PEFT's ``.default``
    is accepted). LoRA scaling is ``config.model.lora_alpha / lora_rank`` (official: 32/32 = 1.0).

Strictness: every tensor of the inputs must map to a model parameter (else "unexpected keys" error), shapes
must match (error listing them), and every parameter of the base DiT must be present. The VACE group and the
LoRA group must each be either complete or entirely absent (absent: freshly initialised with ``--seed``, e.g.
to train VACE from scratch); partially present is a "missing keys" error.

CLI: ``mirage-jax convert dit --input FILE_OR_DIR [--input ...] --config CFG --out DIR`` writes an Orbax
checkpoint of the model state with the config it was made with (``save_converted``); ``generate``, ``eval``,
``plan`` and ``train --config.model.init_checkpoint=DIR`` load it through ``mirage_jax.checkpoints``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mirage_jax.config import accept_config_overrides
from mirage_jax.convert.safetensors_io import open_checkpoint
from mirage_jax.convert.weights_check import check_weight

_PREFIXES = ("pipe.dit.", "model.diffusion_model.", "diffusion_model.", "dit.")

# diffusers name -> original name (regex, replacement), applied in order (docs/design.md §9)
_DIFFUSERS_TO_ORIGINAL = [
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^proj_out\.", "head.head."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^((?:vace_)?blocks\.\d+)\.scale_shift_table$", r"\1.modulation"),
    (r"\.attn1\.to_out\.0\.", ".self_attn.o."),
    (r"\.attn2\.to_out\.0\.", ".cross_attn.o."),
    (r"\.attn1\.to_([qkv])\.", r".self_attn.\1."),
    (r"\.attn2\.to_([qkv])\.", r".cross_attn.\1."),
    (r"\.attn1\.norm_([qk])\.", r".self_attn.norm_\1."),
    (r"\.attn2\.norm_([qk])\.", r".cross_attn.norm_\1."),
    (r"^((?:vace_)?blocks\.\d+)\.norm2\.", r"\1.norm3."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
    (r"^vace_blocks\.0\.proj_in\.", "vace_blocks.0.before_proj."),
    (r"^(vace_blocks\.\d+)\.proj_out\.", r"\1.after_proj."),
]

# our module names -> original names
_TOP = {
    "patch_embedding": "patch_embedding", "text_embedding_1": "text_embedding.0",
    "text_embedding_2": "text_embedding.2", "time_embedding_1": "time_embedding.0",
    "time_embedding_2": "time_embedding.2", "time_projection": "time_projection.1", "head": "head.head",
    "head_modulation": "head.modulation", "vace/patch_embedding": "vace_patch_embedding",
    "vace/before_proj": "vace_blocks.0.before_proj",
}
_BLOCK = {"cross_norm": "norm3", "ffn_in": "ffn.0", "ffn_out": "ffn.2"}
_LEAF = {"kernel": "weight", "bias": "bias", "scale": "weight", "lora_a": "lora_A.weight", "lora_b": "lora_B.weight"}


def canonical_name(key: str) -> str:
    """The original (Wan/DiffSynth) name of a checkpoint key in original, prefixed, PEFT or diffusers naming."""
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    key = key.replace(".default.", ".")
    for pattern, repl in _DIFFUSERS_TO_ORIGINAL:
        key = re.sub(pattern, repl, key)
    return key


def _source_names(path: tuple[str, ...], num_layers: int) -> list[str]:
    """Original names feeding one of our parameters (one per layer for stacked parameters)."""
    parts = [str(p) for p in path]
    if parts[0] == "blocks" or parts[:2] == ["vace", "blocks"]:
        stem = "blocks" if parts[0] == "blocks" else "vace_blocks"
        rest = parts[1:] if parts[0] == "blocks" else parts[2:]
        if rest == ["modulation"]:
            return [f"{stem}.{i}.modulation" for i in range(num_layers)]
        module = ".".join([_BLOCK.get(rest[0], rest[0]), *rest[1:-1]])
        return [f"{stem}.{i}.{module}.{_LEAF[rest[-1]]}" for i in range(num_layers)]
    if parts == ["head_modulation"]:
        return ["head.modulation"]
    return [f"{_TOP['/'.join(parts[:-1])]}.{_LEAF[parts[-1]]}"]


def _to_ours(name: str, array: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
    """Torch layout -> ours: Linear (out,in) -> (in,out), Conv3d (O,I,kt,kh,kw) -> (kt*kh*kw*I, O), tables
    (1,k,D) -> (k,D), LoRA A (r,in) -> (in,r), B (out,r) -> (r,out)."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 5:
        a = a.transpose(2, 3, 4, 1, 0).reshape(-1, a.shape[0])
    elif a.ndim == 2 and not name.endswith("modulation"):
        a = a.T
    elif name.endswith("modulation"):
        a = a.reshape(a.shape[-2:])
    if a.shape != tuple(target_shape):
        raise ValueError(f"shape mismatch for {name}: checkpoint {array.shape} -> {a.shape}, model {target_shape}")
    return a


def to_torch(name: str, array: np.ndarray, patch_size: tuple[int, int, int]) -> np.ndarray:
    """Inverse of ``_to_ours``: our layout -> the original torch layout of ``name`` (patch embeddings are
    Conv3d ``(O, I, pt, ph, pw)``, modulation tables ``(1, k, D)``, Linear and LoRA factors transposed)."""
    a = np.asarray(array)
    if name.endswith("patch_embedding.weight"):
        pt, ph, pw = patch_size
        return a.reshape(pt, ph, pw, -1, a.shape[-1]).transpose(4, 3, 0, 1, 2)
    if name.endswith("modulation"):
        return a[None]
    return a.T if a.ndim == 2 else a


def original_group(name: str) -> str:
    """The parameter group (``base``, ``vace``, ``lora``) of an original name."""
    return "lora" if ".lora_" in name else "vace" if name.startswith("vace_") else "base"


def read_sources(inputs) -> dict:
    """{original name: (file, key)} over all input files/folders; a name given twice is an error."""
    table: dict = {}
    for item in inputs:
        for key, st in open_checkpoint(item).items():
            name = canonical_name(key)
            if name in table:
                raise ValueError(f"{key!r} in {st.path} maps to {name!r}, which is also in {table[name][0].path}")
            table[name] = (st, key)
    return table


def parameter_plan(state) -> list[tuple[tuple, nnx.Variable, list[str], bool]]:
    """``[(path, variable, original names, stacked)]`` for every variable of a ``WanDiT`` state: the original
    (Wan/DiffSynth/Mirage) name of each parameter, one per layer for the stacked (scanned) ones."""
    plan = []
    for path, var in nnx.to_flat_state(state):
        stacked = path[0] == "blocks" or tuple(path[:2]) == ("vace", "blocks")
        plan.append((tuple(path), var, _source_names(tuple(path), var.shape[0] if stacked else 1), stacked))
    return plan


def _match(state, sources: dict):
    """Checks ``sources`` against the model ``state``; returns (plan, present groups, all groups). Reads no data."""
    wanted: dict[str, list] = {}
    plan = [(var, names, stacked) for _, var, names, stacked in parameter_plan(state)]
    for _, names, _ in plan:
        for n in names:
            wanted.setdefault(original_group(n), []).append(n)
    unexpected = sorted(set(sources) - {n for names in wanted.values() for n in names})
    if unexpected:
        raise ValueError(f"unexpected keys (not parameters of this model config): {unexpected[:50]}"
                         f"{' ...' if len(unexpected) > 50 else ''} ({len(unexpected)} total)")
    present = {g for g, names in wanted.items() if any(n in sources for n in names)}
    if "base" not in present and wanted.get("base"):
        raise ValueError("no DiT base weights in the inputs (expected e.g. 'blocks.0.self_attn.q.weight')")
    missing = sorted(n for g in present for n in wanted[g] if n not in sources)
    if missing:
        raise ValueError(f"missing keys: {missing[:50]}{' ...' if len(missing) > 50 else ''} ({len(missing)} total)")
    return plan, present, set(wanted)


def _weight(sources: dict, name: str) -> np.ndarray:
    """The tensor ``name`` of the inputs, refused unless it is floating point and finite."""
    file, key = sources[name]
    value = file[key]
    check_weight(value, key, str(file.path))
    return value


def _assign(plan, present, sources, put) -> None:
    """Sets every variable of the present groups to its converted tensor(s) via ``put(value, variable)``."""
    for var, names, stacked in plan:
        if original_group(names[0]) not in present:
            continue
        target = var.shape[1:] if stacked else var.shape
        arrays = [_to_ours(n, _weight(sources, n), target) for n in names]
        var.set_value(put(np.stack(arrays) if stacked else arrays[0], var))


def _check_lora_scale(sources: dict, scale: float | None) -> None:
    """A LoRA file that states its ``lora_rank``/``lora_alpha`` (``mirage-jax export`` writes them) must have
    the multiplier ``alpha / rank`` of the model it is loaded into."""
    for st in {id(st): st for st, _ in sources.values()}.values():
        if scale is None or not {"lora_rank", "lora_alpha"} <= set(st.metadata):
            continue
        stated = float(st.metadata["lora_alpha"]) / int(st.metadata["lora_rank"])
        if not np.isclose(stated, scale, rtol=1e-12, atol=0):
            raise ValueError(f"{st.path}: LoRA trained with lora_alpha/lora_rank = {st.metadata['lora_alpha']}/"
                             f"{st.metadata['lora_rank']} = {stated:g}, but config.model.lora_alpha/lora_rank "
                             f"gives {scale:g}")


def load_weights(model: nnx.Module, inputs, lora_scale: float | None = None) -> dict[str, list[str]]:
    """Loads checkpoint ``inputs`` (files/folders) into ``model`` in place (strict, see module docstring).

    ``lora_scale`` (the model's ``lora_alpha / lora_rank``) is checked against LoRA files that state theirs.
    Returns ``{"loaded": groups, "initialised": groups}`` of the groups ("base", "vace", "lora").
    """
    sources = read_sources(inputs)
    _check_lora_scale(sources, lora_scale)
    state = nnx.state(model)
    plan, present, groups = _match(state, sources)
    _assign(plan, present, sources,
            lambda value, var: jax.device_put(jnp.asarray(value, var.dtype), var[...].sharding))
    nnx.update(model, state)
    return {"loaded": sorted(present), "initialised": sorted(groups - present)}


def load_model(config, inputs, seed: int = 0):
    """``(WanDiT of config with the weights of inputs, groups)``; random initialisation (``build_model``) runs
    only when a group (VACE or LoRA) is absent from the inputs."""
    from mirage_jax.models import DiTSettings, WanDiT, build_model

    settings = DiTSettings.from_config(config)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: WanDiT(settings, rngs=nnx.Rngs(0))))
    sources = read_sources(inputs)
    scale = settings.lora_alpha / settings.lora_rank if settings.lora_rank else None
    _check_lora_scale(sources, scale)
    plan, present, groups = _match(state, sources)
    if groups - present:
        model = build_model(config, seed=seed)
        return model, load_weights(model, inputs, scale)
    _assign(plan, present, sources, lambda value, var: jnp.asarray(value, var.dtype))
    return nnx.merge(graphdef, state), {"loaded": sorted(present), "initialised": []}


# WanTransformer3DModel / WanVACETransformer3DModel config.json: fields read into our config, and fields whose
# value must be the one given (the I2V-14B image branch and learned position embeddings are not implemented)
_DIFFUSERS_DIT_READ = ("patch_size", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
                       "text_dim", "freq_dim", "ffn_dim", "num_layers", "eps", "rope_max_seq_len", "vace_layers",
                       "vace_in_channels")
_DIFFUSERS_DIT_FIXED = {"cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "image_dim": None,
                        "added_kv_proj_dim": None, "pos_embed_seq_len": None}


def config_from_diffusers(config_json: dict):
    """Our config (``base_config()`` with the model section from a diffusers ``config.json``), fp32 compute."""
    from mirage_jax.config import base_config

    known = set(_DIFFUSERS_DIT_READ) | set(_DIFFUSERS_DIT_FIXED)
    unknown = sorted(k for k in config_json if not k.startswith("_") and k not in known)
    if unknown:
        raise ValueError(f"diffusers config: fields this implementation does not support: {unknown}")
    for key, supported in _DIFFUSERS_DIT_FIXED.items():
        if config_json.get(key, supported) != supported:
            raise ValueError(f"diffusers config: {key}={config_json[key]!r} is not supported (expected {supported!r})")
    if int(config_json.get("rope_max_seq_len", 1024)) < 1024:
        raise ValueError("diffusers config: rope_max_seq_len < 1024 is not supported (RoPE tables cover 1024)")
    c = base_config()
    m = c.model
    m.num_heads = int(config_json["num_attention_heads"])
    m.dim = m.num_heads * int(config_json["attention_head_dim"])
    m.num_layers = int(config_json["num_layers"])
    m.ffn_dim = int(config_json["ffn_dim"])
    m.patch_size = tuple(int(p) for p in config_json["patch_size"])
    channels = int(config_json["in_channels"])
    if int(config_json.get("out_channels") or channels) != channels:
        raise ValueError("diffusers config: out_channels != in_channels is not supported (a latent space in and out)")
    m.freq_dim = int(config_json["freq_dim"])
    m.eps = float(config_json["eps"])
    m.vace_layers = tuple(int(v) for v in config_json.get("vace_layers") or ())
    m.vace_in_channels = int(config_json.get("vace_in_channels") or m.vace_in_channels)
    m.lora_rank = 0
    m.compute_dtype = "float32"
    c.text.dim = int(config_json["text_dim"])
    c.latent.channels = channels
    return c


def from_diffusers(folder: str | Path):
    """A diffusers ``WanTransformer3DModel``/``WanVACETransformer3DModel`` folder -> ``(WanDiT, config)``."""
    folder = Path(folder)
    config = config_from_diffusers(json.loads((folder / "config.json").read_text()))
    return load_model(config, [folder])[0], config


CONVERTED_FILE = "converted.json"  # marks a `convert dit` folder: inputs, loaded and initialised groups


def save_converted(model: nnx.Module, config, out: str | Path, groups: dict, inputs) -> Path:
    """Writes ``out/state`` (Orbax, the model state), ``out/config.json`` (the config it was made with) and
    ``out/converted.json`` (inputs, parameter groups loaded and freshly initialised); atomically (nothing under
    ``out`` until complete). ``mirage_jax.checkpoints`` loads the folder back."""
    import orbax.checkpoint as ocp

    from mirage_jax.output_dirs import new_output_dir

    with new_output_dir(out) as staging:
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(staging / "state", nnx.state(model))
        (staging / "config.json").write_text(config.to_json_best_effort(indent=2))
        record = {"inputs": [str(Path(i).absolute()) for i in inputs], **groups}
        (staging / CONVERTED_FILE).write_text(json.dumps(record, indent=2))
    return Path(out).absolute()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", action="append", required=True,
                        help="safetensors file or folder (repeatable: base DiT, VACE, LoRA, diffusers folder)")
    parser.add_argument("--config", required=True, help="config file (e.g. configs/wan22_ti2v_5b.py)")
    parser.add_argument("--out", required=True, help="output directory (Orbax checkpoint)")
    parser.add_argument("--seed", type=int, default=0, help="seed for groups absent from the inputs (VACE/LoRA)")
    accept_config_overrides(parser)


def run(args: argparse.Namespace) -> int:
    from mirage_jax.config import load_config
    from mirage_jax.config_checks import validate_config
    from mirage_jax.output_dirs import check_new_output

    config = load_config(args.config, args.overrides)
    validate_config(config)
    check_new_output(args.out, "--out")
    model, groups = load_model(config, args.input, seed=args.seed)
    out = save_converted(model, config, args.out, groups, args.input)
    print(f"loaded {groups['loaded']}, freshly initialised {groups['initialised']}; wrote {out}")
    return 0
