"""The Wan2.2 video VAE in Flax NNX (channels-last): model, Orbax save/load, tiling.

``WanVAE(VAEConfig(...), seed)``: ``encode(video) -> normalised latents``, ``decode(latents) -> video``
(:mod:`mirage_jax.models.vae.model`); ``decode_tiled`` / ``encode_tiled`` (:mod:`.tiling`); ``save(vae, dir)``,
``load(dir)``, ``load_or_init(config.latent.vae)``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from flax import nnx

from mirage_jax.models.vae.model import VAEConfig, WanVAE

__all__ = ["VAEConfig", "WanVAE", "load", "load_or_init", "read_config", "restore_params", "save", "save_params"]


def save_params(module: nnx.Module, directory: str | Path, config: dict, config_name: str) -> None:
    """Writes ``directory/state`` (Orbax, the module's ``nnx.Param`` state) and ``directory/<config_name>``,
    atomically into a new (or empty) folder."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    from mirage_jax.output_dirs import new_output_dir  # noqa: PLC0415

    with new_output_dir(directory) as staging:
        (staging / config_name).write_text(json.dumps(config))
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(staging / "state", nnx.state(module, nnx.Param))


def read_config(directory: str | Path, config_name: str, field: str) -> dict:
    """The JSON config written by :func:`save_params` (lists turned to tuples); ``field`` names the setting."""
    path = Path(directory).resolve() / config_name
    if not path.is_file():
        raise ValueError(f"{field}: {str(path.parent)!r} has no {config_name} (write one with mirage-jax convert)")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(path.read_text()).items()}


def restore_params(abstract: nnx.Module, directory: str | Path) -> nnx.Module:
    """Restores ``directory/state`` into a module built with abstract (``ShapeDtypeStruct``) parameters."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    graphdef, state = nnx.split(abstract, nnx.Param)
    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(Path(directory).resolve() / "state", state)
    return nnx.merge(graphdef, state)


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
