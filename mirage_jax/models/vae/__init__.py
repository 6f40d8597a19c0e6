"""The Wan2.2 video VAE in Flax NNX (channels-last); see :mod:`mirage_jax.models.vae.model`."""
