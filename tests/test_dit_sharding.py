"""Sharded WanDiT on 8 simulated CPU devices (fsdp=4 x tensor=2) equals the single-device model."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from mirage_jax.config import load_config
from mirage_jax.models import build_model, state_shardings
from mirage_jax.sharding import make_mesh
from tests.test_dit_model import perturb


@pytest.mark.slow
def test_sharded_forward_equals_single_device():
    if len(jax.devices()) < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
    config = load_config("configs/tiny.py", ["mesh.fsdp=4", "mesh.tensor=2"])
    mesh = make_mesh(1, 4, 2, jax.devices()[:8])
    single = perturb(build_model(config, seed=3))
    sharded = build_model(config, seed=3, mesh=mesh)
    # initialisation does not depend on the mesh, and parameters really are sharded
    kernel = sharded.blocks.ffn_in.kernel[...]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert kernel.addressable_shards[0].data.shape == (2, 64 // 4, 128 // 2)
    shardings = state_shardings(nnx.state(sharded), mesh, config.mesh.rules)
    nnx.update(sharded, jax.device_put(nnx.state(single), shardings))
    assert sharded.blocks.self_attn.q.kernel[...].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")

    rng = np.random.default_rng(0)
    b, f, r = 4, 5, 1
    x = rng.standard_normal((b, f, 4, 6, 48)).astype(np.float32)
    t = np.tile(np.array([0, 0, 700, 700, 0], np.float32), (b, 1))
    ctx = rng.standard_normal((b, 8, 32)).astype(np.float32)
    ctl = rng.standard_normal((b, f - r, 4, 6, 96)).astype(np.float32)
    mask = np.ones((b, f), bool)
    mask[1, 0] = False

    def fwd(m, x, t, ctx, ctl, mask):
        return m(x, t, ctx, num_references=r, control=ctl, frame_mask=mask)

    ref = np.asarray(nnx.jit(fwd)(single, x, t, ctx, ctl, mask))
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    with jax.set_mesh(mesh):
        args = [jax.device_put(a, batch) for a in (x, t, ctx, ctl, mask)]
        out = nnx.jit(fwd)(sharded, *args)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5 * np.abs(ref).max())
