"""Bad input to the memory API: a ValueError naming the argument, raised before anything is stored."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mirage_jax import memory
from tests.memory_scenes import intrinsics

HW = (4, 6)


def _frames(t=2, factor=2, c=3):
    latents = np.ones((t, *HW, c), np.float32)
    depths = np.full((t, HW[0] * factor, HW[1] * factor), 2.0, np.float32)
    return latents, depths, intrinsics(t, depths.shape[1:]), np.stack([np.eye(4, dtype=np.float32)] * t)


@pytest.fixture(scope="module")
def mem():
    return memory.init(64, 3)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(capacity=0), "capacity"),
        (dict(capacity=-3), "capacity"),
        (dict(capacity=2.5), "capacity"),
        (dict(channels=0), "channels"),
        (dict(dtype=np.int32), "dtype"),
        (dict(voxel_size=0.0), "voxel_size"),
    ],
)
def test_init_rejects(kwargs, name):
    args = dict(capacity=8, channels=3) | kwargs
    with pytest.raises(ValueError, match=name):
        memory.init(**args)


def _bad(case):
    latents, depths, k, poses = _frames()
    keep = None
    if case == "channels":
        latents = np.ones((2, *HW, 4), np.float32)
    elif case == "latents_rank":
        latents = latents[0]
    elif case == "latents_nan":
        latents = latents.copy()
        latents[0, 0, 0, 0] = np.nan
    elif case == "depth_frames":
        depths = depths[:1]
    elif case == "depth_multiple":
        depths = np.ones((2, 9, 12), np.float32)
    elif case == "keep_shape":
        keep = np.ones((2, 8, 11), bool)
    elif case == "keep_dtype":
        keep = np.ones(depths.shape, np.float32)
    elif case == "intrinsics_nan":
        k = k.copy()
        k[1, 0, 2] = np.inf
    elif case == "intrinsics_frames":
        k = k[:1]
    elif case == "intrinsics_focal":
        k = k.copy()
        k[0, 0, 0] = 0.0
    elif case == "pose_shape":
        poses = poses[:, :3]
    elif case == "pose_rigid":
        poses = poses.copy()
        poses[0, 0, 0] = 2.0
    elif case == "pose_nan":
        poses = poses.copy()
        poses[1, 1, 3] = np.nan
    elif case == "intrinsics_row":
        k = k.copy()
        k[1, 2, 0] = 1e-5
    elif case == "pose_row":
        poses = poses.copy()
        poses[0, 3, 2] = 0.01
    return latents, depths, k, poses, keep


@pytest.mark.parametrize(
    "case, name",
    [
        ("channels", "latents"),
        ("latents_rank", "latents"),
        ("latents_nan", "latents"),
        ("depth_frames", "depths"),
        ("depth_multiple", "depths"),
        ("keep_shape", "keep"),
        ("keep_dtype", "keep"),
        ("intrinsics_nan", "intrinsics"),
        ("intrinsics_frames", "intrinsics"),
        ("intrinsics_focal", "intrinsics"),
        ("pose_shape", "cam2world"),
        ("pose_rigid", "cam2world"),
        ("pose_nan", "cam2world"),
        ("intrinsics_row", "intrinsics"),
        ("pose_row", "cam2world"),
    ],
)
@pytest.mark.parametrize("donate", [False, True])
@pytest.mark.parametrize("on_device", [False, True])
def test_write_rejects(mem, case, name, donate, on_device):
    """Refused before anything is stored, from host or device arrays (whose values are checked on the device);
    an in-place write leaves ``mem`` usable."""
    args = _bad(case)
    if on_device:
        args = [None if a is None else jnp.asarray(a) for a in args]
    before = memory.num_points(mem)
    with pytest.raises(ValueError, match=name):
        memory.write(mem, *args, donate=donate)
    assert memory.num_points(mem) == before == 0


def test_write_accepts_cameras_within_tolerance(mem):
    """Poses and intrinsics off by less than the host checks' tolerances, but past the device screen's halved
    ones, are stored: the host checks decide."""
    latents, depths, k, poses = _frames()
    poses = poses.copy()
    poses[0, 0, 0] = 1.0004  # |R R^T - I| = 8e-4: past the screen (5e-4), within the host tolerance (1e-3)
    k = k.copy()
    k[1, 2, 1] = 7e-7  # last row: past the screen (5e-7), within the host tolerance (1e-6)
    out = memory.write(mem, jnp.asarray(latents), jnp.asarray(depths), jnp.asarray(k), jnp.asarray(poses))
    host = memory.write(mem, latents, depths, k, poses)  # the same write from host arrays
    assert memory.num_points(out) == memory.num_points(host) > 0
    np.testing.assert_array_equal(np.asarray(out.points), np.asarray(host.points))


def test_write_refuses_exhausted_write_ids(mem):
    """Write ids are int32: a write that would overflow them is refused, naming ``mem``."""
    import dataclasses

    late = dataclasses.replace(mem, next_write_id=jnp.asarray(2**31 - 10, jnp.int32))
    with pytest.raises(ValueError, match="mem: write ids exhausted"):
        memory.write(late, *_frames(), donate=True)
    assert memory.num_points(late) == 0


def test_write_rejects_unknown_mode(mem):
    with pytest.raises(ValueError, match="depth_downsample"):
        memory.write(mem, *_frames(), depth_downsample="nearest")


@pytest.mark.parametrize("hw", [(0, 6), (4,), (4.5, 6), ("a", "b"), (True, 6), None])
def test_read_rejects_bad_hw(mem, hw):
    with pytest.raises(ValueError, match="hw"):
        memory.read(mem, intrinsics(1, HW), np.eye(4)[None], hw)


def test_read_rejects_bad_cameras(mem):
    with pytest.raises(ValueError, match="cam2world"):
        memory.read(mem, intrinsics(2, HW), np.eye(4)[None], HW)
    k = intrinsics(1, HW)
    k[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="intrinsics"):
        memory.read(mem, k, np.eye(4)[None], HW)


@pytest.mark.parametrize("mode", ["bilinear", "robust"])
def test_non_finite_and_non_positive_depth_never_stored(mem, mode):
    latents, depths, k, poses = _frames(factor=1)
    poses = poses.copy()
    poses[1, 0, 3] = 10.0  # frames see different voxels (else frame 1 would replace frame 0, see write)
    depths = depths.copy()
    depths[0, 0, :3] = np.nan
    depths[0, 1, :2] = np.inf
    depths[1, 2, 1] = -np.inf
    depths[1, 3, :4] = 0.0
    depths[1, 0, 0] = -1.0
    out = memory.write(mem, latents, depths, k, poses, depth_downsample=mode)
    assert memory.num_points(out) == depths.size - 3 - 2 - 1 - 4 - 1
    assert np.isfinite(np.asarray(out.points)[np.asarray(out.valid)]).all()


def test_write_and_read_trace_under_jit(mem):
    latents, depths, k, poses = _frames()
    eager = memory.write(mem, latents, depths, k, poses)
    traced = jax.jit(memory.write)(mem, latents, depths, k, poses)
    np.testing.assert_array_equal(np.asarray(eager.points), np.asarray(traced.points))
    read = jax.jit(memory.read, static_argnums=3)
    np.testing.assert_array_equal(
        np.asarray(read(traced, intrinsics(2, HW), poses, HW)[0]),
        np.asarray(memory.read(eager, intrinsics(2, HW), poses, HW)[0]),
    )


@pytest.mark.parametrize("dtype, match", [
    (jnp.float16, "dtype: float16 is refused: it overflows above 65504"),
    (jnp.float64, "dtype: float64 needs JAX's x64 mode"),
    (jnp.complex64, "dtype: expected float32 or bfloat16, got complex64"),
    (jnp.bool_, "dtype: expected float32 or bfloat16, got bool"),
])
def test_init_refuses_dtypes_it_cannot_store_faithfully(dtype, match):
    """float16 would store a latent of 1e5 as inf; float64 without x64 would silently be float32."""
    with pytest.raises(ValueError, match=match):
        memory.init(8, 3, dtype)


def test_init_accepts_float64_with_x64():
    with jax.enable_x64(True):
        assert memory.init(8, 3, jnp.float64).features.dtype == jnp.float64
    assert memory.init(8, 3, jnp.bfloat16).features.dtype == jnp.bfloat16


def test_init_refuses_capacities_overflowing_int32(monkeypatch):
    """A write counts up to 2 x capacity points in int32: 2^30 - 1 is the largest capacity (checked without
    allocating: with no device memory, the largest passes the index check and fails the size check)."""
    from mirage_jax.memory import state

    with pytest.raises(ValueError, match="capacity: expected at most 1073741823 .*got 2000000000"):
        memory.init(2_000_000_000, 48)
    monkeypatch.setattr(state, "device_memory_bytes", lambda device: 0)
    with pytest.raises(ValueError, match="capacity: expected at most 1073741823 .*got 1073741824"):
        memory.init(2**30, 1)
    with pytest.raises(ValueError, match="capacity: 1073741823 points need 26843545583 bytes"):
        memory.init(2**30 - 1, 1)  # 25 B per point (12 xyz + 4 feature + 1 valid + 8 ids) + 8 B of counters


def test_init_refuses_capacities_beyond_device_memory(monkeypatch):
    """213 B per point at 48 float32 channels (117 in bfloat16), plus 8 B of counters."""
    from mirage_jax.memory import state

    monkeypatch.setattr(state, "device_memory_bytes", lambda device: 10_000)
    with pytest.raises(ValueError, match=r"capacity: 100 points need 21308 bytes \(213 per point\), more than the "
                                         r"10000 bytes of cpu device 0; use a capacity of at most 46"):
        memory.init(100, 48)
    with pytest.raises(ValueError, match=r"capacity: 100 points need 11708 bytes \(117 per point\)"):
        memory.init(100, 48, jnp.bfloat16)
    assert memory.init(46, 48).capacity == 46  # 9806 bytes: fits


def test_device_memory_is_physical_ram_on_cpu():
    import os

    from mirage_jax.memory.state import device_memory_bytes

    assert device_memory_bytes(jax.devices("cpu")[0]) == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@pytest.mark.parametrize("latents_dtype, depths_dtype, match", [
    (np.complex64, np.float32, "latents: expected a float array .*got dtype complex64"),
    (np.bool_, np.float32, "latents: expected a float array .*got dtype bool"),
    (np.int32, np.float32, "latents: expected a float array .*got dtype int32"),
    (np.float32, np.int32, "depths: expected a float array .*got dtype int32"),
    (np.float32, np.bool_, "depths: expected a float array .*got dtype bool"),
])
def test_write_refuses_non_float_latents_and_depths(mem, latents_dtype, depths_dtype, match):
    """They were cast silently (complex latents lost their imaginary part, bool latents became 0/1)."""
    latents, depths, k, poses = _frames()
    with pytest.raises(ValueError, match=match):
        memory.write(mem, latents.astype(latents_dtype), depths.astype(depths_dtype), k, poses)


@pytest.mark.parametrize("near", [float("nan"), float("inf"), -1.0, 0.0, "x"])
def test_near_must_be_finite_and_positive(mem, near):
    """``near=nan`` drew nothing (every z > nan is False) and ``near=-1`` drew points behind the camera."""
    latents, depths, k, poses = _frames(t=1)
    full = memory.write(mem, latents, depths, k, poses)  # one frame: a point in every cell
    k_out = intrinsics(1, HW)
    assert int(np.asarray(memory.read(full, k_out, poses, HW)[1]).sum()) == HW[0] * HW[1]
    with pytest.raises(ValueError, match="near: expected a finite depth > 0"):
        memory.read(full, k_out, poses, HW, near=near)
    with pytest.raises(ValueError, match="near: expected a finite depth > 0"):
        memory.visible(full.points, full.valid, k_out, poses, HW, near=near)


def test_consumed_memory_is_refused_with_one_line():
    """A memory given to ``write(..., donate=True)`` no longer has buffers: every function says so instead of
    XLA's 'Buffer has been deleted'."""
    latents, depths, k, poses = _frames()
    old = memory.init(64, 3)
    new = memory.write(old, latents, depths, k, poses, donate=True)
    assert memory.num_points(new) > 0
    calls = [lambda m: memory.write(m, latents, depths, k, poses), lambda m: memory.read(m, k, poses, HW),
             memory.num_points, lambda m: memory.select_references(m, k, poses, k, poses, HW)]
    for call in calls:
        with pytest.raises(ValueError) as err:
            call(old)
        assert str(err.value) == ("memory was consumed by an earlier write(..., donate=True); use the memory that "
                                  "call returned")


def test_read_refuses_views_times_points_beyond_int32(monkeypatch):
    """The z-buffer indexes every (view, point) pair with int32: 9 views of 2^28 points do not fit (checked on
    shapes only: nothing is allocated)."""
    from mirage_jax.memory import state

    monkeypatch.setattr(state, "device_memory_bytes", lambda device: None)
    abstract = jax.eval_shape(lambda: memory.init(2**28, 1))
    with pytest.raises(ValueError, match="intrinsics: 9 views x 268435456 points exceed int32 indexing "
                                         r"\(2147483647\); use at most 7 views per call"):
        memory.read(abstract, intrinsics(9, HW), np.stack([np.eye(4)] * 9), HW)
