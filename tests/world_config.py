"""The world tests' configuration: the tiny config at 32x56 px, 17-frame chunks, 3 sampler steps."""

from mirage_jax.config import load_config

H, W = 32, 56


def tiny_world_config():
    """A fresh tiny config for fast rollouts (tests may modify it)."""
    c = load_config("tiny")
    c.data.height, c.data.width = H, W
    c.sample.steps = 3
    c.sample.chunk_frames = 17
    c.memory.capacity = 4096
    return c
