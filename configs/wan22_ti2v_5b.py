"""The real sizes: Wan2.2-TI2V-5B DiT + 15-block Mirage VACE + rank-32 LoRA, Wan2.2 VAE, umT5-XXL.

Train:  mirage-jax train --config configs/wan22_ti2v_5b.py --workdir gs://.../run --config.data.data_dir=...
Plan:   mirage-jax plan --config configs/wan22_ti2v_5b.py --mesh fsdp=8,tensor=1
"""

from mirage_jax.config import base_config


def get_config():
    c = base_config()
    c.name = "wan22_ti2v_5b"
    return c
