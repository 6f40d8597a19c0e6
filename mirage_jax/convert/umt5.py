"""umT5 encoder checkpoints → :class:`mirage_jax.models.umt5.UMT5Encoder` → Orbax.

Sources: the original Wan file (``models_t5_umt5-xxl-enc-bf16.pth`` via ``torch.load(weights_only=True)``, or
the same converted to safetensors) or transformers' ``UMT5EncoderModel`` safetensors (``encoder.block.i...``;
``shared.weight`` / ``encoder.embed_tokens.weight``). Strict: missing/unexpected/mismatched names listed.

``mirage-jax convert umt5 --source enc.safetensors --out ckpt/umt5`` (sizes inferred from the tensors).
"""

from __future__ import annotations

import argparse
import re

import numpy as np

from mirage_jax.convert.torch_io import load_strict, read_state
from mirage_jax.models.umt5 import UMT5Config, UMT5Encoder, save

_HF_RULES = [
    (r"^(shared|encoder\.embed_tokens)\.weight$", "token_embedding.weight"),
    (
        r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.",
        r"blocks.\1.pos_embedding.embedding.",
    ),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.", r"blocks.\1.attn."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"blocks.\1.norm1."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.", r"blocks.\1.ffn.gate.0."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.", r"blocks.\1.ffn.fc1."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.", r"blocks.\1.ffn.fc2."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"blocks.\1.norm2."),
    (r"^encoder\.final_layer_norm\.", "norm."),
]


def to_original(name: str) -> str:
    """A transformers ``UMT5EncoderModel`` name → the original Wan T5 name (original names pass through)."""
    for pattern, repl in _HF_RULES:
        name = re.sub(pattern, repl, name)
    return name


_LINEAR = re.compile(r"\.(q|k|v|o|gate|fc1|fc2)\.weight$")


def original_to_path(name: str) -> tuple:
    """A name → our NNX state path (``ffn.gate.0`` → ``ffn.gate``, linear ``weight`` → ``kernel``)."""
    name = re.sub(r"\.gate\.0\.", ".gate.", to_original(name))
    name = re.sub(r"^token_embedding\.weight$", "token_embedding.embedding", name)
    name = re.sub(r"\.pos_embedding\.embedding\.weight$", ".pos_embedding.embedding", name)
    name = _LINEAR.sub(r".\1.kernel", name)
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


def to_flax_layout(name: str, value: np.ndarray) -> np.ndarray:
    """Linear ``(out, in)`` → kernel ``(in, out)`` (decided by name: square q/k/v/o exist); others unchanged."""
    value = np.asarray(value, np.float32)
    return value.T if _LINEAR.search(re.sub(r"\.gate\.0\.", ".gate.", to_original(name))) else value


def infer_config(tensors: dict[str, np.ndarray], num_heads: int) -> UMT5Config:
    """Sizes from the tensor shapes (heads from the position table, or ``num_heads`` if absent)."""
    names = {to_original(k): v for k, v in tensors.items()}
    needed = ("token_embedding.weight", "blocks.0.pos_embedding.embedding.weight", "blocks.0.attn.q.weight",
              "blocks.0.ffn.fc1.weight")
    missing = [k for k in needed if k not in names]
    if missing:
        raise ValueError(f"not a umT5 encoder checkpoint: no tensors {missing} (original or transformers names)")
    vocab, dim = names["token_embedding.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in names if k.startswith("blocks."))
    buckets, heads = names["blocks.0.pos_embedding.embedding.weight"].shape
    inner = names["blocks.0.attn.q.weight"].shape[0]
    ffn = names["blocks.0.ffn.fc1.weight"].shape[0]
    return UMT5Config(vocab, dim, layers, heads or num_heads, inner // heads, ffn, buckets)


def load_into(model: UMT5Encoder, tensors) -> UMT5Encoder:
    """Strictly loads ``(name, torch-layout array)`` pairs (original or transformers names) into ``model``."""
    tensors = dict(tensors)
    if "shared.weight" in tensors:  # transformers ties encoder.embed_tokens to shared
        tensors.pop("encoder.embed_tokens.weight", None)
    items = [(k, to_flax_layout(k, v)) for k, v in tensors.items()]
    return load_strict(model, items, original_to_path, lambda value, shape: value, "umT5")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="umT5 encoder .pth / .safetensors / folder of shards")
    parser.add_argument("--out", required=True, help="output directory (Orbax state + umt5_config.json)")
    parser.add_argument("--max-distance", type=int, default=128)


def run(args: argparse.Namespace) -> int:
    from mirage_jax.output_dirs import check_new_output

    check_new_output(args.out, "--out")
    tensors = read_state(args.source)
    tensors = {k: v for k, v in tensors.items() if not k.startswith("decoder.") and k != "lm_head.weight"}
    cfg = infer_config(tensors, num_heads=64)
    cfg = UMT5Config(**{**cfg.__dict__, "max_distance": args.max_distance})
    model = load_into(UMT5Encoder(cfg), list(tensors.items()))
    save(model, args.out)
    print(f"wrote {args.out}: umT5 encoder {cfg}")
    return 0
