"""Flow-matching loss (docs/design.md §5), schedules and config validation: exact numbers, no model compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirage_jax.config import load_config
from mirage_jax.config_checks import validate_config
from mirage_jax.sampling import shift_sigmas
from mirage_jax.train.loss import LossSettings, flow_matching_loss, sample_sigmas
from mirage_jax.train.optimizer import learning_rate_schedule, make_optimizer
from mirage_jax.train.validate import stage_plan

B, TL, H, W, C, R, P, L, D = 3, 9, 4, 6, 8, 4, 2, 5, 7


def make_batch(seed=0):
    """A batch with the training example's shapes (random numbers; the loss is tested against an oracle model)."""
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {"target_latents": f(B, TL, H, W, C), "target_scene": f(B, TL, H, W, C),
            "target_hit": rng.random((B, TL, H, W)) > 0.5, "preceding_latents": f(B, P, H, W, C),
            "preceding_scene": f(B, P, H, W, C), "preceding_hit": rng.random((B, P, H, W)) > 0.5,
            "preceding_mask": np.array([[True, False], [True, True], [False, False]]),  # real ones first
            "reference_latents": f(B, R, H, W, C),
            "reference_mask": np.array([[False, False, False, True], [True] * 4, [False] * 4]),  # real ones last
            "context": f(B, L, D)}


class Oracle:
    """A stand-in 'model' that knows x0 and returns the exact velocity (σ>0) plus a chosen error per frame."""

    def __init__(self, x0, error_per_frame, num_refs):
        self.x0, self.error, self.r, self.calls = x0, error_per_frame, num_refs, []

    def __call__(self, latents, timesteps, context, *, num_references, control, frame_mask):
        self.calls.append(dict(latents=latents, timesteps=timesteps, context=context, num_references=num_references,
                               control=control, frame_mask=frame_mask))
        r = num_references
        sigma = timesteps[:, r:r + TL, None, None, None] / 1000.0
        xt = latents[:, r:r + TL]
        v = jnp.where(sigma > 0, (xt - self.x0) / jnp.maximum(sigma, 1e-12), 0.0)
        v = v + self.error[None, :, None, None, None]
        pad = jnp.zeros_like(latents[:, :r])
        return jnp.concatenate([pad, v, jnp.zeros_like(latents[:, r + TL:])], axis=1)


def test_shift_and_sigma_sampling():
    s = jnp.linspace(0, 1, 11)
    np.testing.assert_allclose(shift_sigmas(s, 5.0), 5 * s / (1 + 4 * s), rtol=1e-6)
    sig = np.asarray(sample_sigmas(jax.random.PRNGKey(0), 64, TL, 5.0))
    assert sig.shape == (64, TL) and np.all(sig[:, 0] == 0) and np.all((sig[:, 1:] > 0) & (sig[:, 1:] < 1))
    # shift 5 moves the median of U(0,1) (0.5) to 5/6
    assert abs(np.median(sig[:, 1:]) - 5 / 6) < 0.03


def test_loss_excludes_frame0_and_counts_every_target_frame():
    batch = make_batch()
    x0 = jnp.asarray(batch["target_latents"])
    settings = LossSettings(shift=5.0, drop_prob=0.0, max_references=R, max_preceding=P, score_source="hit_mask")
    key, empty = jax.random.PRNGKey(3), jnp.zeros((L, D))
    exact, _ = flow_matching_loss(Oracle(x0, jnp.zeros(TL), R), batch, key, settings, empty)
    assert float(exact) < 1e-8
    frame0_off = jnp.zeros(TL).at[0].set(3.0)
    loss0, _ = flow_matching_loss(Oracle(x0, frame0_off, R), batch, key, settings, empty)
    assert float(loss0) < 1e-8  # frame 0 is clean and excluded
    frame4_off = jnp.zeros(TL).at[4].set(2.0)
    loss4, aux = flow_matching_loss(Oracle(x0, frame4_off, R), batch, key, settings, empty)
    np.testing.assert_allclose(float(loss4), 4.0 / (TL - 1), rtol=1e-5)  # MSE averaged over frames 1..8
    np.testing.assert_allclose(float(aux["bucket_sum"].sum()), 4.0 * B, rtol=1e-5)
    assert float(aux["bucket_count"].sum()) == B * (TL - 1)


def test_sequence_layout_timesteps_masks_and_control():
    batch = make_batch()
    oracle = Oracle(jnp.asarray(batch["target_latents"]), jnp.zeros(TL), 2)
    settings = LossSettings(shift=5.0, drop_prob=0.0, max_references=2, max_preceding=1, score_source="hit_mask")
    flow_matching_loss(oracle, batch, jax.random.PRNGKey(0), settings, jnp.zeros((L, D)))
    call = oracle.calls[0]
    assert call["num_references"] == 2 and call["latents"].shape == (B, 2 + TL + 1, H, W, C)
    t = np.asarray(call["timesteps"])
    assert np.all(t[:, :2] == 0) and np.all(t[:, 2] == 0) and np.all(t[:, -1] == 0) and np.all(t[:, 3:-1] > 0)
    # capped: the last reference slots (where real references sit), the first preceding slot (likewise)
    np.testing.assert_array_equal(call["latents"][:, :2], batch["reference_latents"][:, 2:])
    np.testing.assert_array_equal(call["latents"][:, -1], batch["preceding_latents"][:, 0])
    np.testing.assert_array_equal(call["latents"][:, 2], batch["target_latents"][:, 0])  # frame 0 clean
    want_mask = np.concatenate([batch["reference_mask"][:, 2:], np.ones((B, TL), bool),
                                batch["preceding_mask"][:, :1]], axis=1)
    np.testing.assert_array_equal(call["frame_mask"], want_mask)
    control = np.asarray(call["control"])
    assert control.shape == (B, TL + 1, H, W, 2 * C)
    hit = np.concatenate([batch["target_hit"], batch["preceding_hit"][:, :1]], axis=1)
    scene = np.concatenate([batch["target_scene"], batch["preceding_scene"][:, :1]], axis=1)
    np.testing.assert_array_equal(control[..., :C], np.where(hit[..., None], scene, 0))
    np.testing.assert_array_equal(control[..., C:], np.broadcast_to(hit[..., None], scene.shape).astype(np.float32))


@pytest.mark.parametrize("drop_prob, expect_empty", [(0.0, False), (1.0, True)])
def test_text_dropout_replaces_context_with_the_empty_prompt(drop_prob, expect_empty):
    batch = make_batch()
    oracle = Oracle(jnp.asarray(batch["target_latents"]), jnp.zeros(TL), R)
    empty = jnp.full((L, D), 7.0)
    settings = LossSettings(drop_prob=drop_prob, max_references=R, max_preceding=P, score_source="hit_mask")
    flow_matching_loss(oracle, batch, jax.random.PRNGKey(0), settings, empty)
    want = np.broadcast_to(empty, (B, L, D)) if expect_empty else batch["context"]
    np.testing.assert_array_equal(oracle.calls[0]["context"], want)


def test_schedule_warmup_then_cosine_and_clipping():
    c = load_config("tiny", ["--config.train.lr=0.1", "--config.train.warmup_steps=10",
                             "--config.train.schedule=cosine"])
    sched = learning_rate_schedule(c.train, 110)
    np.testing.assert_allclose([float(sched(s)) for s in (0, 5, 10, 60, 110)], [0, 0.05, 0.1, 0.05, 0], atol=1e-6)
    tx = make_optimizer(c.train, 110)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype in (jnp.float32, jnp.int32)


def test_stage_plan_and_validation_errors():
    c = load_config("tiny", ["--config.train.stages=('vace','lora')", "--config.train.stage_steps=(3,5)"])
    assert stage_plan(c.train) == [("vace", 3), ("lora", 5)]
    c = load_config("tiny", ["--config.train.stages=vace", "--config.train.num_steps=7"])
    assert stage_plan(c.train) == [("vace", 7)]
    validate_config(load_config("tiny"), training=True, device_count=1, process_count=1)
    data_parallel = "--config.mesh.fsdp=-1"  # 8 data-parallel devices
    bad = [(["--config.train.lr=0"], "train.lr"), (["--config.train.stages=('vace','bogus')"], "train.stages"),
           (["--config.train.batch_size=6", data_parallel], "train.batch_size"),
           (["--config.train.stage_steps=(1,2)"], "stage_steps"),
           (["--config.model.score_source=white"], "score_source"), (["--config.train.grad_accum=0"], "grad_accum"),
           (["--config.mesh.fsdp=-1", "--config.mesh.tensor=3"], "mesh"),
           (["--config.mesh.fsdp=16"], "mesh"), (["--config.train.schedule=linear"], "schedule"),
           # every command's checks (not only training's): resolution, frame counts, clips, choices
           (["--config.data.height=30"], "data.height=30: expected a positive multiple of 8"),
           (["--config.data.target_frames=32"], "data.target_frames=32: expected a frame count 4N\\+1"),
           (["--config.data.clip_frames=21"], "data.clip_frames=21: expected >= data.target_frames"),
           (["--config.data.num_clips=0"], "data.num_clips"), (["--config.sample.cache=voxel"], "sample.cache"),
           (["--config.memory.reference_rule=later"], "memory.reference_rule"),
           (["--config.memory.capacity=2000000000000"], "memory.capacity"),
           (["--config.sample.chunk_frames=3"], "sample.chunk_frames")]
    for overrides, field in bad:
        with pytest.raises(ValueError, match=field):
            validate_config(load_config("tiny", overrides), training=True, device_count=8, process_count=1)
