"""TFDS dataset ``pose_clips``: pose-annotated video clips stored as ArrayRecord (``tfds new`` layout)."""
