"""Sampler parity: our schedules and full trajectories against diffusers' schedulers (torch, float32).

The velocity field is analytic and time dependent, ``v(x, t) = a(t) * x + b(t) * c`` (``c`` a fixed tensor), so
the trajectories are non-trivial and every step's timestep matters. Tolerance 1e-5 absolute on unit-scale
latents.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirage_jax.sampling import apply_cfg, denoise, flow_sigmas, make_schedule, model_timesteps
from tests.conftest import require_torch_stack

SHAPE = (1, 3, 4, 6, 5)  # [B, T, h, w, C]
TOL = 1e-5


def _field_np(x, t, c):
    """The analytic velocity field (numpy / torch agnostic): depends on x and on the model timestep t."""
    s = t / 1000.0
    return (0.3 + 0.5 * s) * x + (1.0 - 0.7 * s) * c


def _inputs():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(SHAPE).astype(np.float32)
    c = rng.standard_normal(SHAPE).astype(np.float32)
    first = rng.standard_normal((SHAPE[0],) + SHAPE[2:]).astype(np.float32)
    return noise, c, first


def _ours(schedule, noise, c, first):
    fn = jax.jit(lambda n: denoise(lambda x, t: _field_np(x, t, jnp.asarray(c)), n, schedule, jnp.asarray(first)))
    return np.asarray(fn(jnp.asarray(noise)))


def _theirs(scheduler, noise, c, first):
    torch = require_torch_stack()
    x = torch.from_numpy(noise.copy())
    x[:, 0] = torch.from_numpy(first)
    ct = torch.from_numpy(c)
    for t in scheduler.timesteps:
        v = _field_np(x, t.to(torch.float32), ct)
        x = scheduler.step(v, t, x, return_dict=False)[0]
        x[:, 0] = torch.from_numpy(first)
    return x.numpy()


@pytest.mark.parametrize("steps", [1, 2, 10, 20])
def test_unipc_schedule_matches_diffusers(steps):
    torch, diffusers = require_torch_stack("diffusers")
    sched = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    sched.set_timesteps(steps)
    ours = flow_sigmas(steps, 5.0, "diffusers")
    np.testing.assert_allclose(ours, sched.sigmas.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(model_timesteps(ours, integer=True), sched.timesteps.numpy().astype(np.float32))


def test_wan_grid_matches_official_20_step_timesteps():
    """The official Mirage loop's 20-step timesteps."""
    official = [999, 989, 978, 965, 952, 937, 920, 902, 882, 859, 833, 803, 768, 728, 681, 624, 555, 468, 356, 208]
    np.testing.assert_array_equal(model_timesteps(flow_sigmas(20, 5.0, "wan")), np.array(official, np.float32))


@pytest.mark.parametrize("steps", [2, 3, 10, 20])
def test_unipc_trajectory_matches_diffusers(steps):
    torch, diffusers = require_torch_stack("diffusers")
    sched = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    assert (sched.config.solver_order, sched.config.solver_type) == (2, "bh2")
    assert sched.config.predict_x0 and sched.config.lower_order_final
    sched.set_timesteps(steps)
    noise, c, first = _inputs()
    expected = _theirs(sched, noise, c, first)
    got = _ours(make_schedule("unipc", steps, 5.0, "diffusers"), noise, c, first)
    np.testing.assert_allclose(got, expected, atol=TOL, rtol=0)
    np.testing.assert_array_equal(got[:, 0], first)


def test_euler_trajectory_matches_diffusers():
    torch, diffusers = require_torch_stack("diffusers")
    steps = 10
    schedule = make_schedule("euler", steps, 5.0, "wan")
    base = np.linspace(1 - 1e-3, 0, steps + 1)[:-1]  # our unshifted grid; diffusers applies shift=5 itself
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=5.0)
    sched.set_timesteps(sigmas=base.tolist())
    np.testing.assert_allclose(schedule.sigmas, sched.sigmas.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(schedule.timesteps, sched.timesteps.numpy(), atol=1e-3, rtol=0)
    noise, c, first = _inputs()
    np.testing.assert_allclose(_ours(schedule, noise, c, first), _theirs(sched, noise, c, first), atol=TOL, rtol=0)


def test_unipc_recovers_x0_of_a_straight_flow():
    """Started on the straight path at σ_0 with its exact velocity ``v = ε - x0``, every sampler lands on x0."""
    noise, x0, _ = _inputs()
    x0j, nj = jnp.asarray(x0), jnp.asarray(noise)
    for sampler in ("unipc", "euler"):
        sched = make_schedule(sampler, 6, 5.0, "wan")
        start = (1 - sched.sigmas[0]) * x0j + sched.sigmas[0] * nj
        out = denoise(lambda x, t: nj - x0j, start, sched)
        np.testing.assert_allclose(np.asarray(out), x0, atol=1e-5)


def test_cfg_combines_cond_and_uncond():
    cond = jnp.full((2, 3), 2.0)
    uncond = jnp.full((2, 3), 0.5)
    out = apply_cfg(jnp.concatenate([cond, uncond]), 3.0)
    np.testing.assert_allclose(np.asarray(out), 0.5 + 3.0 * 1.5)
    np.testing.assert_allclose(np.asarray(apply_cfg(jnp.concatenate([cond, uncond]), 1.0)), 2.0)


def test_bad_sampler_arguments():
    with pytest.raises(ValueError, match="sample.sampler"):
        make_schedule("ddim")
    with pytest.raises(ValueError, match="steps"):
        flow_sigmas(0)
    with pytest.raises(ValueError, match="sigma_grid"):
        flow_sigmas(4, 5.0, "karras")
