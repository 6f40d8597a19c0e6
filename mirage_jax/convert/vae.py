"""Wan2.2 VAE checkpoints → :class:`mirage_jax.models.vae.WanVAE` → Orbax.

Sources: the official ``Wan2.2_VAE.pth`` (read with ``torch.load(weights_only=True)``, only if torch is
importable; otherwise convert it to safetensors first), a safetensors file with original or diffusers names,
or a diffusers ``AutoencoderKLWan`` folder. Loading is strict: missing keys, unexpected keys and shape
mismatches are all listed in one ``ValueError``.

``mirage-jax convert vae --source Wan2.2_VAE.pth --out ckpt/vae`` writes ``ckpt/vae/state`` (Orbax) and
``ckpt/vae/vae_config.json``; ``mirage_jax.models.vae.load(dir)`` reads it back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from mirage_jax.convert.torch_io import load_strict, read_state
from mirage_jax.models.vae import WanVAE, save
from mirage_jax.models.vae.model import VAEConfig


def original_to_diffusers(key: str, num_res_blocks: int = 2) -> str:
    """Renames one original (``Wan2.2_VAE.pth``) key to its diffusers ``AutoencoderKLWan`` name."""
    key = key.removeprefix("model.")  # DiffSynth wrapper prefix
    rules = [
        (r"^conv1\.", "quant_conv."),
        (r"^conv2\.", "post_quant_conv."),
        (r"^(encoder|decoder)\.conv1\.", r"\1.conv_in."),
        (r"^(encoder|decoder)\.head\.0\.", r"\1.norm_out."),
        (r"^(encoder|decoder)\.head\.2\.", r"\1.conv_out."),
        (r"\.middle\.0\.", ".mid_block.resnets.0."),
        (r"\.middle\.2\.", ".mid_block.resnets.1."),
        (r"\.middle\.1\.", ".mid_block.attentions.0."),
        (rf"^encoder\.downsamples\.(\d+)\.downsamples\.{num_res_blocks}\.", r"encoder.down_blocks.\1.downsampler."),
        (r"^encoder\.downsamples\.(\d+)\.downsamples\.(\d+)\.", r"encoder.down_blocks.\1.resnets.\2."),
        (rf"^decoder\.upsamples\.(\d+)\.upsamples\.{num_res_blocks + 1}\.", r"decoder.up_blocks.\1.upsampler."),
        (r"^decoder\.upsamples\.(\d+)\.upsamples\.(\d+)\.", r"decoder.up_blocks.\1.resnets.\2."),
        (r"\.residual\.0\.", ".norm1."),
        (r"\.residual\.2\.", ".conv1."),
        (r"\.residual\.3\.", ".norm2."),
        (r"\.residual\.6\.", ".conv2."),
        (r"\.shortcut\.", ".conv_shortcut."),
    ]
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def diffusers_to_path(key: str) -> tuple:
    """A diffusers key → our NNX state path (``resample.1`` → ``resample``, ``weight`` → ``kernel``)."""
    parts = key.split(".")
    out: list = []
    for i, part in enumerate(parts):
        if part == "1" and i > 0 and parts[i - 1] == "resample":
            continue
        out.append(int(part) if part.isdigit() else ("kernel" if part == "weight" else part))
    return tuple(out)


def to_flax_layout(value: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
    """Torch conv/linear/gamma layout → ours, decided by the target rank (5: conv3d, 4: conv2d, 2: 1×1, 1)."""
    value = np.asarray(value, np.float32)
    if len(target_shape) == 5:
        return value.transpose(2, 3, 4, 1, 0)
    if len(target_shape) == 4:
        return value.transpose(2, 3, 1, 0)
    if len(target_shape) == 2:
        return value.reshape(value.shape[0], -1).T
    return value.reshape(-1)


def load_into(vae: WanVAE, tensors: Iterable[tuple[str, np.ndarray]], *, original_names: bool) -> WanVAE:
    """Strictly loads ``(name, torch-layout array)`` pairs (original or diffusers names) into ``vae``."""

    def to_path(name: str) -> tuple:
        return diffusers_to_path(original_to_diffusers(name, vae.cfg.num_res_blocks) if original_names else name)

    return load_strict(vae, tensors, to_path, to_flax_layout, "VAE")


def read_tensors(source: str | Path) -> tuple[dict[str, np.ndarray], bool]:
    """All tensors of a VAE ``.pth`` / safetensors file / diffusers folder, and whether names are original."""
    source = Path(source)
    if source.is_dir() and (source / "diffusion_pytorch_model.safetensors").exists():
        source = source / "diffusion_pytorch_model.safetensors"
    tensors = read_state(source)
    original = any(k.removeprefix("model.").startswith(("encoder.downsamples", "decoder.upsamples")) for k in tensors)
    return tensors, original


# AutoencoderKLWan config.json fields and what this implementation supports (None: any value)
_DIFFUSERS_VAE_FIELDS = {
    "base_dim": None, "decoder_base_dim": None, "z_dim": None, "dim_mult": None, "num_res_blocks": None,
    "temperal_downsample": None, "latents_mean": None, "latents_std": None,
    "dropout": None,  # inactive at inference
    "attn_scales": [],  # no attention inside the down/up blocks (the Wan2.2 layout)
    "is_residual": True, "patch_size": 2, "in_channels": 12, "out_channels": 12, "scale_factor_temporal": 4,
    "scale_factor_spatial": None,  # checked against dim_mult below
}


def config_from_diffusers(config: Mapping, source: str = "AutoencoderKLWan config") -> VAEConfig:
    """``VAEConfig`` (sizes and the folder's own ``latents_mean`` / ``latents_std``) from a diffusers
    ``AutoencoderKLWan`` ``config.json``; fields or values this implementation does not support are refused."""
    unknown = sorted(k for k in config if not k.startswith("_") and k not in _DIFFUSERS_VAE_FIELDS)
    if unknown:
        raise ValueError(f"{source}: fields this implementation does not support: {unknown}")
    for key, supported in _DIFFUSERS_VAE_FIELDS.items():
        if supported is not None and config.get(key) != supported:
            raise ValueError(f"{source}: {key}={config.get(key)!r} is not supported (the Wan2.2 layout has "
                             f"{supported!r})")
    dim_mult = tuple(config.get("dim_mult", (1, 2, 4, 4)))
    spatial = config.get("scale_factor_spatial")
    if spatial is not None and spatial != 2 * 2 ** (len(dim_mult) - 1):
        raise ValueError(f"{source}: scale_factor_spatial={spatial} but dim_mult {list(dim_mult)} gives "
                         f"{2 * 2 ** (len(dim_mult) - 1)}")
    if config.get("latents_mean") is None or config.get("latents_std") is None:
        raise ValueError(f"{source}: latents_mean and latents_std are required (the latent normalisation)")
    base = config.get("base_dim", 96)
    return VAEConfig(
        base_dim=base,
        decoder_base_dim=config.get("decoder_base_dim") or base,
        z_dim=config.get("z_dim", 16),
        dim_mult=dim_mult,
        num_res_blocks=config.get("num_res_blocks", 2),
        temporal_downsample=tuple(config.get("temperal_downsample", (False, True, True))),
        latents_mean=tuple(float(v) for v in config["latents_mean"]),
        latents_std=tuple(float(v) for v in config["latents_std"]),
    )


def from_diffusers(folder: str | Path) -> tuple[WanVAE, VAEConfig]:
    """A diffusers ``AutoencoderKLWan`` folder → ``(WanVAE, VAEConfig)`` with ``encode``/``decode``."""
    folder = Path(folder)
    cfg = config_from_diffusers(json.loads((folder / "config.json").read_text()), str(folder / "config.json"))
    tensors, original = read_tensors(folder)
    return load_into(WanVAE(cfg), tensors.items(), original_names=original), cfg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="Wan2.2_VAE.pth, a .safetensors file, or a diffusers folder")
    parser.add_argument("--out", required=True, help="output directory (Orbax state + vae_config.json)")
    parser.add_argument("--base-dim", type=int, default=160)
    parser.add_argument("--decoder-base-dim", type=int, default=256)
    parser.add_argument("--z-dim", type=int, default=48)


def run(args: argparse.Namespace) -> int:
    from mirage_jax.output_dirs import check_new_output

    source = Path(args.source)
    check_new_output(args.out, "--out")
    if source.is_dir():
        vae, cfg = from_diffusers(source)
    else:  # the official .pth / a safetensors copy: sizes from the flags, the built-in Wan2.2 statistics
        cfg = VAEConfig(base_dim=args.base_dim, decoder_base_dim=args.decoder_base_dim, z_dim=args.z_dim)
        tensors, original = read_tensors(source)
        vae = load_into(WanVAE(cfg), tensors.items(), original_names=original)
    save(vae, args.out)
    stats = "the folder's" if cfg.latents_mean is not None else "the built-in Wan2.2"
    sizes = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg.architecture()).items() if v is not None)
    print(f"wrote {args.out}: Wan2.2 VAE ({sizes}) with {stats} latent statistics")
    return 0
