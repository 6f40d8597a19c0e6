"""One rule for fewer real references / preceding latents than slots, on both sides: training examples and the
rollout place them where the official unpadded sequence puts them (references at RoPE temporal positions
``-k..-1``, preceding latents at ``T..T+k-1``, newest last)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from mirage_jax.config import load_config
from mirage_jax.data.examples import make_example
from mirage_jax.data.synthetic import render_clip
from mirage_jax.data.windows import ExampleSpec
from mirage_jax.models.latent_space import make_latent_space
from mirage_jax.models.rope import rope_positions
from mirage_jax.models.sequence_slots import (
    keep_preceding_slots,
    keep_reference_slots,
    place_preceding,
    place_references,
)
from mirage_jax.models.text import make_text_encoder


def _temporal_positions(frame_mask, num_references: int) -> np.ndarray:
    """RoPE temporal positions of the real (unmasked) frames of a ``[R | T | P]`` sequence."""
    t = rope_positions(len(frame_mask), 1, 1, num_references)[:, 0]
    return t[np.asarray(frame_mask)]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_real_entries_take_the_official_positions(k):
    refs, ref_mask = place_references(np.arange(k) + 10, 4)
    prec, prec_mask = place_preceding(np.arange(k) + 20, 3)
    np.testing.assert_array_equal(refs[ref_mask], np.arange(k) + 10)  # order kept (best first)
    np.testing.assert_array_equal(prec[prec_mask], np.arange(k) + 20)  # order kept (oldest first)
    targets = 5
    mask = np.concatenate([ref_mask, np.ones(targets, bool), prec_mask])
    want = np.concatenate([np.arange(-k, 0), np.arange(targets), targets + np.arange(k)])
    np.testing.assert_array_equal(_temporal_positions(mask, 4), want)  # as the official without padding
    batch = np.stack([ref_mask, ref_mask])
    assert keep_reference_slots(batch, max(k, 1)).all() if k else not keep_reference_slots(batch, 1).any()
    assert keep_preceding_slots(np.stack([prec_mask]), max(k, 1)).all() == (k >= 1)
    with pytest.raises(ValueError, match="5 entries for 4 slots"):
        place_references(np.arange(5), 4)


def test_training_examples_place_them_by_the_rule():
    """``make_example`` with 3 preceding slots: whatever count it draws, the kept latents are the newest, in
    the first slots, oldest first; kept references are in the last slots."""
    config = load_config("tiny", ["data.height=32", "data.width=56", "data.target_frames=9", "memory.num_preceding=3",
                                  "train.max_preceding=3", "memory.capacity=1024"])
    space, text = make_latent_space(config), make_text_encoder(config)
    spec = ExampleSpec.from_config(config)
    clip = render_clip(3, 41, 32, 56, "orbit")
    frames = clip["frames"].astype(np.float32) / 127.5 - 1.0
    seen_counts = set()
    for seed in range(12):
        example = make_example(clip, 0, np.random.default_rng(seed), spec, space, text)
        mask = example["preceding_mask"]
        k = int(mask.sum())
        seen_counts.add(k)
        assert list(mask) == [True] * k + [False] * (3 - k)
        t0 = next(t for t in range(len(frames)) if np.array_equal(np.asarray(space.encode(frames[t][None, None]))[0, 0],
                                                                   example["target_latents"][0]))
        for j in range(k):  # slot j holds frame t0 - 4(k - j): the newest k, oldest first
            want = np.asarray(space.encode(frames[t0 - 4 * (k - j)][None, None]))[0, 0]
            np.testing.assert_array_equal(example["preceding_latents"][j], want)
        refs = example["reference_mask"]
        assert list(refs) == sorted(refs) and refs.sum() <= spec.max_references
    assert {1, 2} <= seen_counts  # fewer real preceding latents than slots occurred


def test_the_rollout_places_them_by_the_rule(monkeypatch):
    """A rollout with 3 preceding slots and chunks of 3 latents: chunk 1 has 2 real preceding latents (the
    latents before its frame 0, oldest first in the first slots) and fewer references than slots."""
    from mirage_jax.world.oracle import oracle_model

    rollout_module = importlib.import_module("mirage_jax.world.generator")

    calls = []
    original = rollout_module.denoise_chunk

    def capture(state, noise, first, references, preceding, control, frame_mask, *args, **kwargs):
        calls.append({"references": np.asarray(references[0]), "preceding": np.asarray(preceding[0]),
                      "frame_mask": np.asarray(frame_mask[0])})
        return original(state, noise, first, references, preceding, control, frame_mask, *args, **kwargs)

    monkeypatch.setattr(rollout_module, "denoise_chunk", capture)
    config = load_config("tiny", ["data.height=32", "data.width=56", "sample.steps=2", "sample.chunk_frames=9",
                                  "memory.num_preceding=3", "memory.reference_iou_threshold=0.0"])
    clip = render_clip(2, 17, 32, 56, "orbit")
    result = rollout_module.rollout(config, oracle_model(48), clip, 17, progress=False)
    chunk = calls[1]
    refs, targets, prec = np.split(chunk["frame_mask"], [4, 4 + 3])
    assert list(prec) == [True, True, False] and result.chunks[1]["preceding"] == [0, 1]
    np.testing.assert_array_equal(chunk["preceding"][:2], result.latents[:2])
    n = len(result.chunks[1]["references"])
    assert 1 <= n < 4 and list(refs) == [False] * (4 - n) + [True] * n
    np.testing.assert_array_equal(chunk["references"][4 - n:], result.latents[result.chunks[1]["references"]])
    np.testing.assert_array_equal(_temporal_positions(chunk["frame_mask"], 4),
                                  np.concatenate([np.arange(-n, 0), np.arange(3), [3, 4]]))
