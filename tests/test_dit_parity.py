"""Parity of our WanDiT (+VACE) against diffusers' WanTransformer3DModel / WanVACETransformer3DModel.

Random tiny torch models (head dim 32, every parameter perturbed away from its init so swapped or zero-init
weights would show) are saved with ``save_pretrained``, converted by ``mirage_jax.convert.from_diffusers`` and
run on the same inputs in fp32. Tolerance: max |ours - theirs| <= 1e-4 * max |theirs|.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_torch_stack

TOL = 1e-4
B, F, H, W, C, L, DTEXT = 2, 3, 8, 8, 48, 16, 32
KW = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=C, out_channels=C,
          text_dim=DTEXT, freq_dim=256, ffn_dim=128, num_layers=2, cross_attn_norm=True, eps=1e-6)


def _perturbed(model, torch, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, F, H, W, C)).astype(np.float32)
    ctx = rng.standard_normal((B, L, DTEXT)).astype(np.float32)
    ctx[:, 10:] = 0.0  # zero-padded text rows, no mask (as the pipelines feed it)
    return x, ctx


def _torch_layout(a, torch):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1)))  # [B,F,H,W,C] -> [B,C,F,H,W]


def _check(ours, theirs):
    theirs = np.moveaxis(theirs, 1, -1)
    err = np.abs(np.asarray(ours) - theirs).max()
    scale = np.abs(theirs).max()
    assert scale > 1e-2, "degenerate reference output"
    assert err <= TOL * scale, f"max abs diff {err:.3e} vs output scale {scale:.3e}"


@pytest.fixture(scope="module")
def dit_pair(tmp_path_factory):
    torch, diffusers = require_torch_stack("diffusers")
    from mirage_jax.convert import from_diffusers

    torch.manual_seed(0)
    ref = _perturbed(diffusers.WanTransformer3DModel(**KW), torch, 1)
    folder = tmp_path_factory.mktemp("wan_dit")
    ref.save_pretrained(folder)
    model, config = from_diffusers(folder)
    return torch, ref, model, config


def test_dit_per_frame_timesteps_match_diffusers(dit_pair):
    torch, ref, model, _ = dit_pair
    x, ctx = _inputs()
    t_frames = np.array([[0.0, 700.0, 700.0], [0.0, 250.0, 250.0]], np.float32)  # frame 0 clean
    t_tokens = np.repeat(t_frames, (H // 2) * (W // 2), axis=1)  # diffusers' per-token (TI2V) layout
    with torch.no_grad():
        theirs = ref(_torch_layout(x, torch), torch.from_numpy(t_tokens), torch.from_numpy(ctx),
                     return_dict=False)[0].numpy()
    ours = model(x, t_frames, ctx, num_references=0)
    _check(ours, theirs)


def test_vace_matches_diffusers_at_scalar_timestep(tmp_path):
    torch, diffusers = require_torch_stack("diffusers")
    from mirage_jax.convert import from_diffusers

    torch.manual_seed(0)
    ref = _perturbed(diffusers.WanVACETransformer3DModel(**KW, vace_layers=[0, 1], vace_in_channels=96), torch, 2)
    ref.save_pretrained(tmp_path)
    model, config = from_diffusers(tmp_path)
    assert config.model.vace_layers == (0, 1)
    x, ctx = _inputs(1)
    control = np.random.default_rng(3).standard_normal((B, F, H, W, 96)).astype(np.float32)
    t = np.array([600.0, 90.0], np.float32)
    with torch.no_grad():
        theirs = ref(_torch_layout(x, torch), torch.from_numpy(t), torch.from_numpy(ctx),
                     control_hidden_states=_torch_layout(control, torch),
                     control_hidden_states_scale=torch.ones(2), return_dict=False)[0].numpy()
    ours = model(x, np.repeat(t[:, None], F, axis=1), ctx, num_references=0, control=control)
    _check(ours, theirs)
    # the VACE branch matters: without control the output differs clearly
    without = np.asarray(model(x, np.repeat(t[:, None], F, axis=1), ctx, num_references=0))
    assert np.abs(without - np.moveaxis(theirs, 1, -1)).max() > 100 * TOL * np.abs(theirs).max()
