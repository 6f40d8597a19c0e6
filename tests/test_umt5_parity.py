"""umT5 encoder vs transformers ``UMT5EncoderModel`` (tiny random config, fp32), the tokenizer from a local
``tokenizer.json`` built here, per-prompt zero padding, and the prompt cache end to end.

Tolerance: max |Δ| ≤ 1e-4 on valid rows (observed ~1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest

from mirage_jax.config import load_config
from tests.conftest import require_torch_stack

WORDS = ["a", "red", "room", "with", "chair", "table", "lamp", "camera", "moves", "left", "the", "and"]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    import tokenizers
    from tokenizers import models, pre_tokenizers

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_tokenizer_eos_padding_truncation(tokenizer_path):
    from mirage_jax.models.text import Tokenizer

    tok = Tokenizer(tokenizer_path, max_length=6)
    ids, lengths = tok(["a red  room", "", "the camera moves left and the chair"])
    np.testing.assert_array_equal(lengths, [4, 1, 6])
    np.testing.assert_array_equal(ids[0], [3, 4, 5, 1, 0, 0])
    np.testing.assert_array_equal(ids[1], [1, 0, 0, 0, 0, 0])  # "" -> just </s>
    assert ids[2, -1] == 1  # truncated but still ends with </s>


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch, transformers = require_torch_stack("transformers")
    from mirage_jax.convert.umt5 import load_into
    from mirage_jax.models.umt5 import UMT5Config, UMT5Encoder

    torch.manual_seed(0)
    hf_cfg = transformers.UMT5Config(
        vocab_size=len(WORDS) + 3, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, layer_norm_epsilon=1e-6,
    )  # fmt: skip
    hf = transformers.UMT5EncoderModel(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():  # perturb so unit norm weights / swapped tensors would show
            p.add_(0.1 * torch.randn_like(p))
    ours = UMT5Encoder(UMT5Config(vocab_size=len(WORDS) + 3, dim=32, num_layers=2, num_heads=4, head_dim=8, ffn_dim=48))
    load_into(ours, [(k, v.numpy()) for k, v in hf.state_dict().items()])
    return torch, hf, ours


def test_matches_transformers_per_prompt(pair, tokenizer_path):
    from mirage_jax.models.text import Tokenizer
    from mirage_jax.models.umt5 import encode_padded

    torch, hf, ours = pair
    ids, lengths = Tokenizer(tokenizer_path, max_length=40)(
        ["a red room with a chair", "", "the camera moves left " * 12]  # 1 / 6 / 40 (truncated) tokens
    )
    mask = np.arange(ids.shape[1])[None] < lengths[:, None]
    with torch.no_grad():
        ref = hf(
            input_ids=torch.from_numpy(ids.astype(np.int64)), attention_mask=torch.from_numpy(mask)
        ).last_hidden_state
    ref = ref.numpy() * mask[..., None]
    out = np.asarray(encode_padded(ours, ids, lengths))
    assert out.shape == (3, 40, 32)
    assert np.abs(out - ref).max() <= 1e-4
    for i, n in enumerate(lengths):  # zero past each prompt's own length, non-zero before
        assert not out[i, n:].any() and np.abs(out[i, :n]).min(axis=-1).max() > 0


def test_text_encoder_end_to_end_with_cache(pair, tokenizer_path, tmp_path):
    from mirage_jax.models import umt5
    from mirage_jax.models.text import make_text_encoder

    _, _, ours = pair
    umt5.save(ours, tmp_path / "umt5")
    c = load_config("tiny")
    c.text.kind, c.text.dim, c.text.max_length = "umt5", 32, 16
    c.text.tokenizer_path, c.text.checkpoint, c.text.cache_dir = str(tokenizer_path), str(tmp_path / "umt5"), ""
    c.text.umt5.vocab_size, c.text.umt5.num_layers, c.text.umt5.num_heads = len(WORDS) + 3, 2, 4
    c.text.umt5.head_dim, c.text.umt5.ffn_dim = 8, 48
    enc = make_text_encoder(c)
    out = enc.encode(["a red room", "the lamp"])
    assert out.shape == (2, 16, 32) and out.dtype == np.float32
    assert not out[0, 4:].any() and not out[1, 3:].any() and out[1, :3].any()
    again = enc.encode(["the lamp"])
    np.testing.assert_array_equal(again[0], out[1])
    assert enc.num_encoded == 2


def test_convert_cli_from_transformers_and_original_names(pair, tmp_path):
    """``mirage-jax convert umt5`` from transformers safetensors; the original (Wan) names load identically."""
    import argparse

    import jax
    import safetensors.numpy
    from flax import nnx

    from mirage_jax.convert import umt5 as convert_umt5
    from mirage_jax.models import umt5

    _, hf, ours = pair
    state = {k: v.numpy().copy() for k, v in hf.state_dict().items()}
    safetensors.numpy.save_file({k: v for k, v in state.items() if k != "encoder.embed_tokens.weight"},
                                str(tmp_path / "hf.safetensors"))  # fmt: skip
    parser = argparse.ArgumentParser()
    convert_umt5.add_arguments(parser)
    assert convert_umt5.run(parser.parse_args(["--source", str(tmp_path / "hf.safetensors"), "--out",
                                               str(tmp_path / "out")])) == 0  # fmt: skip
    loaded = umt5.load(tmp_path / "out")
    original = umt5.UMT5Encoder(loaded.cfg, seed=5)
    convert_umt5.load_into(
        original, [(convert_umt5.to_original(k), v) for k, v in state.items() if k != "shared.weight"]
    )
    expected = jax.tree.leaves(nnx.state(ours, nnx.Param))
    for other in (loaded, original):
        for a, b in zip(jax.tree.leaves(nnx.state(other, nnx.Param)), expected):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
