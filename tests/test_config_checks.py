"""``validate_config``: every field the data pipeline and the memory need is checked before anything is built,
with limits derived from the config (latent factor x DiT patch) or shared with the code that needs them."""

import pytest

from mirage_jax import memory
from mirage_jax.config import load_config
from mirage_jax.config_checks import MAX_MEMORY_CAPACITY, validate_config


def _check(name: str, *overrides: str) -> None:
    validate_config(load_config(name, [f"--config.{o}" for o in overrides]))


@pytest.mark.parametrize("name, overrides, multiple", [
    ("tiny", ("data.height=30",), "data.height=30: expected a positive multiple of 8 (latent factor 4 x DiT patch 2)"),
    ("tiny", ("data.width=60",), "data.width=60: expected a positive multiple of 8 (latent factor 4 x DiT patch 2)"),
    ("tiny", ("model.patch_size=(1,4,4)", "data.height=24"), "data.height=24: expected a positive multiple of 16 "
                                                              "(latent factor 4 x DiT patch 4)"),
    ("tiny_wan", ("data.height=48",), "data.height=48: expected a positive multiple of 32 (latent factor 16 x DiT "
                                      "patch 2)"),
    ("tiny_wan", ("data.width=80",), "data.width=80: expected a positive multiple of 32 (latent factor 16 x DiT "
                                     "patch 2)"),
])
def test_resolution_is_a_multiple_of_latent_factor_times_patch(name, overrides, multiple):
    with pytest.raises(ValueError) as err:
        _check(name, *overrides)
    assert str(err.value) == f"config.{multiple}"


def test_resolutions_that_divide_are_accepted():
    _check("tiny", "data.height=24", "data.width=40")  # multiples of 8
    _check("tiny_wan", "data.height=96", "data.width=160")  # multiples of 32


@pytest.mark.parametrize("overrides, message", [
    (("data.target_frames=32",), "config.data.target_frames=32: expected a frame count 4N+1 >= 5"),
    (("data.target_frames=1",), "config.data.target_frames=1: expected a frame count 4N+1 >= 5"),
    (("data.clip_frames=21",), "config.data.clip_frames=21: expected >= data.target_frames (33)"),
    (("data.target_frames=17", "data.clip_frames=13"),
     "config.data.clip_frames=13: expected >= data.target_frames (17)"),
    (("data.num_clips=0",), "config.data.num_clips=0: expected >= 1"),
    (("data.dynamic_objects=-1",), "config.data.dynamic_objects=-1: expected >= 0 (moving objects per clip)"),
])
def test_data_fields_the_training_example_needs(overrides, message):
    """A training example takes ``target_frames`` (4N+1) consecutive frames of one clip."""
    with pytest.raises(ValueError) as err:
        _check("tiny", *overrides)
    assert str(err.value) == message
    _check("tiny", "data.target_frames=17", "data.clip_frames=17")  # exactly enough frames


def test_memory_capacity_limit_is_the_memorys():
    """The largest capacity whose int32 indices cannot overflow; ``memory.init`` refuses the same values."""
    assert MAX_MEMORY_CAPACITY == 2**30 - 1
    _check("tiny", f"memory.capacity={MAX_MEMORY_CAPACITY}")
    for config_value in (MAX_MEMORY_CAPACITY + 1, 2_000_000_000):
        with pytest.raises(ValueError, match=rf"config.memory.capacity={config_value}: expected <= 1073741823"):
            _check("tiny", f"memory.capacity={config_value}")
        with pytest.raises(ValueError, match=rf"capacity: expected at most 1073741823 .*got {config_value}"):
            memory.init(config_value, 1)


@pytest.mark.parametrize("dtype, message", [
    ("float16", "float16 is refused: it overflows above 65504"),
    ("float64", "float64 needs JAX's x64 mode"),
    ("int8", "expected float32 or bfloat16, got int8"),
])
def test_memory_feature_dtype_is_one_the_memory_stores_faithfully(dtype, message):
    with pytest.raises(ValueError, match=f"config.memory.feature_dtype='{dtype}': {message}"):
        _check("tiny", f"memory.feature_dtype={dtype}")
    _check("tiny", "memory.feature_dtype=float32")


def test_procedural_trajectory_names_are_checked_before_anything_is_built():
    with pytest.raises(ValueError, match=r"config.data.trajectories=\('revisit', 'zigzag'\): expected one of"):
        _check("tiny", "data.trajectories=('revisit','zigzag')")
    _check("tiny", "data.trajectories=('loop','forward')")
