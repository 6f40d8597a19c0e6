"""WanDiT behaviour: RoPE positions (vs an independent numpy construction), frame masks, LoRA merge, VACE
control, pure split/merge training steps with filters, remat/unscanned equivalence, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mirage_jax.config import load_config
from mirage_jax.models import build_model
from mirage_jax.models.lora import merge_lora, trainable_filter
from mirage_jax.models.rope import apply_rope, rope_positions, rope_tables
from mirage_jax.models.vace import build_control

B, F, H, W, C = 2, 6, 4, 6, 48  # frames: 2 references | 3 targets | 1 preceding
R = 2


@jax.jit
def _shifted(state, key, scale):
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                        for x, k in zip(leaves, keys)])


def perturb(model, seed=0, scale=0.3):
    """Moves every parameter (zero-init heads, after_proj, LoRA B included) away from its init."""
    nnx.update(model, _shifted(nnx.state(model, nnx.Param), jax.random.key(seed), scale))
    return model


@pytest.fixture(scope="module")
def config():
    return load_config("configs/tiny.py")


@pytest.fixture(scope="module")
def model(config):
    return perturb(build_model(config, seed=0))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, F, H, W, C)).astype(np.float32)
    t = np.concatenate([np.zeros((B, R + 1)), np.full((B, F - R - 2), 800.0), np.zeros((B, 1))], 1).astype(np.float32)
    ctx = rng.standard_normal((B, 8, 32)).astype(np.float32)
    ctl = rng.standard_normal((B, F - R, H, W, 96)).astype(np.float32)
    return x, t, ctx, ctl


@pytest.fixture(scope="module")
def forward():
    @nnx.jit(static_argnames=("num_references",))
    def fwd(model, x, t, ctx, ctl, mask, num_references=R):
        return model(x, t, ctx, num_references=num_references, control=ctl, frame_mask=mask)

    return fwd


def test_rope_positions_match_independent_numpy():
    f, h, w, r, d, theta = 7, 3, 4, 2, 32, 10000.0
    expected = []
    for frame in range(f):
        for i in range(h):
            for j in range(w):
                if frame < r:  # references: temporal -R..-1, height shifted by one frame height
                    expected.append((frame - r, i + h, j))
                else:  # targets 0.., preceding continue
                    expected.append((frame - r, i, j))
    pos = rope_positions(f, h, w, r)
    np.testing.assert_array_equal(pos, np.array(expected))
    # rotation: complex multiplication of interleaved pairs, dims (12, 10, 10) for d = 32
    x = np.random.default_rng(1).standard_normal((1, len(pos), 2, d)).astype(np.float32)
    cos, sin = rope_tables(pos, d, theta)
    ours = np.asarray(apply_rope(jnp.asarray(x), jnp.asarray(cos), jnp.asarray(sin)))
    split = [12, 10, 10]
    freqs = np.concatenate([theta ** (-np.arange(0, n, 2) / n) for n in split])
    axis_of_pair = np.repeat([0, 1, 2], [n // 2 for n in split])
    angle = pos[:, axis_of_pair] * freqs  # [N, d/2]
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * angle)[None, :, None, :]
    ref = np.stack([z.real, z.imag], -1).reshape(x.shape)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_forward_shape_and_padded_frames_are_ignored(model, inputs, forward):
    x, t, ctx, ctl = inputs
    full = jnp.ones((B, F), bool)
    out = np.asarray(forward(model, x, t, ctx, ctl, full))
    assert out.shape == (B, F, H, W, C) and np.isfinite(out).all()
    tol = 1e-5 * np.abs(out).max()
    np.testing.assert_allclose(out, np.asarray(forward(model, x, t, ctx, ctl, None)), atol=tol)
    # pad reference 0 and the preceding frame: changing their content must not change the valid frames
    mask = full.at[:, 0].set(False).at[:, -1].set(False)
    base = np.asarray(forward(model, x, t, ctx, ctl, mask))
    x2 = x.copy()
    x2[:, [0, -1]] = 5.0
    ctl2 = ctl.copy()
    ctl2[:, -1] = -3.0
    moved = np.asarray(forward(model, x2, t, ctx, ctl2, mask))
    np.testing.assert_allclose(moved[:, 1:-1], base[:, 1:-1], atol=tol)
    # ...whereas without the mask they do
    assert np.abs(np.asarray(forward(model, x2, t, ctx, ctl2, full))[:, 1:-1] - out[:, 1:-1]).max() > 1e3 * tol


def test_lora_merge_equals_unmerged(model, inputs, forward):
    x, t, ctx, ctl = inputs
    merged = merge_lora(model)
    assert not nnx.state(merged, trainable_filter("lora"))  # factors removed
    a = np.asarray(forward(model, x, t, ctx, ctl, None))
    b = np.asarray(forward(merged, x, t, ctx, ctl, None))
    np.testing.assert_allclose(a, b, atol=2e-4 * np.abs(a).max())
    no_lora = nnx.clone(model)
    nnx.update(no_lora, jax.tree.map(jnp.zeros_like, nnx.state(no_lora, trainable_filter("lora"))))
    assert np.abs(np.asarray(forward(no_lora, x, t, ctx, ctl, None)) - a).max() > 1e-2  # LoRA has an effect


@pytest.mark.slow
def test_filters_and_pure_training_step_scanned_equals_unrolled_remat(model, inputs):
    x, t, ctx, ctl = inputs
    for stage, must, must_not in (("vace", "vace", "lora"), ("lora", "lora_a", "vace"), ("full", "blocks", "lora")):
        paths = ["/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, trainable_filter(stage)))]
        assert paths and any(must in p for p in paths) and not any(must_not in p for p in paths), stage
    _, params, rest = nnx.split(model, trainable_filter("vace"), ...)
    results = []
    # tiny: scanned layers without remat; then the same state with unrolled layers and full remat
    for overrides in ((), ("model.scan_layers=false", "model.remat_policy=nothing_saveable")):
        cfg = load_config("configs/tiny.py", overrides)
        abstract = nnx.eval_shape(lambda c=cfg: build_model(c))
        graphdef = nnx.split(abstract, trainable_filter("vace"), ...)[0]

        @jax.jit
        def step(params, rest, graphdef=graphdef):
            def loss(p):
                m = nnx.merge(graphdef, p, rest)
                return jnp.mean(jnp.square(m(x, t, ctx, num_references=R, control=ctl)))

            return jax.value_and_grad(loss)(params)

        results.append(step(params, rest))
    (v0, g0), (v1, g1) = results
    assert np.isfinite(float(v0)) and abs(float(v0) - float(v1)) <= 1e-5 * abs(float(v0))
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(g0)]
    assert all(np.isfinite(norms)) and sum(n > 0 for n in norms) > 0.9 * len(norms)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(a).max()))


def test_build_control_modes():
    rng = np.random.default_rng(0)
    scene = rng.standard_normal((1, 2, 3, 4, 48)).astype(np.float32)
    hit = rng.random((1, 2, 3, 4)) > 0.5
    c = np.asarray(build_control(scene, hit, "hit_mask"))
    assert c.shape == (1, 2, 3, 4, 96)
    np.testing.assert_array_equal(c[..., :48], np.where(hit[..., None], scene, 0))
    np.testing.assert_array_equal(c[..., 48:], np.broadcast_to(hit[..., None], (1, 2, 3, 4, 48)).astype(np.float32))
    score = rng.standard_normal((2, 3, 4, 48)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(build_control(scene, hit, "constant", score))[0, ..., 48:], score)
    with pytest.raises(ValueError, match="score_latent"):
        build_control(scene, hit, "constant")
    with pytest.raises(ValueError, match="score_source"):
        build_control(scene, hit, "white")


def test_bad_inputs_raise_value_errors(model, inputs):
    x, t, ctx, ctl = inputs
    with pytest.raises(ValueError, match="num_references"):
        model(x, t, ctx, num_references=F)
    with pytest.raises(ValueError, match="timesteps"):
        model(x, t[:, :2], ctx, num_references=R)
    with pytest.raises(ValueError, match="control"):
        model(x, t, ctx, num_references=R, control=ctl[:, :1])
    with pytest.raises(ValueError, match="frame_mask"):
        model(x, t, ctx, num_references=R, frame_mask=np.ones((B, F), np.float32))
    with pytest.raises(ValueError, match="attention"):
        build_model(load_config("configs/tiny.py", ["model.attention=splash"]))


def test_chunked_attention_matches_xla_with_grads():
    from mirage_jax.models.attention import attend, chunked_attention

    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, n, 3, 8)), jnp.float32) for n in (50, 40, 40))
    mask = jnp.asarray(rng.random((2, 40)) > 0.3)
    ref = lambda q, k, v: jnp.sum(jnp.sin(attend(q, k, v, mask, "xla")))  # noqa: E731
    ours = lambda q, k, v: jnp.sum(jnp.sin(chunked_attention(q, k, v, mask, chunk=16)))  # noqa: E731
    np.testing.assert_allclose(ours(q, k, v), ref(q, k, v), rtol=1e-5)
    for a, b in zip(jax.grad(ours, (0, 1, 2))(q, k, v), jax.grad(ref, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(a, b, atol=1e-5)
