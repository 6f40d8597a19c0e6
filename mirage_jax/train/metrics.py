"""Training metrics: ``metrics.jsonl``, TensorBoard event files, and the FLOP/MFU estimate.

FLOPs per training example (stated, standard dense-transformer accounting; the backward pass costs 2× the
forward, so training = 3 × forward):

    forward = 2 · N_dense · T  +  L_blocks · (4 · T² · D  +  4 · T · L_text · D)
    train   = 3 · forward

with ``N_dense`` the parameters of every block matrix (DiT and VACE; LoRA factors included, embeddings and
norms are negligible), ``T`` the tokens of the sequence ``(R + Tl + P) · (h/2) · (w/2)``, ``L_blocks`` the DiT
plus VACE blocks, ``D`` the model width and ``L_text`` the text length (self-attention scores + values:
``4·T²·D``; cross-attention likewise with ``L_text`` keys). Frozen parameters still cost their weight-gradient
FLOPs in this formula, so it slightly over-counts a VACE-only stage (conservative for the model, generous for
MFU); MFU = train FLOPs per second / (devices × peak FLOP/s per device).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from mirage_jax.video_shapes import num_latents

# Dense bf16 peak TFLOP/s per device, by substring of ``device.device_kind`` (public spec sheets).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "v6": 918.0, "v5p": 459.0,
               "v5 lite": 197.0, "v5e": 197.0, "v4": 275.0}


def tokens_per_example(config, num_references: int, num_preceding: int) -> int:
    """Tokens of one training sequence ``(R + Tl + P) · (h/ph) · (w/pw)``."""
    s = int(config.latent.spatial_factor)
    tl = num_latents(int(config.data.target_frames))
    _, ph, pw = config.model.patch_size
    return (num_references + tl + num_preceding) * (config.data.height // s // ph) * (config.data.width // s // pw)


def train_flops_per_example(config, dense_params: int, tokens: int) -> float:
    """``3 · (2·N·T + L·(4·T²·D + 4·T·L_text·D))`` (see module docstring)."""
    blocks = int(config.model.num_layers) + len(config.model.vace_layers)
    d = int(config.model.dim)
    forward = 2.0 * dense_params * tokens + blocks * (4.0 * tokens**2 * d + 4.0 * tokens * config.text.max_length * d)
    return 3.0 * forward


def peak_flops_per_device(config) -> float | None:
    """Peak FLOP/s of one device: ``train.peak_tflops`` if set, else by device kind; None when unknown (CPU)."""
    if config.train.peak_tflops > 0:
        return float(config.train.peak_tflops) * 1e12
    kind = jax.devices()[0].device_kind
    for name, tflops in PEAK_TFLOPS.items():
        if name.lower() in kind.lower():
            return tflops * 1e12
    return None


def dense_parameter_count(state) -> int:
    """Elements of every parameter array with at least 2 dimensions (matrices; stacked layers included)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state) if len(x.shape) >= 2))


class MetricsWriter:
    """Appends one JSON object per logged step to ``workdir/metrics.jsonl`` and scalars to TensorBoard.

    Only process 0 writes (``enabled=False`` elsewhere).
    """

    def __init__(self, workdir: str | Path, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(workdir) / "metrics.jsonl"
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, values: dict) -> None:
        """``values``: flat ``{name: number}``; non-finite numbers are written as null in the JSON."""
        if not self.enabled:
            return
        row = {"step": int(step)}
        for name, value in values.items():
            value = float(value)
            row[name] = value if np.isfinite(value) else None
            self._tb.add_scalar(name, value, int(step))
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self._tb.flush()

    def drop_after(self, step: int) -> None:
        """Removes the rows of steps after ``step`` (a resumed run logs them again), atomically."""
        if not self.enabled or not self.path.exists():
            return
        rows = self.path.read_text().splitlines()
        kept = [line for line in rows if line.strip() and json.loads(line)["step"] <= step]
        if len(kept) < len(rows):
            staging = self.path.with_suffix(".jsonl.tmp")
            staging.write_text("".join(line + "\n" for line in kept))
            staging.replace(self.path)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str | Path) -> list[dict]:
    """All rows of ``workdir/metrics.jsonl``."""
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
