"""A small model for single-GPU experiments and benchmarks: 8 layers of width 512, patchify latents.

mirage-jax train --config configs/small.py --workdir runs/small
"""

from mirage_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "small"
    c.latent.kind = "patchify"
    c.latent.spatial_factor = 4
    c.text.kind = "none"
    c.text.dim = 256
    c.text.max_length = 32
    c.model.dim = 512
    c.model.num_layers = 8
    c.model.num_heads = 4  # head dim 128
    c.model.ffn_dim = 2048
    c.model.vace_layers = (0, 2, 4, 6)
    c.model.score_source = "hit_mask"
    c.model.lora_rank = 16
    c.model.lora_alpha = 16.0
    c.memory.capacity = 65_536
    c.memory.feature_dtype = "float32"
    c.data.height = 128
    c.data.width = 224
    c.data.clip_frames = 49
    c.data.num_clips = 256
    c.train.stages = ("vace",)
    c.train.batch_size = 8
    c.train.lr = 3e-4
    c.train.warmup_steps = 100
    c.train.num_steps = 20_000
    c.train.checkpoint_every = 500
    c.train.eval_every = 500
    return c
