"""mirage_jax: a camera-controlled video world model with a latent spatial memory, in JAX/Flax.

Subpackages: ``memory`` (the latent spatial memory), ``geometry`` (camera conventions), ``data``
(procedural worlds, datasets, Grain pipeline), ``models`` (Wan2.2 DiT + VACE + LoRA, VAE, umT5),
``sampling`` (flow-matching samplers), ``world`` (chunked rollout and evaluation), ``train``.
"""

__version__ = "0.1.0"
