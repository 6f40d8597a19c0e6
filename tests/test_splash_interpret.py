"""The TPU splash-attention path without a TPU: the Pallas kernel run in interpret mode on CPU.

``attention._splash`` is what ``config.model.attention="splash"`` runs on a TPU; here it runs with
``interpret=True`` (the same kernel, mask processing, padding and segment ids, executed by the Pallas
interpreter) against XLA attention, on the DiT's sequence layout ``[references | targets | preceding]`` with
empty reference and preceding slots masked out as keys, forward and gradients, and inside ``jax.shard_map`` over
8 simulated devices with the batch and heads sharded as the model's logical rules place them.

Inside ``shard_map`` the kernel needs ``check_vma=False``: the splash kernel's ``pallas_call`` declares its outputs
without ``manual_axis_type`` and jax refuses that under ``check_vma=True``
(``jax/_src/pallas/core.py``, ``_convert_out_shape_to_aval``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirage_jax.config import base_config
from mirage_jax.models.attention import _dot_product, _splash
from mirage_jax.sharding import logical_to_spec, make_mesh

HEADS, HEAD_DIM, TOKENS_PER_FRAME = 4, 64, 24
REFERENCES, TARGETS, PRECEDING = 2, 3, 2
# frame_mask per batch element: references fill the last slots, preceding latents the first (sequence_slots)
FRAME_MASKS = [
    [False, True] + [True] * TARGETS + [True, False],  # one reference, one preceding latent
    [False, False] + [True] * TARGETS + [False, False],  # chunk 0: targets only
]


def layout_inputs(dtype=jnp.float32, seed: int = 0):
    """q, k, v ``[B, S, H, d]`` and the key mask ``[B, S]`` of the reference/target/preceding layout."""
    frames = REFERENCES + TARGETS + PRECEDING
    shape = (len(FRAME_MASKS), frames * TOKENS_PER_FRAME, HEADS, HEAD_DIM)
    keys = jax.random.split(jax.random.key(seed), 3)
    q, k, v = (jax.random.normal(key, shape, jnp.float32).astype(dtype) for key in keys)
    key_mask = jnp.repeat(jnp.asarray(FRAME_MASKS), TOKENS_PER_FRAME, axis=1)
    return q, k, v, key_mask


def splash(q, k, v, key_mask):
    """The splash kernel as ``attend`` calls it (default block), interpreted."""
    return _splash(q, k, v, key_mask, interpret=True)


def xla(q, k, v, key_mask):
    return _dot_product(q, k, v, key_mask, "xla")


def loss_of(attention, cotangent):
    """A scalar whose gradients w.r.t. q, k, v are the attention's VJP of ``cotangent``."""
    return lambda q, k, v, m: jnp.sum(attention(q, k, v, m).astype(jnp.float32) * cotangent)


def test_interpreted_splash_equals_xla_forward_with_padded_frames():
    q, k, v, key_mask = layout_inputs()
    got = jax.jit(splash)(q, k, v, key_mask)
    np.testing.assert_allclose(got, xla(q, k, v, key_mask), atol=2e-5, rtol=1e-5)


def test_interpreted_splash_bfloat16_forward_close_to_float32_xla():
    q, k, v, key_mask = layout_inputs(jnp.bfloat16)
    got = jax.jit(splash)(q, k, v, key_mask)
    assert got.dtype == jnp.bfloat16
    want = xla(*(a.astype(jnp.float32) for a in (q, k, v)), key_mask)
    np.testing.assert_allclose(np.asarray(got, np.float32), want, atol=3e-2)


def test_interpreted_splash_gradients_equal_xla():
    q, k, v, key_mask = layout_inputs()
    cotangent = jax.random.normal(jax.random.key(1), q.shape, jnp.float32)
    got = jax.jit(jax.grad(loss_of(splash, cotangent), argnums=(0, 1, 2)))(q, k, v, key_mask)
    want = jax.grad(loss_of(xla, cotangent), argnums=(0, 1, 2))(q, k, v, key_mask)
    for name, g, w in zip("qkv", got, want):
        np.testing.assert_allclose(g, w, atol=5e-5, rtol=1e-4, err_msg=f"d{name}")
    masked = ~np.asarray(key_mask)
    for name, g in zip("kv", got[1:]):  # a masked key and value never reach the output
        assert np.all(np.asarray(g)[masked] == 0), f"d{name} of masked keys"


@pytest.fixture(scope="module")
def mesh():
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
    return make_mesh(data=2, fsdp=1, tensor=4, devices=jax.devices()[:8])


def sharded_splash(mesh):
    """Splash per device inside ``shard_map``: batch and heads split as the default ``mesh.rules`` split the
    DiT's attention activations ``("batch", "length", "heads", "kv")``."""
    rules = base_config().mesh.rules
    qkv = logical_to_spec(("batch", "length", "heads", "kv"), rules)
    mask = logical_to_spec(("batch", "length"), rules)
    return jax.shard_map(splash, mesh=mesh, in_specs=(qkv, qkv, qkv, mask), out_specs=qkv, check_vma=False)


def test_interpreted_splash_inside_shard_map_on_8_devices(mesh):
    q, k, v, key_mask = layout_inputs()
    attention = sharded_splash(mesh)
    out = jax.jit(attention)(q, k, v, key_mask)
    assert len(out.sharding.device_set) == 8
    np.testing.assert_allclose(out, xla(q, k, v, key_mask), atol=2e-5, rtol=1e-5)

    cotangent = jax.random.normal(jax.random.key(2), q.shape, jnp.float32)
    got = jax.jit(jax.grad(loss_of(attention, cotangent), argnums=(0, 1, 2)))(q, k, v, key_mask)
    want = jax.grad(loss_of(xla, cotangent), argnums=(0, 1, 2))(q, k, v, key_mask)
    for name, g, w in zip("qkv", got, want):
        np.testing.assert_allclose(g, w, atol=5e-5, rtol=1e-4, err_msg=f"d{name}")
