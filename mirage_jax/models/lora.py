"""LoRA parameter selection and merging.

LoRA factors live in every DiT block's q, k, v, o (self- and cross-attention) and both FFN linears as
``LoRAParam`` variables (``lora_a`` [in, r], ``lora_b`` [r, out], scaling ``alpha / r``; VACE blocks have none).

``trainable_filter(stage)`` is the nnx filter of what a training stage updates:
  * ``"vace"``: every parameter of the VACE branch (``model.vace``);
  * ``"lora"``: the LoRA factors only;
  * ``"full"``: every parameter except the LoRA factors (DiT and VACE).
``merge_lora(model)`` folds ``W += (alpha/r) A @ B`` into the base kernels and drops the factors (inference).
"""

from __future__ import annotations

from flax import nnx

from mirage_jax.config import CHOICES
from mirage_jax.models.layers import Linear, LoRAParam

STAGES = CHOICES["train.stages"]


def trainable_filter(stage: str):
    """The nnx filter selecting the parameters trained in ``stage`` ("vace" | "lora" | "full")."""
    if stage == "vace":
        return nnx.All(nnx.Param, nnx.PathContains("vace"))
    if stage == "lora":
        return LoRAParam
    if stage == "full":
        return nnx.All(nnx.Param, nnx.Not(LoRAParam))
    raise ValueError(f"stage={stage!r}: expected one of {STAGES}")


def merge_lora(model: nnx.Module) -> nnx.Module:
    """A copy of ``model`` with every LoRA folded into its base kernel and the factors removed.

    Works on stacked (scanned) layers: ``A @ B`` is a batched matmul over the leading layer axis.
    """
    merged = nnx.clone(model)
    for _, module in nnx.iter_graph(merged):
        if isinstance(module, Linear) and module.lora_a is not None:
            delta = (module.lora_a[...] @ module.lora_b[...]) * module.lora_scale
            module.kernel[...] = module.kernel[...] + delta.astype(module.kernel[...].dtype)
            module.lora_a = module.lora_b = None
    return merged
