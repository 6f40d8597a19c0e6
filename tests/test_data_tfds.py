"""pose_clips TFDS datasets: build → read back (no TensorFlow) equals the source, for all three sources."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mirage_jax import geometry
from mirage_jax.data import save_geometry_npz, sources, synthetic, tfds_io
from mirage_jax.data.pose_clips import pose_clips_dataset_builder as pcb

KEYS = ("frames", "depths", "intrinsics", "poses_c2w", "masks")


def _by_id(source):
    return {int(r["clip_id"]): tfds_io.record_to_clip(r) for r in (source[i] for i in range(len(source)))}


def _assert_same(a, b):
    for key in KEYS:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a["caption"] == b["caption"]


def test_procedural_round_trip(tmp_path):
    config = pcb.make_config("procedural", num_clips=3, num_test_clips=1, num_frames=3, height=12, width=20,
                             trajectories=("orbit", "revisit"), dynamic_objects=1, seed=5)
    folder = tfds_io.build(config, tmp_path)
    train = _by_id(tfds.data_source(f"pose_clips/{config.name}", data_dir=str(tmp_path), split="train"))
    assert sorted(train) == [0, 1, 2]
    for i, traj in enumerate(("orbit", "revisit", "orbit")):
        _assert_same(train[i], synthetic.render_clip(5 + i, 3, 12, 20, traj, dynamic_objects=1))
    test = _by_id(tfds.builder_from_directory(str(folder)).as_data_source(split="test"))
    _assert_same(test[0], synthetic.render_clip(5 + sources.TEST_SEED_OFFSET, 3, 12, 20, "orbit", 1))
    assert tfds_io.build(config, tmp_path) == folder  # reused, not rebuilt


def test_npz_folder_round_trip_with_resize(tmp_path):
    clips = [synthetic.render_clip(s, 3, 12, 20, "pan", dynamic_objects=1) for s in (1, 2)]  # compiled above
    for s, clip in enumerate(clips):
        save_geometry_npz(tmp_path / "in" / f"sample{s}", clip)
    same = pcb.make_config("npz", input_dir=str(tmp_path / "in"), height=12, width=20)
    tfds_io.build(same, tmp_path / "out")
    got = _by_id(tfds_io.data_source(same, tmp_path / "out"))
    for s, clip in enumerate(clips):
        _assert_same(got[s], clip)
    half = pcb.make_config("npz", input_dir=str(tmp_path / "in"), height=6, width=10)
    tfds_io.build(half, tmp_path / "out")
    small = _by_id(tfds_io.data_source(half, tmp_path / "out"))[0]
    np.testing.assert_array_equal(small["depths"], clips[0]["depths"][:, ::2, ::2])  # nearest: exact depths
    np.testing.assert_allclose(small["intrinsics"][:, 0, 0], clips[0]["intrinsics"][:, 0, 0] / 2, rtol=1e-6)


def test_realestate10k_round_trip(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    n, h, w = 3, 8, 12
    c2w = np.asarray(synthetic.poses_from_angles(rng.normal(size=(n, 3)).astype(np.float32),
                                                 np.array([0.1, 0.5, 1.0], np.float32),
                                                 np.zeros(n, np.float32)))
    w2c = np.asarray(geometry.invert_rigid(c2w))[:, :3, :].reshape(n, 12)
    norm = np.tile([[0.9, 1.2, 0.5, 0.5]], (n, 1))
    stamps = [1000 + 33 * i for i in range(n)]
    rows = [" ".join(map(str, [stamps[i], *norm[i], 0, 0, *w2c[i]])) for i in range(n)]
    (tmp_path / "cams").mkdir()
    (tmp_path / "cams" / "clipA.txt").write_text("https://example.com/video\n" + "\n".join(rows) + "\n")
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    (tmp_path / "frames" / "clipA").mkdir(parents=True)
    for i in range(n):
        iio.imwrite(tmp_path / "frames" / "clipA" / f"{stamps[i]}.png", frames[i])
    config = pcb.make_config("re10k", cameras_dir=str(tmp_path / "cams"), frames_dir=str(tmp_path / "frames"),
                             height=h, width=w, num_frames=10)
    tfds_io.build(config, tmp_path / "out")
    got = _by_id(tfds_io.data_source(config, tmp_path / "out"))[0]
    k_ref, c2w_ref = geometry.from_realestate10k(w2c, norm, (h, w))
    np.testing.assert_array_equal(got["frames"], frames)
    np.testing.assert_allclose(got["poses_c2w"], c2w, atol=1e-5)
    np.testing.assert_allclose(got["intrinsics"], k_ref, rtol=1e-6)
    assert (got["depths"] == 0).all() and got["caption"] == "clipA"


@pytest.mark.parametrize("source, fields, match", [
    ("video", {}, "source"),
    ("npz", {}, "input_dir"),
    ("re10k", {"cameras_dir": "x"}, "cameras_dir"),
    ("procedural", {"trajectories": ("zigzag",)}, "trajectories"),
    ("procedural", {"num_clips": 0}, "num_clips"),
    ("procedural", {"height": 0}, "height"),
])
def test_bad_configs(source, fields, match):
    with pytest.raises(ValueError, match=match):
        pcb.make_config(source, **fields)


def test_unprepared_and_empty_inputs(tmp_path):
    config = pcb.make_config("procedural", num_clips=1, height=4, width=4, num_frames=1)
    with pytest.raises(ValueError, match="not prepared"):
        tfds_io.data_source(config, tmp_path)
    with pytest.raises(ValueError, match="input_dir"):
        list(sources.npz_folder_clips(tmp_path, 4, 4))
    (tmp_path / "c.txt").write_text("url\n1 2 3\n")
    with pytest.raises(ValueError, match="19 numbers"):
        sources.read_realestate10k_cameras(tmp_path / "c.txt")


def _run_python(code: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_cli_build_shows_our_progress_bar_only(tmp_path):
    """``mirage-jax data build`` into a pipe prints our progress lines ("train clips: 2/2", no redrawn bar) and
    none of TFDS's own bars; TFDS's setting is restored afterwards (checked in-process)."""
    from tensorflow_datasets.core.utils import tqdm_utils

    args = ["data", "build", "--out", str(tmp_path), "--num-clips", "2", "--num-test-clips", "1", "--frames", "1",
            "--height", "6", "--width", "8"]
    done = _run_python("import sys; from mirage_jax.cli import main; sys.exit(main(sys.argv[1:]))", *args)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "train clips: 2/2" in output and "test clips: 1/1" in output and "\r" not in output, output
    for tfds_bar in ("Generating splits", "Generating train examples", "Shuffling"):
        assert tfds_bar not in output, output
    config = pcb.make_config("procedural", num_clips=2, num_test_clips=1, num_frames=1, height=6, width=8)
    assert tqdm_utils._active
    tfds_io.build(config, tmp_path)  # already there: reused
    assert tqdm_utils._active, "the caller's TFDS progress-bar setting is restored"


_CONCURRENT_BUILD = """
import sys, time
from pathlib import Path
out, me, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
from mirage_jax.data import tfds_io
from mirage_jax.data.pose_clips import pose_clips_dataset_builder as pcb
(out / me).touch()
while not (out / other).exists():  # both processes are imported and ready: start building together
    time.sleep(0.01)
config = pcb.make_config("procedural", num_clips=3, num_test_clips=1, num_frames=2, height=10, width=16, seed=7)
print(tfds_io.build(config, out / "data"))
"""


def test_concurrent_builds_of_one_dataset(tmp_path):
    """Two processes building the same dataset folder at once both succeed; it holds the dataset once, complete."""
    procs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_BUILD, str(tmp_path), me, other],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, other in (("a.ready", "b.ready"), ("b.ready", "a.ready"))]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    folders = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(folders) == 1
    config = pcb.make_config("procedural", num_clips=3, num_test_clips=1, num_frames=2, height=10, width=16, seed=7)
    versions = [p for p in (tmp_path / "data" / "pose_clips" / config.name).iterdir() if p.is_dir()]
    assert [p.name for p in versions] == ["1.0.0"], versions  # no leftover temporary folders
    train = _by_id(tfds_io.data_source(config, tmp_path / "data"))
    assert sorted(train) == [0, 1, 2]
    for i in range(3):
        _assert_same(train[i], synthetic.render_clip(7 + i, 2, 10, 16, synthetic.TRAJECTORIES[i]))


def _npz_samples(folder, seeds):
    for s in seeds:
        save_geometry_npz(folder / f"sample{s}", synthetic.render_clip(s, 2, 8, 12, "pan"))


def test_npz_dataset_follows_its_input_files(tmp_path):
    """Samples added to the input folder build a new dataset (the old one was reused: still 2 clips); unchanged
    inputs reuse the dataset."""
    _npz_samples(tmp_path / "in", (1, 2))
    before = pcb.make_config("npz", input_dir=str(tmp_path / "in"), height=8, width=12)
    tfds_io.build(before, tmp_path / "out")
    assert len(tfds_io.data_source(before, tmp_path / "out")) == 2
    _npz_samples(tmp_path / "in", (3,))
    after = pcb.make_config("npz", input_dir=str(tmp_path / "in"), height=8, width=12)
    assert after.name != before.name
    folder = tfds_io.build(after, tmp_path / "out")
    info = json.loads((folder / "dataset_info.json").read_text())
    assert [split["shardLengths"] for split in info["splits"]] == [["3"]]
    again = pcb.make_config("npz", input_dir=str(tmp_path / "in"), height=8, width=12)
    assert again.name == after.name and tfds_io.build(again, tmp_path / "out") == folder


def test_input_fingerprint_tracks_names_sizes_and_times(tmp_path):
    """Relative names, sizes and modification times of every file, in every input folder."""
    (tmp_path / "cams").mkdir()
    (tmp_path / "frames" / "clipA").mkdir(parents=True)
    cams, frame = tmp_path / "cams" / "clipA.txt", tmp_path / "frames" / "clipA" / "0.png"
    cams.write_text("url\n")
    frame.write_bytes(b"png")
    first = sources.input_fingerprint(tmp_path / "cams", tmp_path / "frames")
    assert sources.input_fingerprint(tmp_path / "cams", tmp_path / "frames") == first  # nothing changed
    os.utime(frame, ns=(10**18, 10**18))
    touched = sources.input_fingerprint(tmp_path / "cams", tmp_path / "frames")
    frame.write_bytes(b"png!")
    os.utime(frame, ns=(10**18, 10**18))
    resized = sources.input_fingerprint(tmp_path / "cams", tmp_path / "frames")
    frame.rename(frame.with_name("1.png"))
    renamed = sources.input_fingerprint(tmp_path / "cams", tmp_path / "frames")
    assert len({first, touched, resized, renamed}) == 4
    assert sources.input_fingerprint(tmp_path / "frames", tmp_path / "cams") != renamed  # which folder holds what


def test_missing_input_folders_are_refused(tmp_path):
    with pytest.raises(ValueError, match=f"input_dir: no folder at '{tmp_path / 'nothing'}'"):
        pcb.make_config("npz", input_dir=str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="frames_dir: no folder at"):
        pcb.make_config("re10k", cameras_dir=str(tmp_path), frames_dir=str(tmp_path / "nothing"))
