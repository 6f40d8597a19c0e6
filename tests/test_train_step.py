"""The compiled train step on the real (tiny) WanDiT: sharding invariance, frozen parameters, mesh-changing restore.

Inputs are random arrays with the training example's shapes (the step's numerics do not depend on where they come from;
the loop tests in test_train_loop.py use the real data pipeline).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirage_jax.checkpoints import load_model, open_source
from mirage_jax.checkpoints.run import Checkpointer, abstract_like
from mirage_jax.config import load_config
from mirage_jax.models import build_model
from mirage_jax.models.lora import trainable_filter
from mirage_jax.sharding import make_mesh
from mirage_jax.train.loss import LossSettings
from mirage_jax.train.optimizer import make_optimizer
from mirage_jax.train.step import batch_sharding, make_train_step, new_train_state

OVERRIDES = ["--config.data.height=32", "--config.data.width=56", "--config.train.batch_size=4",
             "--config.model.num_layers=1", "--config.model.vace_layers=(0,)", "--config.train.lr=1e-2",
             "--config.train.warmup_steps=0"]


def fake_batch(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    h, w, c = 8, 14, 48
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"target_latents": f(batch, 9, h, w, c), "target_scene": f(batch, 9, h, w, c),
            "target_hit": rng.random((batch, 9, h, w)) > 0.5, "preceding_latents": f(batch, 2, h, w, c),
            "preceding_scene": f(batch, 2, h, w, c), "preceding_hit": rng.random((batch, 2, h, w)) > 0.5,
            "preceding_mask": rng.random((batch, 2)) > 0.3, "reference_latents": f(batch, 4, h, w, c),
            "reference_mask": rng.random((batch, 4)) > 0.5, "context": f(batch, 8, 32)}


def run_steps(config, mesh, stage, steps, grad_accum=1):
    """Builds the model on ``mesh`` and runs ``steps`` train steps; returns (initial model state, final state)."""
    model = build_model(config, seed=0, mesh=mesh)
    initial = jax.device_get(nnx.state(model))
    tx = make_optimizer(config.train, 10)
    graphdef, state, shardings = new_train_state(model, trainable_filter(stage), tx, mesh, config.mesh.rules,
                                                 jax.random.PRNGKey(0))
    host = fake_batch()
    bsh = {k: batch_sharding(mesh, v.ndim, config.mesh.rules) for k, v in host.items()}
    step = make_train_step(graphdef, tx, LossSettings.from_config(config), grad_accum=grad_accum,
                           state_sharding=shardings, batch_shardings=bsh, mesh=mesh)
    batch = {k: jax.device_put(v, bsh[k]) for k, v in host.items()}
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch, jnp.zeros((8, 32)), None)
        losses.append(float(metrics["loss"]))
    return initial, state, shardings, losses


@pytest.fixture(scope="module")
def config():
    return load_config("tiny", OVERRIDES)


@pytest.fixture(scope="module")
def full_runs(config):
    one = run_steps(config, make_mesh(1, 1, 1, jax.devices()[:1]), "full", 1)
    eight = run_steps(config, make_mesh(1, 4, 2, jax.devices()[:8]), "full", 1)
    return one, eight


@pytest.mark.slow
def test_one_step_on_8_devices_equals_one_step_on_one(full_runs):
    """Loss, gradients (Adam's first moment = 0.1·g) and updated parameters agree within fp tolerance.

    Parameters get atol 1e-4 = 1% of the first Adam step (lr 1e-2 · g/|g|), which is ill-conditioned where
    g ≈ 0; the moments are compared tightly.
    """
    (init1, s1, _, l1), (init8, s8, _, l8) = full_runs
    np.testing.assert_allclose(l8, l1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(init1), jax.tree.leaves(init8)):
        np.testing.assert_array_equal(a, b)  # same initial parameters on both meshes
    for a, b in zip(jax.tree.leaves(s1["opt"]), jax.tree.leaves(s8["opt"])):  # moments (g, g²) and counts
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-9)
    for a, b in zip(jax.tree.leaves(s1["trainable"]), jax.tree.leaves(s8["trainable"])):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4)
    assert int(s8["step"]) == int(s1["step"]) == 1
    specs = {str(x.sharding.spec) for x in jax.tree.leaves(s8["trainable"])}
    assert any("fsdp" in s for s in specs) and any("tensor" in s for s in specs)  # really sharded


@pytest.mark.slow
def test_vace_stage_changes_only_vace_parameters(config):
    initial, state, _, losses = run_steps(config, make_mesh(1, 1, 1, jax.devices()[:1]), "vace", 2, grad_accum=2)
    model_state = nnx.merge_state(state["trainable"]["dit"], state["frozen"])
    changed = 0
    for path, value in nnx.to_flat_state(model_state):
        before = np.asarray(dict(nnx.to_flat_state(initial))[path])
        if "vace" in path:
            changed += int(not np.array_equal(before, np.asarray(value)))
        else:
            assert np.array_equal(before, np.asarray(value)), path  # bitwise
    assert changed > 0 and np.isfinite(losses).all()
    assert all("vace" in p for p, _ in nnx.to_flat_state(state["trainable"]["dit"]))


@pytest.mark.slow
def test_checkpoint_from_8_device_mesh_restores_on_one_device(full_runs, config, tmp_path):
    _, (_, s8, _, _) = full_runs
    ck = Checkpointer(tmp_path / "checkpoints", keep=2)
    model8 = nnx.merge_state(s8["trainable"]["dit"], s8["frozen"])
    ck.save(2, model=model8, opt=s8["opt"], train={"step": s8["step"], "rng": s8["rng"]},
            meta={"config": config.to_json_best_effort(), "stage": "full", "stage_index": 0, "step": 2})
    ck.wait()
    # a different mesh shape: fsdp=2 x tensor=4 for the optimizer state
    mesh = make_mesh(1, 2, 4, jax.devices()[:8])
    opt_target = abstract_like(s8["opt"], jax.tree.map(
        lambda x: jax.sharding.NamedSharding(mesh, x.sharding.spec), s8["opt"]))
    restored = ck.restore(2, opt=opt_target)["opt"]
    for a, b in zip(jax.tree.leaves(s8["opt"]), jax.tree.leaves(restored)):
        assert np.array_equal(np.asarray(a), np.asarray(b)) and b.sharding.mesh.shape == mesh.shape
    ck.close()
    model = load_model(open_source(tmp_path), config)  # one device
    for (path, a), (_, b) in zip(nnx.to_flat_state(model8), nnx.to_flat_state(nnx.state(model))):
        assert np.array_equal(np.asarray(a), np.asarray(b)), path
        assert len(b.devices()) == 1
