"""Example construction helpers: resize/crop with intrinsics adjusted."""

import numpy as np

from mirage_jax import geometry
from mirage_jax.data import synthetic
from mirage_jax.data.examples import fit_clip


def test_fit_clip_crop_keeps_geometry():
    """After resize + centre crop, re-rendering the world with the new intrinsics gives the cropped depth:
    the adjusted intrinsics describe the new pixel grid exactly."""
    clip = synthetic.render_clip(3, 3, 16, 24, "loop")  # the shape test_data_synthetic compiles already
    out = fit_clip(clip, 8, 8)  # scale 0.5 → 8x12, centre crop of width 8 (offset 2)
    assert out["frames"].shape == (3, 8, 8, 3) and out["masks"].shape == (3, 8, 8)
    np.testing.assert_allclose(out["intrinsics"][:, 0, 0], clip["intrinsics"][:, 0, 0] / 2, rtol=1e-6)
    np.testing.assert_allclose(out["intrinsics"][:, 0, 2], clip["intrinsics"][:, 0, 2] / 2 - 2, rtol=1e-6)
    np.testing.assert_array_equal(out["depths"], clip["depths"][:, ::2, 4:20:2])
    _, depths, _ = synthetic.render_views(3, out["intrinsics"], out["poses_c2w"], 8, 8)
    # Nearest resampling takes old pixel 2u; the new pixel centre u maps back to exactly 2u: the same rays.
    np.testing.assert_allclose(depths, out["depths"], rtol=1e-5)
    geometry.validate_intrinsics(out["intrinsics"])
    assert fit_clip(out, 8, 8) is out
