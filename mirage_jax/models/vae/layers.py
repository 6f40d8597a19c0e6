"""Wan2.2 VAE building blocks in Flax NNX, channels-last (``[B, T, H, W, C]``).

Attribute names mirror diffusers' ``AutoencoderKLWan`` (``conv1``, ``norm1.gamma``, ``resample``, ``time_conv``,
``to_qkv``...) so checkpoint conversion is a key rename plus a kernel transpose. Causal layers take a
:class:`~mirage_jax.models.vae.cache.ChunkCache` (the explicit per-chunk cache); the numerics follow
diffusers' Wan VAE (L2-normalising RMS norm, right/bottom padding before the stride-2 conv,
first-chunk special cases of the temporal resamplers, AvgDown3D/DupUp3D channel orders).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mirage_jax.models.numpy_init import Init
from mirage_jax.models.vae.cache import ChunkCache

_CONV2D_DIMS = ("NHWC", "HWIO", "NHWC")


def conv_frames(x: jax.Array, kernel: jax.Array, stride: int = 1, padding=((1, 1), (1, 1))) -> jax.Array:
    """Per-frame 2-D conv: ``x [B, T, H, W, C]``, ``kernel [kh, kw, C, O]`` → ``[B, T, H', W', O]`` (no bias).

    Frames are folded into the batch axis: XLA:CPU runs 2-D convolutions much faster than 3-D ones.
    """
    b, t = x.shape[:2]
    y = jax.lax.conv_general_dilated(
        x.reshape(b * t, *x.shape[2:]), kernel.astype(x.dtype), (stride, stride), padding,
        dimension_numbers=_CONV2D_DIMS,
    )  # fmt: skip
    return y.reshape(b, t, *y.shape[1:])


def _phase_taps(kernel: jax.Array, phase: int) -> jax.Array:
    """The 2 low-resolution taps along axis 0 of a 3-tap ``kernel`` after nearest 2× upsampling, for output
    rows of parity ``phase``: even rows see low-res rows ``(i-1, i)`` with taps ``(k0, k1+k2)``, odd rows
    ``(i, i+1)`` with ``(k0+k1, k2)``."""
    if phase == 0:
        return jnp.stack([kernel[0], kernel[1] + kernel[2]])
    return jnp.stack([kernel[0] + kernel[1], kernel[2]])


def upsample2_conv_frames(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Nearest 2× upsampling then a 'same' 3×3 conv, per frame, without the upsampled input: ``x [B, T, h, w,
    C]``, ``kernel [3, 3, C, O]`` (taps summed in its dtype) → ``[B, T, 2h, 2w, O]`` (no bias).

    Each output pixel parity ``(a, c)`` is a 2×2 conv of the low-resolution input with summed taps
    (:func:`_phase_taps`): 2.25× fewer multiply-adds than convolving the upsampled frames, equal up to float
    rounding of the summed taps.
    """
    b, t, h, w, _ = x.shape
    rows = [_phase_taps(kernel, a) for a in (0, 1)]
    phases = [
        [conv_frames(x, _phase_taps(rows[a].swapaxes(0, 1), c).swapaxes(0, 1), 1, ((1 - a, a), (1 - c, c)))
         for c in (0, 1)]
        for a in (0, 1)
    ]  # fmt: skip
    y = jnp.stack([jnp.stack(row, axis=-2) for row in phases], axis=3)  # [B, T, h, 2(a), w, 2(c), O]
    return y.reshape(b, t, 2 * h, 2 * w, -1)


def winograd_time_conv(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
    """A 3-tap conv, valid in time, of ``x [B, T+2, H, W, C]`` (``T`` even) with ``kernel [3, kh, kw, C, O]``
    (per-frame 2-D convs with ``padding``, no bias) → ``[B, T, H', W', O]``, by Winograd's F(2, 3) over pairs of
    output frames: 4 per-frame 2-D convs per 2 frames instead of 6.

    For the pair fed by frames ``d0..d3`` (``y0 = d0·g0 + d1·g1 + d2·g2``, ``y1 = d1·g0 + d2·g1 + d3·g2``):
    ``m1 = (d0-d2)·g0``, ``m2 = (d1+d2)·(g0+g1+g2)/2``, ``m3 = (d2-d1)·(g0-g1+g2)/2``, ``m4 = (d1-d3)·g2``;
    ``y0 = m1+m2+m3``, ``y1 = m2-m3-m4``. Equal up to float rounding of the frame and tap sums.
    """
    b, t = x.shape[0], x.shape[1] - 2
    # The frame sums read a materialised input: fused into its producers (products: norm, silu), XLA:CPU may
    # contract them into FMAs differently per program, and chunks would no longer match bit for bit.
    x = jax.lax.optimization_barrier(x)
    d = [x[:, j : j + t : 2] for j in range(4)]  # [B, T/2, ...]: frame j of each pair's window
    g0, g1, g2 = kernel[0], kernel[1], kernel[2]  # summed in the parameter dtype; conv_frames casts
    m1 = conv_frames(d[0] - d[2], g0, 1, padding)
    m2 = conv_frames(d[1] + d[2], (g0 + g1 + g2) * 0.5, 1, padding)
    m3 = conv_frames(d[2] - d[1], (g0 - g1 + g2) * 0.5, 1, padding)
    m4 = conv_frames(d[1] - d[3], g2, 1, padding)
    y = jnp.stack([m1 + m2 + m3, m2 - m3 - m4], axis=2)  # [B, T/2, 2, ...]
    return y.reshape(b, t, *y.shape[3:])


class CausalConv3d(nnx.Module):
    """3-D conv, causal in time: ``kt-1`` cached (or zero) frames in front, symmetric spatial zero padding.

    ``kernel [kt, kh, kw, in, out]``, ``bias [out]``. With ``kt > 1`` the layer keeps the last ``kt-1`` frames of
    its (cache-extended) input as its cache slot; ``kt = 1`` layers (shortcuts, quant convs) keep nothing.
    Computed from per-frame 2-D convs (:func:`conv_frames`): 3-tap convolutions by Winograd's F(2, 3) over pairs
    of output frames (:func:`winograd_time_conv`), others (and an odd last frame) as the sum over the time taps;
    a one-frame first chunk uses only the last tap (the others would multiply the zero frames in front).
    """

    def __init__(self, in_dim: int, out_dim: int, kernel=(3, 3, 3), *, init: Init):
        self.kernel_size = tuple(kernel)
        self.kernel = init.kernel((*self.kernel_size, in_dim, out_dim))
        self.bias = init.zeros((out_dim,))
        self.spatial_padding = ((self.kernel_size[1] // 2,) * 2, (self.kernel_size[2] // 2,) * 2)

    def extended(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        """``x [B, T, ...]`` behind the previous chunk's last ``kt-1`` frames (zeros on the first chunk):
        ``[B, T+kt-1, ...]``. Caches its last ``kt-1`` frames."""
        pad_t = self.kernel_size[0] - 1
        prev = cache.take()
        if prev is None:
            prev = jnp.zeros((x.shape[0], pad_t, *x.shape[2:]), x.dtype)
        x = jnp.concatenate([prev, x], axis=1)
        cache.put(x[:, -pad_t:])
        return x

    def conv_taps(self, taps: list[jax.Array]) -> jax.Array:
        """``Σ_k`` per-frame 2-D conv of ``taps[k]`` with the kernel's last ``len(taps)`` time taps, plus bias."""
        kernel = self.kernel[...]
        offset = self.kernel_size[0] - len(taps)
        y = sum(conv_frames(tap, kernel[offset + k], 1, self.spatial_padding) for k, tap in enumerate(taps))
        return y + self.bias[...].astype(taps[0].dtype)

    def conv(self, x: jax.Array, stride_t: int = 1) -> jax.Array:
        """The convolution on already time-padded ``x``: valid in time, 'same' in space."""
        kt = self.kernel_size[0]
        t = (x.shape[1] - kt) // stride_t + 1
        if kt != 3 or stride_t != 1 or t < 2:
            return self.conv_taps([x[:, k : k + stride_t * (t - 1) + 1 : stride_t] for k in range(kt)])
        even = t - t % 2
        y = winograd_time_conv(x[:, : even + 2], self.kernel[...], self.spatial_padding)
        y = y + self.bias[...].astype(x.dtype)
        if even == t:
            return y
        return jnp.concatenate([y, self.conv_taps([x[:, even + k : even + k + 1] for k in range(kt)])], axis=1)

    def __call__(self, x: jax.Array, cache: ChunkCache | None = None) -> jax.Array:
        if self.kernel_size[0] == 1:
            return self.conv_taps([x])
        first = cache.first
        extended = self.extended(x, cache)
        return self.conv_taps([x]) if first and x.shape[1] == 1 else self.conv(extended)


class PointwiseConv(nnx.Module):
    """A 1×1(×1) conv = a dense layer over channels: ``kernel [in, out]``, ``bias [out]``."""

    def __init__(self, in_dim: int, out_dim: int, *, init: Init):
        self.kernel = init.kernel((in_dim, out_dim))
        self.bias = init.zeros((out_dim,))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...].astype(x.dtype) + self.bias[...].astype(x.dtype)


class Conv2d(nnx.Module):
    """Per-frame 3×3 conv on ``[B, T, H, W, C]``: ``kernel [3, 3, in, out]``; ``padding`` as lax pairs."""

    def __init__(self, in_dim: int, out_dim: int, *, stride: int = 1, padding=((1, 1), (1, 1)), init: Init):
        self.stride = stride
        self.padding = tuple(tuple(p) for p in padding)
        self.kernel = init.kernel((3, 3, in_dim, out_dim))
        self.bias = init.zeros((out_dim,))

    def __call__(self, x: jax.Array) -> jax.Array:
        return conv_frames(x, self.kernel[...], self.stride, self.padding) + self.bias[...].astype(x.dtype)


class RMSNorm(nnx.Module):
    """Wan VAE norm: ``x / max(||x||₂, 1e-12) · √C · γ`` per voxel over channels (L2 normalise, not eps-in-sqrt)."""

    def __init__(self, dim: int, *, init: Init):
        self.gamma = init.ones((dim,))
        self.scale = float(dim) ** 0.5

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(xf * xf, axis=-1, keepdims=True))
        y = xf / jnp.maximum(norm, 1e-12) * self.scale * self.gamma[...]
        return y.astype(x.dtype)


class ResidualBlock(nnx.Module):
    """``conv2(silu(norm2(conv1(silu(norm1(x)))))) + shortcut(x)``; two cached causal 3×3×3 convs."""

    def __init__(self, in_dim: int, out_dim: int, *, init: Init):
        self.norm1 = RMSNorm(in_dim, init=init)
        self.conv1 = CausalConv3d(in_dim, out_dim, init=init)
        self.norm2 = RMSNorm(out_dim, init=init)
        self.conv2 = CausalConv3d(out_dim, out_dim, init=init)
        self.conv_shortcut = PointwiseConv(in_dim, out_dim, init=init) if in_dim != out_dim else None

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        h = x if self.conv_shortcut is None else self.conv_shortcut(x)
        x = self.conv1(jax.nn.silu(self.norm1(x)), cache)
        x = self.conv2(jax.nn.silu(self.norm2(x)), cache)
        return x + h


class AttentionBlock(nnx.Module):
    """Single-head spatial self-attention per frame over ``H·W`` tokens; q, k, v are channel thirds of to_qkv."""

    def __init__(self, dim: int, *, init: Init):
        self.norm = RMSNorm(dim, init=init)
        self.to_qkv = PointwiseConv(dim, 3 * dim, init=init)
        self.proj = PointwiseConv(dim, dim, init=init)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        q, k, v = jnp.split(self.to_qkv(self.norm(x)).reshape(b * t, h * w, 3 * c), 3, axis=-1)
        logits = jnp.einsum("nqc,nkc->nqk", q, k) / jnp.sqrt(jnp.asarray(c, x.dtype))
        y = jnp.einsum("nqk,nkc->nqc", jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(x.dtype), v)
        return x + self.proj(y.reshape(b, t, h, w, c))


class MidBlock(nnx.Module):
    """resnet → attention → resnet."""

    def __init__(self, dim: int, *, init: Init):
        self.resnets = nnx.List([ResidualBlock(dim, dim, init=init), ResidualBlock(dim, dim, init=init)])
        self.attentions = nnx.List([AttentionBlock(dim, init=init)])

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        x = self.resnets[0](x, cache)
        x = self.attentions[0](x)
        return self.resnets[1](x, cache)


class Downsample(nnx.Module):
    """Pad right/bottom by 1, 3×3 stride-2 conv per frame; ``temporal``: then a (3,1,1) stride-2 time conv.

    Temporal first chunk: the time conv is skipped (1 frame stays 1) and the frame is cached; later chunks
    run it on ``[last cached frame, x]`` (4 → 2, 2 → 1 frames) and cache x's last frame.
    """

    def __init__(self, dim: int, temporal: bool, *, init: Init):
        self.resample = Conv2d(dim, dim, stride=2, padding=((0, 1), (0, 1)), init=init)
        self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), init=init) if temporal else None

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        x = self.resample(x)
        if self.time_conv is None:
            return x
        prev = cache.take()
        cache.put(x[:, -1:])
        if prev is None:
            return x
        return self.time_conv.conv(jnp.concatenate([prev, x], axis=1), stride_t=2)


class Upsample(nnx.Module):
    """``temporal``: causal (3,1,1) time conv dim → 2·dim, interleaved to 2× frames; then nearest 2× + 3×3 conv
    (computed on the low-resolution frames, :func:`upsample2_conv_frames`).

    Temporal first chunk: the time conv is skipped (1 frame stays 1) and its cache starts as zeros.
    """

    def __init__(self, dim: int, out_dim: int, temporal: bool, *, init: Init):
        self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1), init=init) if temporal else None
        self.resample = Conv2d(dim, out_dim, init=init)

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        if self.time_conv is not None:
            if cache.first:
                cache.take()
                cache.put(jnp.zeros((x.shape[0], 2, *x.shape[2:]), x.dtype))
            else:
                b, t, h, w, c = x.shape
                y = self.time_conv(x, cache).reshape(b, t, h, w, 2, c)
                x = y.transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, h, w, c)
        return upsample2_conv_frames(x, self.resample.kernel[...]) + self.resample.bias[...].astype(x.dtype)


def avg_down(x: jax.Array, out_dim: int, factor_t: int, factor_s: int) -> jax.Array:
    """AvgDown3D: zero-pad time in front to a multiple of ``factor_t``, space/time-to-channel in (C, ft, fh, fw)
    order, mean over groups of consecutive channels. ``[B, T, H, W, C] -> [B, T/ft, H/fs, W/fs, out_dim]``."""
    b, t, h, w, c = x.shape
    pad_t = (-t) % factor_t
    if pad_t:
        x = jnp.pad(x, ((0, 0), (pad_t, 0), (0, 0), (0, 0), (0, 0)))
        t += pad_t
    ft, fs = factor_t, factor_s
    x = x.reshape(b, t // ft, ft, h // fs, fs, w // fs, fs, c).transpose(0, 1, 3, 5, 7, 2, 4, 6)
    group = c * ft * fs * fs // out_dim
    return x.reshape(b, t // ft, h // fs, w // fs, out_dim, group).mean(axis=-1)


def dup_up(x: jax.Array, out_dim: int, factor_t: int, factor_s: int, first_chunk: bool) -> jax.Array:
    """DupUp3D: repeat channels, channel-to-space/time in (out, ft, fh, fw) order; the first chunk drops the
    first ``factor_t - 1`` frames. ``[B, T, H, W, C] -> [B, T·ft (- ft+1), H·fs, W·fs, out_dim]``."""
    b, t, h, w, c = x.shape
    ft, fs = factor_t, factor_s
    x = jnp.repeat(x, out_dim * ft * fs * fs // c, axis=-1)
    x = x.reshape(b, t, h, w, out_dim, ft, fs, fs).transpose(0, 1, 5, 2, 6, 3, 7, 4)
    x = x.reshape(b, t * ft, h * fs, w * fs, out_dim)
    return x[:, ft - 1 :] if first_chunk else x


class DownBlock(nnx.Module):
    """Residual down block: resnets → downsampler, plus the parameter-free AvgDown3D shortcut of the input."""

    def __init__(self, in_dim, out_dim, num_res_blocks, temporal: bool, down: bool, *, init: Init):
        self.out_dim = out_dim
        self.factor_t = 2 if temporal else 1
        self.factor_s = 2 if down else 1
        dims = [in_dim] + [out_dim] * num_res_blocks
        self.resnets = nnx.List([ResidualBlock(a, o, init=init) for a, o in zip(dims[:-1], dims[1:])])
        self.downsampler = Downsample(out_dim, temporal, init=init) if down else None

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        shortcut = avg_down(x, self.out_dim, self.factor_t, self.factor_s)
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.downsampler is not None:
            x = self.downsampler(x, cache)
        return x + shortcut


class UpBlock(nnx.Module):
    """Residual up block: ``num_res_blocks + 1`` resnets → upsampler, plus the DupUp3D shortcut of the input."""

    def __init__(self, in_dim, out_dim, num_res_blocks, temporal: bool, up: bool, *, init: Init):
        self.out_dim = out_dim
        self.factor_t = 2 if temporal else 1
        self.up = up
        dims = [in_dim] + [out_dim] * (num_res_blocks + 1)
        self.resnets = nnx.List([ResidualBlock(a, o, init=init) for a, o in zip(dims[:-1], dims[1:])])
        self.upsampler = Upsample(out_dim, out_dim, temporal, init=init) if up else None

    def __call__(self, x: jax.Array, cache: ChunkCache) -> jax.Array:
        shortcut = dup_up(x, self.out_dim, self.factor_t, 2, cache.first) if self.up else None
        for resnet in self.resnets:
            x = resnet(x, cache)
        if self.upsampler is not None:
            x = self.upsampler(x, cache)
        return x if shortcut is None else x + shortcut
