"""Flash attention (the ``chunked`` backend) against ``jax.nn.dot_product_attention(implementation="xla")``:
forward and gradients of q, k, v at fp32, masked and fully masked keys, bf16, the compiled backward's memory,
and the DiT with ``model.attention="chunked"`` against ``"xla"``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirage_jax.config import load_config
from mirage_jax.models import attention, build_model
from mirage_jax.models.attention import attend, flash_attention
from tests.test_dit_model import perturb


def _xla(q, k, v, key_mask):
    """The independent reference: JAX's own XLA attention (mask [B, 1, 1, S])."""
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")


def _inputs(b, t, s, h, d, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal((b, n, h, d)), dtype) for n in (t, s, s))
    cotangent = jnp.asarray(rng.standard_normal((b, t, h, d)), jnp.float32)
    return q, k, v, cotangent


def _value_and_grads(fn, q, k, v, cotangent):
    """Output and d<cotangent, fn(q, k, v)>/d(q, k, v): a random (not constant) output cotangent."""
    loss = lambda q, k, v: jnp.sum(cotangent * fn(q, k, v).astype(jnp.float32))
    return fn(q, k, v), jax.grad(loss, (0, 1, 2))(q, k, v)


def _mask_one_element(b, s, seed=1):
    """Keys of batch element 1 masked at random (about 40 %), element 0 unmasked: [B, S] bool."""
    mask = np.ones((b, s), bool)
    mask[1] = np.random.default_rng(seed).random(s) > 0.4
    return jnp.asarray(mask)


@pytest.mark.parametrize("b, t, s, h, d, q_block, kv_block, masked", [
    (2, 50, 40, 3, 32, 16, 16, True),   # T != S, neither a multiple of the blocks
    (2, 37, 7, 3, 32, 8, 4, True),      # cross-attention shape: 7 keys in two blocks, the second padded
    (2, 64, 64, 3, 32, 16, 32, False),  # multiples of the blocks, no mask: the unmasked fast path
    (2, 45, 45, 3, 32, 64, 64, True),   # blocks longer than the sequence: one block each way
    (1, 33, 70, 2, 16, 11, 9, False),   # no mask but padded keys
])
def test_flash_matches_xla_forward_and_grads_fp32(b, t, s, h, d, q_block, kv_block, masked):
    q, k, v, cot = _inputs(b, t, s, h, d)
    mask = _mask_one_element(b, s) if masked else None
    out, grads = _value_and_grads(lambda q, k, v: flash_attention(q, k, v, mask, q_block=q_block,
                                                                  kv_block=kv_block), q, k, v, cot)
    ref_out, ref_grads = _value_and_grads(lambda q, k, v: _xla(q, k, v, mask), q, k, v, cot)
    assert out.shape == (b, t, h, d) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=0)
    for name, ours, ref in zip("qkv", grads, ref_grads):
        assert float(jnp.abs(ref).max()) > 0.1, name  # a real gradient, not zeros on both sides
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0, err_msg=f"d{name}")


def test_masked_keys_have_no_effect_and_no_gradient():
    b, t, s, h, d = 2, 20, 30, 3, 32
    q, k, v, cot = _inputs(b, t, s, h, d, seed=2)
    mask = _mask_one_element(b, s)
    flash = lambda q, k, v: flash_attention(q, k, v, mask, q_block=8, kv_block=8)
    _, (_, dk, dv) = _value_and_grads(flash, q, k, v, cot)
    masked = ~np.asarray(mask)
    assert masked.sum() > 5
    assert not np.asarray(dk)[masked].any() and not np.asarray(dv)[masked].any()
    keep = mask[:, :, None, None]
    moved = flash(q, jnp.where(keep, k, k + 7.0), jnp.where(keep, v, v - 3.0))
    np.testing.assert_allclose(moved, flash(q, k, v), atol=1e-6, rtol=0)


def test_fully_masked_keys_match_xla_mean_of_values():
    """Element 1: every key masked -> xla gives the mean of v (equal large negative logits), zero dq and dk.
    Element 0: the first key block (8 keys) all masked, the rest valid -> no NaN from an all-masked block."""
    b, t, s, h, d = 2, 19, 21, 3, 32
    q, k, v, cot = _inputs(b, t, s, h, d, seed=3)
    mask = jnp.asarray(np.stack([np.arange(s) >= 8, np.zeros(s, bool)]))
    out, grads = _value_and_grads(lambda q, k, v: flash_attention(q, k, v, mask, q_block=8, kv_block=8),
                                  q, k, v, cot)
    ref_out, ref_grads = _value_and_grads(lambda q, k, v: _xla(q, k, v, mask), q, k, v, cot)
    assert np.isfinite(np.asarray(out)).all()
    np.testing.assert_allclose(out[1], np.broadcast_to(np.asarray(v[1]).mean(0), (t, h, d)), atol=1e-6)
    np.testing.assert_allclose(out, ref_out, atol=1e-5, rtol=0)
    for name, ours, ref in zip("qkv", grads, ref_grads):
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0, err_msg=f"d{name}")
    assert not np.asarray(grads[0][1]).any() and not np.asarray(grads[1][1]).any()
    np.testing.assert_allclose(grads[2][1], np.broadcast_to(np.asarray(cot[1]).sum(0) / s, (s, h, d)), atol=1e-5)


def test_bf16_inputs_accumulate_in_fp32():
    """bf16 q, k, v against the fp32 XLA reference: within 2e-2 (outputs) and 3 % of the largest gradient, and no
    worse than 1.5x XLA's own bf16 attention on the same inputs."""
    b, t, s, h, d = 2, 70, 45, 3, 32
    q, k, v, cot = _inputs(b, t, s, h, d, seed=4, dtype=jnp.bfloat16)
    mask = _mask_one_element(b, s)
    flash = lambda q, k, v: flash_attention(q, k, v, mask, q_block=16, kv_block=16)
    out, grads = _value_and_grads(flash, q, k, v, cot)
    xla_out, xla_grads = _value_and_grads(lambda q, k, v: _xla(q, k, v, mask), q, k, v, cot)
    as32 = [a.astype(jnp.float32) for a in (q, k, v)]
    ref_out, ref_grads = _value_and_grads(lambda q, k, v: _xla(q, k, v, mask), *as32, cot)
    assert out.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
    err = lambda a, ref: float(jnp.abs(a.astype(jnp.float32) - ref).max())
    assert err(out, ref_out) <= 2e-2 and err(out, ref_out) <= 1.5 * err(xla_out, ref_out) + 1e-3
    for ours, theirs, ref in zip(grads, xla_grads, ref_grads):
        scale = float(jnp.abs(ref).max())
        assert err(ours, ref) <= 0.03 * scale and err(ours, ref) <= 1.5 * err(theirs, ref) + 1e-3 * scale


def _backward_temp_bytes(impl, length, batch=1, heads=4, head_dim=64):
    """Temporary bytes of the compiled gradient of sum(attend(q, k, v) ** 2) w.r.t. q, k, v (no execution)."""
    spec = jax.ShapeDtypeStruct((batch, length, heads, head_dim), jnp.float32)
    mask = jax.ShapeDtypeStruct((batch, length), jnp.bool_)
    grad = jax.jit(jax.grad(lambda q, k, v, m: jnp.sum(attend(q, k, v, m, impl) ** 2), (0, 1, 2)))
    return grad.lower(spec, spec, spec, mask).compile().memory_analysis().temp_size_in_bytes


def test_chunked_backward_memory_is_far_below_the_scores(monkeypatch):
    """4096 tokens, 4 heads of 64, 512-token blocks: one score block is 4 MiB, q/k/v/out/dq 4 MiB each."""
    monkeypatch.setattr(attention, "Q_BLOCK", 512)
    monkeypatch.setattr(attention, "KV_BLOCK", 512)
    length, heads = 4096, 4
    scores = heads * length * length * 4  # one fp32 [H, L, L] score matrix: 256 MiB
    chunked = _backward_temp_bytes("chunked", length, heads=heads)
    xla = _backward_temp_bytes("xla", length, heads=heads)
    assert xla > scores  # XLA keeps the probabilities for its backward
    assert chunked < scores / 4 and chunked < xla / 20, (chunked, xla, scores)


@pytest.fixture(scope="module")
def dit_inputs():
    rng = np.random.default_rng(0)
    b, f, h, w = 2, 6, 4, 6  # 2 references | 3 targets | 1 preceding: 36 tokens
    x = rng.standard_normal((b, f, h, w, 48)).astype(np.float32)
    t = np.array([[0, 0, 0, 800, 800, 0]] * b, np.float32)
    ctx = rng.standard_normal((b, 8, 32)).astype(np.float32)
    control = rng.standard_normal((b, f - 2, h, w, 96)).astype(np.float32)
    frame_mask = np.ones((b, f), bool)
    frame_mask[1, [0, -1]] = False  # element 1: an empty reference slot and no preceding latent
    return x, t, ctx, control, frame_mask


def _dit_loss_and_grads(impl, x, t, ctx, control, frame_mask):
    """Output and parameter gradients of the perturbed tiny DiT (VACE control, frame mask) with ``impl``."""
    model = perturb(build_model(load_config("configs/tiny.py", [f"model.attention={impl}"]), seed=0))
    graphdef, params = nnx.split(model)

    @jax.jit
    def loss_and_grads(params):
        def loss(p):
            out = nnx.merge(graphdef, p)(x, t, ctx, num_references=2, control=control, frame_mask=frame_mask)
            return jnp.mean(out ** 2), out

        return jax.value_and_grad(loss, has_aux=True)(params)

    (_, out), grads = loss_and_grads(params)
    return out, grads


@pytest.mark.slow
def test_dit_with_chunked_attention_matches_xla(monkeypatch, dit_inputs):
    monkeypatch.setattr(attention, "Q_BLOCK", 16)  # 36 tokens: 3 query blocks of 12, 5 key blocks of 8 (4 padded keys)
    monkeypatch.setattr(attention, "KV_BLOCK", 8)
    out, grads = _dit_loss_and_grads("chunked", *dit_inputs)
    ref_out, ref_grads = _dit_loss_and_grads("xla", *dit_inputs)
    np.testing.assert_allclose(out, ref_out, atol=1e-5 * float(jnp.abs(ref_out).max()), rtol=0)
    leaves, ref_leaves = jax.tree.leaves(grads), jax.tree.leaves(ref_grads)
    assert sum(float(jnp.abs(g).max()) > 0 for g in ref_leaves) > 0.9 * len(ref_leaves)
    for ours, ref in zip(leaves, ref_leaves):
        np.testing.assert_allclose(ours, ref, atol=1e-5 * max(float(jnp.abs(ref).max()), 1e-3), rtol=1e-4)
