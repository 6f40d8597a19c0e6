"""The Wan2.2 video VAE in Flax NNX (channels-last): model, Orbax save/load, tiling.

``WanVAE(VAEConfig(...), seed)``: ``encode(video) -> normalised latents``, ``decode(latents) -> video``
(:mod:`mirage_jax.models.vae.model`); ``decode_tiled`` / ``encode_tiled`` (:mod:`.tiling`); ``save(vae, dir)``,
``load(dir)``, ``load_or_init(config.latent.vae)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mirage_jax.models.params_io import read_config, restore_params, save_params
from mirage_jax.models.vae.model import VAEConfig, WanVAE

__all__ = ["VAEConfig", "WanVAE", "load", "load_or_init", "save"]


def save(vae: WanVAE, directory: str | Path) -> None:
    """Writes ``directory/state`` (Orbax) and ``directory/vae_config.json``."""
    save_params(vae, directory, dataclasses.asdict(vae.cfg), "vae_config.json")


def load(directory: str | Path, compute_dtype: str = "float32") -> WanVAE:
    """Reads a directory written by :func:`save` (e.g. by ``mirage-jax convert vae``)."""
    cfg = VAEConfig(**read_config(directory, "vae_config.json", "config.latent.vae.checkpoint"))
    return restore_params(WanVAE(cfg, seed=None, compute_dtype=compute_dtype), directory)


def load_or_init(vae_config, seed: int = 0) -> WanVAE:
    """``config.latent.vae`` → the converted checkpoint if ``checkpoint`` is set (its sizes checked against the
    config; its latent statistics are the checkpoint's), else random init with the default statistics; both
    computing in ``compute_dtype``."""
    cfg = VAEConfig.from_config(vae_config)
    if not vae_config.checkpoint:
        return WanVAE(cfg, seed, compute_dtype=vae_config.compute_dtype)
    vae = load(vae_config.checkpoint, vae_config.compute_dtype)
    if vae.cfg.architecture() != cfg:
        raise ValueError(f"config.latent.vae sizes {cfg} differ from the checkpoint's {vae.cfg.architecture()} "
                         f"({vae_config.checkpoint})")
    return vae
