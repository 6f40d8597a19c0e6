"""Parts of the world package: metrics against independent references, the depth head and depth sources, the
RGB cache's pixel-resolution z-buffer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mirage_jax import geometry
from mirage_jax.config import load_config
from mirage_jax.data.synthetic import render_clip
from mirage_jax.models.latent_space import make_latent_space
from mirage_jax.world import LatentDepthHead, depth_head_loss, rollout
from mirage_jax.world.caches import RGBCache, Views
from mirage_jax.world.image_metrics import psnr, ssim
from mirage_jax.world.oracle import oracle_model
from tests.world_config import H, W, tiny_world_config

FRAMES = 49


def _ssim_reference(a, b):
    """skimage-style SSIM (Gaussian σ=1.5, 11 taps, sample covariance, valid region) with scipy.ndimage."""
    from scipy.ndimage import gaussian_filter

    a, b = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    out = []
    for c in range(3):
        x, y = a[..., c], b[..., c]

        def f(z):
            return gaussian_filter(z, 1.5, truncate=3.5)[5:-5, 5:-5]

        n = 121 / 120
        mx, my = f(x), f(y)
        vx, vy, cxy = (f(x * x) - mx**2) * n, (f(y * y) - my**2) * n, (f(x * y) - mx * my) * n
        c1, c2 = 0.01**2, 0.03**2
        out.append((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())
    return np.mean(out)


def test_psnr_and_ssim_match_references():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 24, 30, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    mse = ((a / 255.0 - b / 255.0) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(psnr(a, b), 10 * np.log10(1 / mse), rtol=1e-5)
    np.testing.assert_allclose(ssim(a, b), [_ssim_reference(x, y) for x, y in zip(a, b)], atol=1e-5)
    np.testing.assert_allclose(ssim(a, a), 1.0, atol=1e-6)
    # float frames in [-1, 1] are the same images
    np.testing.assert_allclose(psnr(a.astype(np.float32) / 127.5 - 1, b), psnr(a, b), rtol=1e-5)
    with pytest.raises(ValueError, match="H>=11"):
        ssim(a[:, :8], b[:, :8])


def test_depth_head_learns_log_depth_and_ignores_invalid_cells():
    head = LatentDepthHead(8, hidden=8, num_layers=2, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    latents = jnp.asarray(rng.normal(size=(2, 3, 6, 10, 8)), jnp.float32)
    depth = jnp.exp(0.5 * latents[..., 0] + 1.0)
    np.testing.assert_allclose(np.asarray(head(latents)), 2.0, rtol=1e-6)  # untrained: exp(log 2)
    holes = depth.at[:, :, :2].set(0.0)
    garbage = holes.at[:, :, :2].set(jnp.nan)
    assert float(depth_head_loss(head, latents, holes)) == float(depth_head_loss(head, latents, garbage))
    # pixel-resolution depth (2x) is reduced to the latent grid first
    big = jnp.repeat(jnp.repeat(depth, 2, axis=2), 2, axis=3)
    np.testing.assert_allclose(float(depth_head_loss(head, latents, big)), float(depth_head_loss(head, latents, depth)),
                               rtol=1e-6)
    opt = nnx.Optimizer(head, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(head, opt):
        loss, grads = nnx.value_and_grad(depth_head_loss)(head, latents, depth)
        opt.update(head, grads)
        return loss

    first = float(depth_head_loss(head, latents, depth))
    for _ in range(40):
        step(head, opt)
    last = float(depth_head_loss(head, latents, depth))
    assert last < 0.3 * first, (first, last)
    with pytest.raises(ValueError, match="depth: expected"):
        depth_head_loss(head, latents, depth[:, :2])


@pytest.fixture(scope="module")
def clip():
    return render_clip(0, FRAMES, H, W, "revisit")


def test_rgb_cache_renders_written_frame_exactly(clip):
    config = load_config("tiny")
    config.data.height, config.data.width = H, W
    space = make_latent_space(config)
    cache = RGBCache(4 * H * W, space, write_frames=2)
    frames = clip["frames"][:1].astype(np.float32) / 127.5 - 1
    k, c2w = clip["intrinsics"][:1], clip["poses_c2w"][:1]
    cache.write(None, frames, clip["depths"][:1], None, k, c2w, k)  # one frame (padded to 2: nothing stored)
    assert cache.num_points() == H * W  # every pixel has valid depth, 1 mm voxels keep them apart
    rgb, hit = cache.render(Views(None, None, None, k[:1], c2w[:1], (H, W)))
    assert bool(hit.all())
    np.testing.assert_allclose(np.asarray(rgb[0]), frames[0], atol=1e-6)
    k_lat = np.asarray(geometry.scale_intrinsics(k[:1], (H, W), (H // 4, W // 4)))
    views = Views(k_lat, c2w[:1], (H // 4, W // 4), k[:1], c2w[:1], (H, W))
    scene, lat_hit = cache.read(views)
    np.testing.assert_allclose(np.asarray(scene), np.asarray(space.encode(frames[None, :1]))[0], atol=1e-6)
    assert lat_hit.shape == (1, H // 4, W // 4) and bool(lat_hit.all())


@pytest.mark.slow
def test_callable_and_head_depth_sources(clip):
    config = tiny_world_config()
    model = oracle_model(48)
    base = rollout(config, model, clip, FRAMES, cache="latent", progress=False)
    calls = []

    def gt_depth(latents, frames, pose_indices):
        calls.append(list(pose_indices))
        return clip["depths"][np.asarray(pose_indices)], None

    same = rollout(config, model, clip, FRAMES, cache="latent", depth_source=gt_depth, progress=False)
    np.testing.assert_array_equal(same.video, base.video)
    assert calls == [[4, 8, 12, 16], [20, 24, 28, 32], [36, 40, 44, 48]]
    head = LatentDepthHead(48, hidden=8, num_layers=2, rngs=nnx.Rngs(0))
    flat = rollout(config, model, clip, FRAMES, cache="latent", depth_source="head", depth_head=head, progress=False)
    assert flat.settings["depth_source"] == "head"
    assert flat.chunks[-1]["cache_points"] > flat.chunks[0]["cache_points"] > 0
    assert jax.tree_util.tree_structure(flat.cache) == jax.tree_util.tree_structure(base.cache)


def test_denoiser_gives_each_frame_its_timestep():
    """Per-frame timesteps of every model call in one chunk: references, the clean frame 0 and the preceding
    latents at 0; the other targets at the step's timestep (all equal, decreasing over the steps)."""
    from mirage_jax.sampling import schedule_args
    from mirage_jax.world.denoiser import denoise_chunk

    seen = []

    def model(latents, timesteps, context, *, num_references, control=None, frame_mask=None):
        jax.debug.callback(lambda t: seen.append(np.asarray(t)), timesteps)
        return jnp.zeros_like(latents)

    config = load_config("tiny", ["sample.steps=3"])
    r, t, p, h, w, c = 2, 4, 1, 4, 6, 48
    zeros = lambda *shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
    out = denoise_chunk(None, zeros(1, t, h, w, c) + 1.0, zeros(1, h, w, c), zeros(1, r, h, w, c),
                        zeros(1, p, h, w, c), zeros(1, t + p, h, w, 2 * c), jnp.ones((1, r + t + p), bool),
                        zeros(1, 3, 32), zeros(1, 3, 32), graphdef=model, schedule_args=schedule_args(config.sample),
                        num_references=r, guidance_scale=1.0)
    jax.block_until_ready(out)
    assert len(seen) >= 3
    steps = []
    for timesteps in seen:
        assert timesteps.shape == (1, r + t + p)
        assert not timesteps[0, :r + 1].any() and not timesteps[0, r + t:].any()
        noisy = timesteps[0, r + 1: r + t]
        assert (noisy == noisy[0]).all() and noisy[0] > 0
        steps.append(noisy[0])
    assert steps == sorted(steps, reverse=True) and steps[0] > 900


def test_denoiser_guidance_reads_the_prompt():
    """Classifier-free guidance with a text-dependent model: velocity = the mean of its context, 1 for the prompt
    and 0 for the empty prompt, so guidance 2.5 must act as a constant velocity 0 + 2.5 (1 - 0) = 2.5 (a swapped
    prompt pair gives 1 + 2.5 (0 - 1) = -1.5)."""
    from mirage_jax.sampling import schedule_args
    from mirage_jax.world.denoiser import denoise_chunk

    def reads_text(latents, timesteps, context, *, num_references, control=None, frame_mask=None):
        return jnp.broadcast_to(context.mean(axis=(1, 2))[:, None, None, None, None], latents.shape)

    def constant(value):
        return lambda latents, *args, **kwargs: jnp.full_like(latents, value)

    config = load_config("tiny", ["sample.steps=4"])
    r, t, p, h, w, c = 1, 3, 1, 2, 4, 48
    zeros = lambda *shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
    noise = jax.random.normal(jax.random.key(0), (1, t, h, w, c))
    common = (noise, zeros(1, h, w, c), zeros(1, r, h, w, c), zeros(1, p, h, w, c), zeros(1, t + p, h, w, 2 * c),
              jnp.ones((1, r + t + p), bool), jnp.ones((1, 3, 32)), zeros(1, 3, 32))
    kwargs = dict(schedule_args=schedule_args(config.sample), num_references=r)
    guided = denoise_chunk(None, *common, graphdef=reads_text, guidance_scale=2.5, **kwargs)
    want = denoise_chunk(None, *common, graphdef=constant(2.5), guidance_scale=1.0, **kwargs)
    other = denoise_chunk(None, *common, graphdef=constant(-1.5), guidance_scale=1.0, **kwargs)
    np.testing.assert_allclose(np.asarray(guided), np.asarray(want), atol=1e-5)
    assert np.abs(np.asarray(other) - np.asarray(want)).max() > 0.1
