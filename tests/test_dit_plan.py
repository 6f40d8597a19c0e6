"""``mirage-jax plan`` compiles the sharded training step of ``mirage-jax train`` abstractly; counts and bytes are
checked independently."""

from __future__ import annotations

import jax
import pytest

from mirage_jax.config import load_config
from mirage_jax.plan import plan
from mirage_jax.sharding import make_mesh


def _block_params(d: int, ffn: int, lora: int = 0) -> tuple[int, int]:
    """(base, lora) parameters of one Wan block from Wan's layer list."""
    attn = 4 * (d * d + d) + 2 * d  # q, k, v, o with bias; RMSNorm q and k
    base = 2 * attn + 2 * d + (d * ffn + ffn) + (ffn * d + d) + 6 * d  # self, cross, cross LN, FFN, modulation
    lora_params = 8 * lora * (d + d) + 2 * lora * (d + ffn)
    return base, lora_params


def test_real_sizes_count_what_the_readme_says():
    """Wan2.2-TI2V-5B + 15-block VACE + rank-32 LoRA: the counts of the layer list, and the README's plan table
    (DiT 5.000 B, VACE 2.607 B, LoRA 80.6 M); abstract, nothing allocated."""
    from flax import nnx

    from mirage_jax.models import DiTSettings, WanDiT
    from mirage_jax.plan import parameter_counts

    config = load_config("configs/wan22_ti2v_5b.py")
    counts = parameter_counts(nnx.eval_shape(lambda: WanDiT(DiTSettings.from_config(config), rngs=nnx.Rngs(0))))
    d, ffn, text, freq, c = 3072, 14336, 4096, 256, 48
    base, lora = _block_params(d, ffn, lora=32)
    top = (4 * c * d + d) + (text * d + d) + (d * d + d) + (freq * d + d) + (d * d + d) + (d * 6 * d + 6 * d)
    top += 2 * d + (d * 4 * c + 4 * c)
    vace = 15 * (base + d * d + d) + (4 * 96 * d + d) + (d * d + d)
    assert counts == {"dit": 30 * base + top, "vace": vace, "lora": 30 * lora}
    assert (f"{counts['dit'] / 1e9:.3f}", f"{counts['vace'] / 1e9:.3f}", f"{counts['lora'] / 1e6:.1f}") == (
        "5.000", "2.607", "80.6")


@pytest.mark.slow
def test_plan_tiny_counts_and_bytes():
    if len(jax.devices()) < 4:
        pytest.skip("needs 4 simulated devices")
    config = load_config("configs/tiny.py")
    mesh = make_mesh(1, 2, 2, jax.devices()[:4])
    report = plan(config, mesh, stage="vace", height=8, width=8, targets=3, preceding=1, references=1)
    d, ffn, text, freq, c = 64, 128, 32, 256, 48
    base, lora = _block_params(d, ffn, lora=4)
    top = (4 * c * d + d) + (text * d + d) + (d * d + d) + (freq * d + d) + (d * d + d) + (d * 6 * d + 6 * d)
    top += 2 * d + (d * 4 * c + 4 * c)  # head modulation, head
    vace = 2 * (base + d * d + d) + (4 * 96 * d + d) + (d * d + d)  # 2 blocks + after_proj, patch embed, before
    assert report["param_counts"] == {"dit": 2 * base + top, "vace": vace, "lora": 2 * lora}
    per = report["bytes_per_device"]
    assert per["trainable_params"] < 4 * vace  # sharded (fsdp=2 x tensor=2), fp32
    assert per["trainable_params"] > 4 * vace // 4
    # the real step's optimizer: Adam's mu, nu + two int32 step counts (Adam's and the learning-rate schedule's)
    assert per["optimizer"] == 2 * per["trainable_params"] + 8
    assert per["temp_activations"] > 0 and per["aliased"] > 0
    assert report["global_batch"] == 2 and report["tokens_per_sample"] == 5 * 16


def test_plan_command_with_a_context_axis_splits_the_activations(capsys):
    """Same per-device batch (one sample on 2 data-parallel devices vs one sample split over a context pair):
    the context pair holds about half the activations; a context size that does not divide the heads is refused
    before anything compiles."""
    from mirage_jax.cli import main

    def temp_bytes(mesh: str) -> float:
        assert main(["plan", "--config", "tiny", "--mesh", mesh, "--height", "8", "--width", "14", "--targets", "9",
                     "--references", "2", "--preceding", "2"]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("temp_activations"))
        return float(line.split()[1])

    data_parallel, context_parallel = temp_bytes("fsdp=2"), temp_bytes("context=2")
    assert context_parallel < 0.7 * data_parallel
    assert main(["plan", "--config", "tiny", "--mesh", "context=4"]) == 2
    assert "config.mesh.context=4: expected a divisor of model.num_heads (2)" in capsys.readouterr().err
