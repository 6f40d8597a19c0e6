"""A tiny model that trains in CPU minutes: the demo's and the tests' configuration.

Patchify latents (exact 4x4 pixel-unshuffle, 48 channels), no text encoder, a 2-layer DiT of width 64.
mirage-jax train --config configs/tiny.py --workdir runs/tiny
"""

from mirage_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "tiny"
    c.latent.kind = "patchify"
    c.latent.spatial_factor = 4
    c.text.kind = "none"
    c.text.dim = 32
    c.text.max_length = 8
    c.text.drop_prob = 0.0
    c.model.dim = 64
    c.model.num_layers = 2
    c.model.num_heads = 2  # head dim 32: the RoPE split (12/10/10) matches the original's
    c.model.ffn_dim = 128
    c.model.vace_layers = (0, 1)
    c.model.score_source = "hit_mask"
    c.model.lora_rank = 4
    c.model.lora_alpha = 4.0
    c.model.compute_dtype = "float32"
    c.model.remat_policy = "none"
    c.memory.capacity = 16_384
    c.memory.feature_dtype = "float32"
    c.data.height = 64
    c.data.width = 112
    c.data.clip_frames = 49
    c.data.num_clips = 32
    c.data.trajectories = ("revisit", "orbit", "pan")
    c.train.stages = ("full",)
    c.train.batch_size = 4
    c.train.lr = 1e-3
    c.train.warmup_steps = 20
    c.train.num_steps = 400
    c.train.log_every = 10
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.train.keep_checkpoints = 2
    c.sample.steps = 10
    c.mesh.fsdp = 1
    return c
