"""The Wan2.2 video VAE in Flax NNX (channels-last): model, Orbax save/load, tiling.

``WanVAE(VAEConfig(...), rngs=...)``: ``encode(video) -> normalised latents``, ``decode(latents) -> video``
(:mod:`mirage_jax.models.vae.model`); ``decode_tiled`` / ``encode_tiled`` (:mod:`.tiling`); ``save(vae, dir)``,
``load(dir)``, ``load_or_init(config.latent.vae)``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from flax import nnx

from mirage_jax.models.vae.model import VAEConfig, WanVAE

__all__ = ["VAEConfig", "WanVAE", "load", "load_or_init", "save"]


def save(vae: WanVAE, directory: str | Path) -> None:
    """Writes ``directory/state`` (Orbax, the parameters) and ``directory/vae_config.json``."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vae_config.json").write_text(json.dumps(dataclasses.asdict(vae.cfg)))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(directory / "state", nnx.state(vae, nnx.Param), force=True)


def load(directory: str | Path) -> WanVAE:
    """Reads a directory written by :func:`save` (e.g. by ``mirage-jax convert vae``)."""
    import orbax.checkpoint as ocp  # noqa: PLC0415

    directory = Path(directory).resolve()
    if not (directory / "vae_config.json").is_file():
        raise ValueError(f"config.latent.vae.checkpoint: {str(directory)!r} has no vae_config.json")
    raw = json.loads((directory / "vae_config.json").read_text())
    cfg = VAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    vae = nnx.eval_shape(lambda: WanVAE(cfg, rngs=nnx.Rngs(0)))
    graphdef, abstract = nnx.split(vae, nnx.Param)
    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(directory / "state", abstract)
    return nnx.merge(graphdef, state)


def load_or_init(vae_config, seed: int = 0) -> WanVAE:
    """``config.latent.vae`` → the converted checkpoint if ``checkpoint`` is set, else random init (sizes checked)."""
    cfg = VAEConfig.from_config(vae_config)
    if not vae_config.checkpoint:
        return WanVAE(cfg, rngs=nnx.Rngs(seed))
    vae = load(vae_config.checkpoint)
    if vae.cfg != cfg:
        raise ValueError(f"config.latent.vae sizes {cfg} differ from the checkpoint's {vae.cfg}")
    return vae
