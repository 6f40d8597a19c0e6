"""Text encoder front end: the "none" kind, the prompt cache (memory and disk) and input errors."""

from __future__ import annotations

import numpy as np
import pytest

from mirage_jax.config import load_config
from mirage_jax.models.text import CachedTextEncoder, clean_prompt, make_text_encoder, prompt_key


def test_none_kind_shape():
    c = load_config("tiny")
    out = make_text_encoder(c).encode(["a cat", ""])
    assert out.shape == (2, c.text.max_length, c.text.dim) and out.dtype == np.float32
    assert not out.any()


def test_cache_hits_memory_and_disk(tmp_path):
    calls = []

    def embed(prompts):
        calls.append(list(prompts))
        return np.stack([np.full((4, 3), len(p), np.float32) for p in prompts])

    enc = CachedTextEncoder(embed, 4, 3, tmp_path)
    out = enc.encode(["ab", "abc", "ab"])
    assert calls == [["ab", "abc"]]  # duplicates encoded once
    np.testing.assert_array_equal(out[:, 0, 0], [2, 3, 2])
    enc.encode(["abc", "  ab "])  # whitespace-cleaned prompt hits the same key
    assert len(calls) == 1 and enc.num_encoded == 2
    fresh = CachedTextEncoder(embed, 4, 3, tmp_path)  # a new process: served from disk
    np.testing.assert_array_equal(fresh.encode(["abc"]), out[1:2])
    assert len(calls) == 1
    assert (tmp_path / f"{prompt_key('abc')}.npz").is_file()


def test_clean_and_errors():
    assert clean_prompt("  a \n\t b&amp;c ") == "a b&c"
    enc = make_text_encoder(load_config("tiny"))
    with pytest.raises(ValueError, match="list of str"):
        enc.encode("a single string")
    c = load_config("tiny")
    c.text.kind = "clip"
    with pytest.raises(ValueError, match="text.kind"):
        make_text_encoder(c)
    c.text.kind = "umt5"
    with pytest.raises(ValueError, match="text.checkpoint"):
        make_text_encoder(c)
