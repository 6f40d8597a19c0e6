"""The real component kinds at a size CI trains in minutes: the path a lab takes, shrunk.

Wan2.2 VAE latents (the Wan2.2 layout: 2x2 patchify, 16x space / 4x time, 48 channels; base dims 16/32 instead
of 160/256), a umT5 text encoder (2 layers of width 32) with the word-level tokenizer of the procedural
captions (``configs/tiny_wan_tokenizer.json``), the official constant "score" latent in the VACE control, and
the Mirage recipe: stage ``vace`` (the DiT frozen), then stage ``lora`` (VACE frozen), LoRA alpha != rank.

Without converted weights the VAE and umT5 are randomly initialised (``latent.vae.checkpoint=""``,
``text.checkpoint="random"``); point them at ``mirage-jax convert vae|umt5`` outputs, and start the DiT from
a converted one, exactly as with the real sizes::

    mirage-jax train --config configs/tiny_wan.py --workdir runs/tiny_wan \\
        --config.model.init_checkpoint=ckpt/dit --config.latent.vae.checkpoint=ckpt/vae \\
        --config.text.checkpoint=ckpt/umt5 --config.text.tokenizer_path=tokenizer.json
"""

from pathlib import Path

from mirage_jax.config import load_config


def get_config():
    c = load_config("tiny")  # the tiny DiT sizes (width 64, 2 layers, 2 heads of 32), fp32, one device
    c.name = "tiny_wan"
    c.latent.kind = "wan_vae"
    c.latent.spatial_factor = 16
    c.latent.vae.base_dim = 16
    c.latent.vae.decoder_base_dim = 32
    c.latent.vae.checkpoint = ""  # random VAE weights unless converted ones are given
    c.text.kind = "umt5"
    c.text.checkpoint = "random"
    c.text.tokenizer_path = str(Path(__file__).resolve().parent / "tiny_wan_tokenizer.json")
    c.text.max_length = 48
    c.text.drop_prob = 0.1
    c.text.umt5.vocab_size = 425  # the tokenizer's vocabulary
    c.text.umt5.num_layers = 2
    c.text.umt5.num_heads = 4
    c.text.umt5.head_dim = 8
    c.text.umt5.ffn_dim = 48
    c.model.vace_layers = (0,)
    c.model.score_source = "constant"
    c.model.lora_alpha = 8.0  # != lora_rank (4): the LoRA multiplier is 2
    c.memory.capacity = 4096
    c.data.height = 64
    c.data.width = 96
    c.data.num_clips = 8
    c.train.stages = ("vace", "lora")
    c.train.stage_steps = (60, 60)
    c.train.batch_size = 2
    c.train.warmup_steps = 10
    c.train.eval_every = 60
    c.train.eval_batches = 1
    c.train.checkpoint_every = 60
    c.sample.steps = 8
    return c
