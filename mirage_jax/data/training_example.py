"""The training example: the typed structure ``make_example`` produces, batches stack and the loss consumes.

One example is a dict of arrays without a batch axis (below); a batch is the same dict with a leading batch
axis ``B`` on every array. Sizes: ``Tl`` target latents, ``P`` preceding slots, ``R`` reference slots, latent
grid ``h x w`` with ``C`` channels, ``L`` text tokens of width ``D``. Latent ``k`` of the targets is pixel frame
``t0 + 4k``; the memory behind ``*_scene`` / ``*_hit`` was written from frame ``t0`` alone. Absent preceding or
reference entries are zero-filled and masked out; their slots follow ``models.sequence_slots`` (real preceding
latents first, real references last), as in generation.
"""

from __future__ import annotations

import dataclasses
from typing import TypedDict

import numpy as np

from mirage_jax.video_shapes import num_latents

Array = np.ndarray  # or a jax.Array once on the device


class TrainingExample(TypedDict):
    """One training example (add a leading ``B`` to every shape for a batch)."""

    target_latents: Array  # [Tl, h, w, C] f32: clean latents of pixel frames t0, t0+4, ...
    target_scene: Array  # [Tl, h, w, C] f32: the memory read at each target camera (0 where it misses)
    target_hit: Array  # [Tl, h, w] bool: where that read hit a stored point
    target_depth: Array  # [Tl, h, w] f32: metric depth at latent resolution (0 = invalid), for the depth head
    preceding_latents: Array  # [P, h, w, C] f32: clean latents of pixel frames t0-4k', oldest first
    preceding_scene: Array  # [P, h, w, C] f32: the memory read at the preceding cameras
    preceding_hit: Array  # [P, h, w] bool
    preceding_mask: Array  # [P] bool: which preceding slots hold a real latent
    reference_latents: Array  # [R, h, w, C] f32: clean latents of the chosen reference frames
    reference_mask: Array  # [R] bool: which reference slots hold a real latent
    context: Array  # [L, D] f32: the caption's text embedding
    clip_index: Array  # [] int32: the clip the example was cut from


# What the training step feeds the DiT (``target_depth`` feeds only the depth head; ``clip_index`` is a label).
MODEL_INPUTS = ("target_latents", "target_scene", "target_hit", "preceding_latents", "preceding_scene",
                "preceding_hit", "preceding_mask", "reference_latents", "reference_mask", "context")


@dataclasses.dataclass(frozen=True)
class ExampleSizes:
    """The sizes of a training example: from a config (``from_config``) or given (plans at real sizes)."""

    targets: int  # Tl
    preceding: int  # P
    references: int  # R
    height: int  # h (latent)
    width: int  # w (latent)
    channels: int  # C
    text_length: int  # L
    text_dim: int  # D

    @classmethod
    def from_config(cls, config) -> ExampleSizes:
        s = int(config.latent.spatial_factor)
        return cls(targets=num_latents(int(config.data.target_frames)), preceding=int(config.memory.num_preceding),
                   references=int(config.memory.max_references), height=int(config.data.height) // s,
                   width=int(config.data.width) // s, channels=int(config.latent.channels),
                   text_length=int(config.text.max_length), text_dim=int(config.text.dim))

    def shapes(self, batch_size: int | None = None) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """``{field: (shape, dtype)}`` of an example, or of a batch when ``batch_size`` is given."""
        lead = () if batch_size is None else (batch_size,)
        t, p, r, hw, c = self.targets, self.preceding, self.references, (self.height, self.width), self.channels
        f32, flag = np.dtype(np.float32), np.dtype(bool)
        fields = {"target_latents": ((t, *hw, c), f32), "target_scene": ((t, *hw, c), f32),
                  "target_hit": ((t, *hw), flag), "target_depth": ((t, *hw), f32),
                  "preceding_latents": ((p, *hw, c), f32), "preceding_scene": ((p, *hw, c), f32),
                  "preceding_hit": ((p, *hw), flag), "preceding_mask": ((p,), flag),
                  "reference_latents": ((r, *hw, c), f32), "reference_mask": ((r,), flag),
                  "context": ((self.text_length, self.text_dim), f32), "clip_index": ((), np.dtype(np.int32))}
        return {key: ((*lead, *shape), dtype) for key, (shape, dtype) in fields.items()}


def check_batch(batch: dict, sizes: ExampleSizes, batch_size: int, *, required: tuple[str, ...] = MODEL_INPUTS) -> None:
    """Raises ``ValueError`` naming the first field that is missing (of ``required``) or whose shape or dtype
    kind differs from ``sizes``: a data pipeline of one's own fails here, naming the field and the expected
    shape, not inside XLA."""
    for key, (shape, dtype) in sizes.shapes(batch_size).items():
        if key not in batch:
            if key in required:
                raise ValueError(f"training batch: missing field {key!r} (expected {dtype.name} {list(shape)})")
            continue
        value = batch[key]
        got_shape, got_dtype = tuple(np.shape(value)), np.dtype(value.dtype)
        if got_shape != shape or got_dtype.kind != dtype.kind:
            raise ValueError(f"training batch: field {key!r} is {got_dtype.name} {list(got_shape)}, expected "
                             f"{dtype.name} {list(shape)}")
