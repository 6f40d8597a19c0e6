"""Pose-annotated clips: procedural worlds, geometry.npz I/O, TFDS datasets and the Grain input pipeline."""

from mirage_jax.data.npz import load_geometry_npz, save_geometry_npz, validate_clip

__all__ = ["load_geometry_npz", "save_geometry_npz", "validate_clip"]
