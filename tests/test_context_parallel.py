"""Context parallelism: the DiT's tokens split over the ``context`` mesh axis give the single-device result.

On 8 simulated CPU devices: the forward pass of the DiT + VACE (references, preceding frames, padded frames
masked out) and one training step (loss, updated parameters) equal one device within fp32 rounding, and the
compiled programs do move tokens with all-to-alls (so the equality is not an accident of XLA gathering the
sequence). The config refuses a ``context`` size that does not divide the heads or a frame's tokens.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from mirage_jax.config import load_config
from mirage_jax.config_checks import validate_config
from mirage_jax.models import build_model
from mirage_jax.models.context_parallel import attend_frames
from mirage_jax.sharding import make_mesh
from tests.test_train_step import OVERRIDES, run_steps

# 4 heads of 32 (the RoPE split of the original), 28 tokens per frame at 32x56: context 2 and 4 both divide
CP_OVERRIDES = OVERRIDES + ["--config.model.dim=128", "--config.model.num_heads=4", "--config.model.ffn_dim=256",
                            "--config.model.num_layers=2", "--config.model.vace_layers=(0,)"]


@pytest.fixture(scope="module")
def config():
    return load_config("tiny", CP_OVERRIDES)


def dit_inputs(seed=0, batch=2, refs=2, targets=5, preceding=2):
    rng = np.random.default_rng(seed)
    frames = refs + targets + preceding
    latents = rng.standard_normal((batch, frames, 8, 14, 48)).astype(np.float32)
    control = rng.standard_normal((batch, frames - refs, 8, 14, 96)).astype(np.float32)
    timesteps = np.where(np.arange(frames) < refs, 0.0, rng.uniform(0, 1000, (batch, frames))).astype(np.float32)
    frame_mask = np.ones((batch, frames), bool)
    frame_mask[1, :1] = False  # a padded reference in the second example
    frame_mask[1, -1] = False  # and a padded preceding frame
    context = rng.standard_normal((batch, 8, 32)).astype(np.float32)
    return dict(latents=latents, timesteps=timesteps, context=context, control=control, frame_mask=frame_mask,
                num_references=refs)


def forward(config, mesh, inputs):
    model = build_model(config, seed=0, mesh=mesh)
    graphdef, state = nnx.split(model)
    refs = inputs["num_references"]
    arrays = {k: v for k, v in inputs.items() if k != "num_references"}

    @jax.jit
    def run(state, arrays):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return nnx.merge(graphdef, state)(arrays.pop("latents"), arrays.pop("timesteps"),
                                              arrays.pop("context"), num_references=refs, **arrays)

    return np.asarray(run(state, arrays)), run.lower(state, arrays).compile().as_text()


@pytest.mark.parametrize("sizes", [dict(context=2, fsdp=4), dict(context=4, fsdp=2), dict(context=2, tensor=2,
                                                                                          fsdp=2)])
def test_dit_forward_with_context_parallelism_equals_one_device(config, sizes):
    inputs = dit_inputs()
    want, one_hlo = forward(config, make_mesh(1, 1, 1, jax.devices()[:1]), inputs)
    mesh = make_mesh(devices=jax.devices()[:8], **{"data": 1, "tensor": 1, **sizes})
    got, hlo = forward(config, mesh, inputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert "all-to-all" in hlo and "all-to-all" not in one_hlo


def test_one_training_step_with_context_parallelism_equals_one_device(config):
    _, one, _, loss_one = run_steps(config, make_mesh(1, 1, 1, jax.devices()[:1]), "full", 1)
    _, cp, _, loss_cp = run_steps(config, make_mesh(1, 4, 1, jax.devices()[:8], context=2), "full", 1)
    np.testing.assert_allclose(loss_cp, loss_one, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(one["opt"]), jax.tree.leaves(cp["opt"]), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-7)  # Adam moments: 0.1 g
    for a, b in zip(jax.tree.leaves(one["trainable"]), jax.tree.leaves(cp["trainable"]), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-4)


def test_cross_attention_keys_are_not_split_and_need_no_all_to_all():
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.standard_normal((2, 3, 4, 2, 8)), jnp.float32)  # [B, F, S, H, d]
    text = jnp.asarray(rng.standard_normal((2, 5, 2, 8)), jnp.float32)  # [B, L, H, d]
    want = attend_frames(q, text, text, None, "xla")
    mesh = make_mesh(1, 4, 1, jax.devices()[:8], context=2)
    run = jax.jit(lambda q, k: attend_frames(q, k, k, None, "xla"))
    with jax.set_mesh(mesh):
        q, text = (jax.device_put(a, NamedSharding(mesh, PartitionSpec())) for a in (q, text))
        np.testing.assert_allclose(run(q, text), want, rtol=1e-6, atol=1e-6)
        assert "all-to-all" not in run.lower(q, text).compile().as_text()


@pytest.mark.parametrize("overrides, message", [
    (["--config.mesh.context=3"], "a divisor of model.num_heads (4)"),
    (["--config.mesh.context=8"], "a divisor of model.num_heads (4)"),
    (["--config.mesh.context=4", "--config.data.height=24"], "a divisor of the tokens per frame (21 at 24x56)"),
])
def test_context_sizes_that_do_not_divide_heads_or_tokens_are_refused(overrides, message):
    with pytest.raises(ValueError, match=r"config\.mesh\.context=\d+: expected " + message.replace("(", r"\(")
                       .replace(")", r"\)")):
        validate_config(load_config("tiny", CP_OVERRIDES + overrides))


def test_generation_with_context_parallelism_equals_one_device():
    """Two chunks with the latent memory: the denoising on a context-parallel mesh gives the one-device video."""
    from mirage_jax.data.synthetic import render_clip
    from mirage_jax.world import rollout

    config = load_config("tiny", CP_OVERRIDES + ["--config.sample.chunk_frames=9", "--config.sample.steps=2"])
    clip = render_clip(0, 17, 32, 56, "revisit")
    one = rollout(config, build_model(config, seed=0), clip, 17, progress=False)
    mesh = make_mesh(1, 4, 1, jax.devices()[:8], context=2)
    cp = rollout(config, build_model(config, seed=0, mesh=mesh), clip, 17, progress=False, mesh=mesh)
    np.testing.assert_allclose(np.asarray(cp.latents), np.asarray(one.latents), rtol=1e-5, atol=1e-5)
    assert [c["cache_points"] for c in cp.chunks] == [c["cache_points"] for c in one.chunks]


def test_generation_uses_a_mesh_only_when_it_splits_one_video():
    from mirage_jax.world.loading import generation_mesh

    assert generation_mesh(load_config("tiny", CP_OVERRIDES + ["--config.mesh.fsdp=4"])) is None
    mesh = generation_mesh(load_config("tiny", CP_OVERRIDES + ["--config.mesh.context=2", "--config.mesh.fsdp=2"]))
    assert dict(mesh.shape) == {"data": 1, "fsdp": 2, "context": 2, "tensor": 1}


@pytest.mark.parametrize("impl", ["xla", "chunked"])
def test_bfloat16_gradients_through_self_and_cross_attention_compile_and_match(impl):
    """The production dtype: gradients of both attentions under a context axis (the text's gradient is summed
    over it in float32; a bfloat16 sum made XLA:CPU abort) equal one device's within bfloat16 rounding."""
    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.standard_normal((2, 3, 4, 2, 8)), jnp.bfloat16)  # [B, F, S, H, d]
    text = jnp.asarray(rng.standard_normal((2, 5, 2, 8)), jnp.bfloat16)
    mask = jnp.asarray(rng.random((2, 12)) > 0.2)

    def loss(q, text):
        out = attend_frames(q, q, q, mask, impl) + attend_frames(q, text, text, None, impl)
        return (out.astype(jnp.float32) ** 2).sum()

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    want = grad(q, text)
    mesh = make_mesh(1, 4, 1, jax.devices()[:8], context=2)
    with jax.set_mesh(mesh):
        placed = jax.device_put((q, text), NamedSharding(mesh, PartitionSpec()))
        got = grad(*placed)
    for a, b in zip(want, got, strict=True):
        np.testing.assert_allclose(np.asarray(b, np.float32), np.asarray(a, np.float32), rtol=0.05, atol=0.05)
