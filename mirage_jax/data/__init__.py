"""Pose-annotated clips (docs/design.md §7).

- ``synthetic``: procedural worlds (``render_clip``, ``render_views``, ``make_world``) — the embedded data.
- ``npz``: the official ``geometry.npz`` layout (``load_geometry_npz``, ``save_geometry_npz``, ``validate_clip``,
  ``memory_from_geometry_npz``: a memory holding one of its frames).
- ``sources`` + ``pose_clips`` (TFDS builder) + ``tfds_io``: ArrayRecord datasets readable without TensorFlow.
- ``training_example``: the typed training example (``TrainingExample``) and its shape check.
- ``examples`` + ``pipeline``: the Grain input pipeline producing training batches.
- ``cli``: ``mirage-jax data build``.
"""

from mirage_jax.data.npz import load_geometry_npz, memory_from_geometry_npz, save_geometry_npz, validate_clip

__all__ = ["load_geometry_npz", "memory_from_geometry_npz", "save_geometry_npz", "validate_clip"]
