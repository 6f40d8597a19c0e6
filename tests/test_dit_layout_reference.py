"""The Mirage wiring of ``WanDiT`` against an independent torch reference written from the design.

The reference (``MirageReference``) reads the weights of a diffusers ``WanVACETransformer3DModel`` (diffusers
names, torch layouts) and computes with its own code, in float64 (the timestep sinusoid in float32, as
diffusers): the Wan block (adaLN per token, q/k RMSNorm over the full width, 3-D RoPE on interleaved pairs),
the sequence ``[references | targets | preceding]`` with
temporal positions ``-R..-1`` / ``0..T-1`` / ``T..T+P-1`` and height positions ``h..2h-1`` for the references,
per-frame timesteps, the VACE branch over the non-reference tokens with its hints added after the mapped DiT
layers to the non-reference tokens only, and LoRA on every q, k, v, o and FFN linear with multiplier α/r.

The case is built to expose wiring errors: a non-square token grid (3 x 5), R = 3 references, P = 2 preceding
latents, sparse ``vace_layers`` (0, 2 of 3 layers), LoRA rank 4 with α = 10 (α/r = 2.5), batch 2 with
different timesteps. Tolerance: max |ours - reference| <= 1e-5 x max |reference| (fp32 against float64).
Also: masked padding slots change nothing (the padded sequence equals the unpadded one on the real tokens).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flax import nnx

from tests.conftest import require_torch_stack

B, R, T, P, C, CTRL = 2, 3, 3, 2, 48, 96
HL, WL = 6, 10  # latent grid: 3 x 5 tokens
LAYERS, VACE_LAYERS, HEADS, HEAD_DIM, FFN, TEXT, LTEXT = 3, (0, 2), 2, 32, 96, 24, 7
RANK, ALPHA = 4, 10.0
LORA_MODULES = [("self_attn", "attn1", p) for p in "qkvo"] + [("cross_attn", "attn2", p) for p in "qkvo"]


class MirageReference:
    """The Mirage DiT forward, from the design, over a diffusers state dict (float64, torch)."""

    def __init__(self, torch, state: dict, lora: dict):
        self.torch = torch
        self.w = {k: v.double() for k, v in state.items()}
        self.lora = {k: (a.double(), b.double()) for k, (a, b) in lora.items()}  # "blocks.j.self_attn.q" -> (A, B)

    def linear(self, x, name, lora_key=None):
        weight = self.w[f"{name}.weight"]
        if lora_key is not None:
            a, b = self.lora[lora_key]  # torch layouts: A [r, in], B [out, r]
            weight = weight + (ALPHA / RANK) * (b @ a)
        return x @ weight.T + self.w[f"{name}.bias"]

    def layer_norm(self, x, eps=1e-6):
        mean = x.mean(-1, keepdim=True)
        return (x - mean) / self.torch.sqrt(((x - mean) ** 2).mean(-1, keepdim=True) + eps)

    def rms(self, x, weight, eps=1e-6):
        return x / self.torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight

    @staticmethod
    def rope_angles(num_frames, h, w, num_refs):
        """[tokens, HEAD_DIM/2] angles: temporal f - R, height i (+h for references), width j; (12, 10, 10) split."""
        f, i, j = np.meshgrid(np.arange(num_frames), np.arange(h), np.arange(w), indexing="ij")
        positions = [f - num_refs, i + h * (f < num_refs), j]
        s = HEAD_DIM // 6
        parts = []
        for pos, dim in zip(positions, (HEAD_DIM - 4 * s, 2 * s, 2 * s)):
            freqs = 10000.0 ** (-np.arange(0, dim, 2) / dim)
            parts.append(pos.reshape(-1, 1) * freqs)
        return np.concatenate(parts, axis=1)

    def rotate(self, x, angles):
        """Interleaved pairs (x[2k], x[2k+1]) of each head rotated by ``angles [tokens, HEAD_DIM/2]``."""
        torch = self.torch
        c, s = torch.from_numpy(np.cos(angles))[None, :, None], torch.from_numpy(np.sin(angles))[None, :, None]
        pairs = x.reshape(*x.shape[:-1], HEAD_DIM // 2, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack([a * c - b * s, a * s + b * c], -1).reshape(x.shape)

    def attention(self, q, k, v):
        heads = lambda t: t.reshape(t.shape[0], t.shape[1], HEADS, HEAD_DIM)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        scores = self.torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(HEAD_DIM)
        out = self.torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
        return out.reshape(out.shape[0], out.shape[1], HEADS * HEAD_DIM)

    def block(self, x, prefix, mod, ctx, angles, lora_block=None):
        """One Wan block on tokens ``x [B, L, D]``; ``mod [B, L, 6, D]`` the time projection per token."""
        table = self.w[f"{prefix}.scale_shift_table"][0]  # [6, D]
        shift, scale, gate, c_shift, c_scale, c_gate = (table + mod).unbind(2)
        lk = (lambda name: None) if lora_block is None else (lambda name: f"{lora_block}.{name}")  # noqa: E731
        n = self.layer_norm(x) * (1 + scale) + shift
        q = self.rms(self.linear(n, f"{prefix}.attn1.to_q", lk("self_attn.q")), self.w[f"{prefix}.attn1.norm_q.weight"])
        k = self.rms(self.linear(n, f"{prefix}.attn1.to_k", lk("self_attn.k")), self.w[f"{prefix}.attn1.norm_k.weight"])
        v = self.linear(n, f"{prefix}.attn1.to_v", lk("self_attn.v"))
        heads = lambda t: t.reshape(t.shape[0], t.shape[1], HEADS, HEAD_DIM)  # noqa: E731
        q, k = (self.rotate(heads(t), angles).reshape(t.shape) for t in (q, k))
        x = x + gate * self.linear(self.attention(q, k, v), f"{prefix}.attn1.to_out.0", lk("self_attn.o"))
        n = self.layer_norm(x) * self.w[f"{prefix}.norm2.weight"] + self.w[f"{prefix}.norm2.bias"]
        q = self.rms(self.linear(n, f"{prefix}.attn2.to_q", lk("cross_attn.q")),
                     self.w[f"{prefix}.attn2.norm_q.weight"])
        k = self.rms(self.linear(ctx, f"{prefix}.attn2.to_k", lk("cross_attn.k")),
                     self.w[f"{prefix}.attn2.norm_k.weight"])
        v = self.linear(ctx, f"{prefix}.attn2.to_v", lk("cross_attn.v"))
        x = x + self.linear(self.attention(q, k, v), f"{prefix}.attn2.to_out.0", lk("cross_attn.o"))
        n = self.layer_norm(x) * (1 + c_scale) + c_shift
        hidden = self.torch.nn.functional.gelu(self.linear(n, f"{prefix}.ffn.net.0.proj", lk("ffn.0")),
                                               approximate="tanh")
        return x + c_gate * self.linear(hidden, f"{prefix}.ffn.net.2", lk("ffn.2"))

    def patches(self, video, name):
        """Conv3d (1,2,2) patch embedding of ``video [B, F, H, W, C]`` -> tokens [B, F*h*w, D], (f, i, j) order."""
        torch = self.torch
        x = torch.from_numpy(np.moveaxis(video, -1, 1)).double()
        out = torch.nn.functional.conv3d(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"], stride=(1, 2, 2))
        return out.flatten(2).transpose(1, 2)

    def __call__(self, latents, t_frames, context, control, num_refs):
        torch = self.torch
        b, f = latents.shape[:2]
        h, w = latents.shape[2] // 2, latents.shape[3] // 2
        s = h * w
        x = self.patches(latents, "patch_embedding")
        t = torch.from_numpy(np.repeat(t_frames, s, axis=1))  # per token
        half = 128  # the sinusoid in float32, as diffusers computes it (float64 moves it by ~3e-5 at t ~ 900)
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        sinusoid = torch.cat([torch.cos(t[..., None] * freqs), torch.sin(t[..., None] * freqs)], -1).double()
        temb = self.linear(torch.nn.functional.silu(self.linear(sinusoid, "condition_embedder.time_embedder.linear_1")),
                           "condition_embedder.time_embedder.linear_2")
        mod = self.linear(torch.nn.functional.silu(temb), "condition_embedder.time_proj").reshape(b, f * s, 6, -1)
        ctx = torch.from_numpy(context).double()
        ctx = self.linear(torch.nn.functional.gelu(self.linear(ctx, "condition_embedder.text_embedder.linear_1"),
                                                   approximate="tanh"), "condition_embedder.text_embedder.linear_2")
        angles = self.rope_angles(f, h, w, num_refs)
        first = num_refs * s  # the VACE branch and its hints see the non-reference tokens only
        c = self.linear(self.patches(control, "vace_patch_embedding"), "vace_blocks.0.proj_in") + x[:, first:]
        hints = []
        for k in range(len(VACE_LAYERS)):
            c = self.block(c, f"vace_blocks.{k}", mod[:, first:], ctx, angles[first:])
            hints.append(self.linear(c, f"vace_blocks.{k}.proj_out"))
        for layer in range(LAYERS):
            x = self.block(x, f"blocks.{layer}", mod, ctx, angles, lora_block=f"blocks.{layer}")
            if layer in VACE_LAYERS:
                x = torch.cat([x[:, :first], x[:, first:] + hints[VACE_LAYERS.index(layer)]], 1)
        shift, scale = (self.w["scale_shift_table"][0] + temb[:, :, None]).unbind(2)
        out = self.linear(self.layer_norm(x) * (1 + scale) + shift, "proj_out")  # [B, L, (pt, ph, pw, c)]
        out = out.reshape(b, f, h, w, 2, 2, C).permute(0, 1, 2, 4, 3, 5, 6)
        return out.reshape(b, f, 2 * h, 2 * w, C).numpy()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch, diffusers = require_torch_stack("diffusers")
    from mirage_jax.convert.dit import config_from_diffusers, load_model

    torch.manual_seed(0)
    ref = diffusers.WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM, in_channels=C, out_channels=C,
        text_dim=TEXT, freq_dim=256, ffn_dim=FFN, num_layers=LAYERS, cross_attn_norm=True, eps=1e-6,
        vace_layers=list(VACE_LAYERS), vace_in_channels=CTRL)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    folder = tmp_path_factory.mktemp("vace_dit")
    ref.save_pretrained(folder)
    config = config_from_diffusers(ref.config)
    config.model.lora_rank, config.model.lora_alpha = RANK, ALPHA
    ours, groups = load_model(config, [folder])
    assert groups["initialised"] == ["lora"]
    rng = np.random.default_rng(2)
    state = nnx.state(ours)
    lora = {}
    for path, var in nnx.to_flat_state(state):
        if path[-1] in ("lora_a", "lora_b"):
            var.set_value(np.asarray(rng.normal(0, 0.3, var.shape), np.float32))
    nnx.update(ours, state)
    ffn = {"ffn_in": "ffn.0", "ffn_out": "ffn.2"}
    for layer in range(LAYERS):
        for module in [f"{a}.{p}" for a, _, p in LORA_MODULES] + list(ffn.values()):
            attn, _, leaf = module.partition(".")
            ours_module = ({v: k for k, v in ffn.items()}[module],) if module.startswith("ffn") else (attn, leaf)
            node = ours.blocks
            for part in ours_module:
                node = getattr(node, part)
            a, b = np.asarray(node.lora_a[...][layer]), np.asarray(node.lora_b[...][layer])  # [in, r], [r, out]
            lora[f"blocks.{layer}.{module}"] = (torch.from_numpy(a.T.copy()), torch.from_numpy(b.T.copy()))
    return torch, MirageReference(torch, ref.state_dict(), lora), ours


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    frames = R + T + P
    latents = rng.standard_normal((B, frames, HL, WL, C)).astype(np.float32)
    t = np.zeros((B, frames), np.float32)
    t[0, R + 1: R + T], t[1, R + 1: R + T] = 870.0, 310.0  # references, frame 0 and preceding clean
    context = rng.standard_normal((B, LTEXT, TEXT)).astype(np.float32)
    control = rng.standard_normal((B, T + P, HL, WL, CTRL)).astype(np.float32)
    return latents, t, context, control


def test_sequence_layout_matches_the_reference(models):
    _, reference, ours = models
    latents, t, context, control = _inputs()
    want = reference(latents, t, context, control, R)
    got = np.asarray(ours(latents, t, context, num_references=R, control=control))
    scale = np.abs(want).max()
    assert scale > 0.1
    assert np.abs(got - want).max() <= 1e-5 * scale, np.abs(got - want).max() / scale
    # the references are seen: other reference latents change the targets' outputs clearly
    other = latents.copy()
    other[:, :R] = np.random.default_rng(9).standard_normal(other[:, :R].shape)
    changed = reference(other, t, context, control, R)[:, R:R + T] - want[:, R:R + T]
    assert np.abs(changed).max() > 1e-2 * scale


def test_masked_padding_slots_change_nothing(models):
    """4 reference slots with 1 padding slot (first) and 3 preceding slots with 1 padding (last), masked, equal
    the unpadded sequence on every real token: the padding is invisible and the real entries keep their
    positions (``models.sequence_slots``)."""
    _, _, ours = models
    latents, t, context, control = _inputs(1)
    def pad(a, axis, front):
        filler = np.full_like(np.take(a, [0], axis=axis), 7.0)
        return np.concatenate([filler, a] if front else [a, filler], axis=axis)

    padded = pad(pad(latents, 1, True), 1, False)
    t_padded = pad(pad(t, 1, True), 1, False)
    t_padded[:, 0] = t_padded[:, -1] = 0.0
    control_padded = pad(control, 1, False)
    mask = np.ones((B, R + T + P + 2), bool)
    mask[:, 0] = mask[:, -1] = False
    want = np.asarray(ours(latents, t, context, num_references=R, control=control))
    got = np.asarray(ours(padded, t_padded, context, num_references=R + 1, control=control_padded, frame_mask=mask))
    np.testing.assert_allclose(got[:, 1:-1], want, atol=1e-5 * np.abs(want).max())
