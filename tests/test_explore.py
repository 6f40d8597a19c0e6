"""``mirage-jax explore``: keyboard moves become camera paths, a session generated chunk by chunk equals one
``generate`` call along the same path, the HTTP API answers every bad request with a JSON error and keeps
serving, and a real headless Chromium drives the page (keys → frames and map, the comparison toggle).

The model is the oracle (``world.oracle``: no DiT to compile) at the world tests' 32x56 px, 17-frame chunks.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from mirage_jax.world.explore.camera import ACTIONS, LOOK_DEG, MAX_PITCH_DEG, STEP_M, TURN_DEG, move_poses
from mirage_jax.world.explore.scenes import procedural_scene
from mirage_jax.world.explore.server import MAX_BODY_BYTES, create_app, serve
from mirage_jax.world.explore.session import MAX_MOVES_PER_REQUEST, Explorer
from mirage_jax.world.generator import WorldGenerator
from mirage_jax.world.oracle import oracle_model
from tests.world_config import H, W, tiny_world_config

pytestmark = pytest.mark.xdist_group("explore")  # one worker: the compiled rollout is shared by every test

MAX_CHUNKS = 3
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _yaw_pitch(c2w):
    forward = c2w[:3, 2]
    return np.degrees(np.arctan2(forward[0], forward[2])), np.degrees(np.arcsin(forward[1]))


# ---- camera moves ----------------------------------------------------------------------------------------


def test_moves_walk_turn_and_look_by_their_steps():
    start = procedural_scene(0, H, W).pose
    yaw0, pitch0 = _yaw_pitch(start)
    forward = move_poses(start, "forward", 16)
    assert forward.shape == (16, 4, 4) and forward.dtype == np.float32
    step = forward[-1, :3, 3] - start[:3, 3]
    heading = np.radians(yaw0)
    np.testing.assert_allclose(step, STEP_M * np.array([np.sin(heading), 0.0, np.cos(heading)]), atol=1e-5)
    np.testing.assert_allclose(np.diff(forward[:, :3, 3], axis=0), np.broadcast_to(step / 16, (15, 3)), atol=1e-5)
    right = move_poses(start, "right", 4)[-1, :3, 3] - start[:3, 3]
    np.testing.assert_allclose(right, STEP_M * np.array([np.cos(heading), 0.0, -np.sin(heading)]), atol=1e-5)
    turned = move_poses(start, "turn_right", 8)[-1]
    assert np.isclose(_yaw_pitch(turned)[0] - yaw0, TURN_DEG, atol=1e-3) and np.allclose(turned[:3, 3], start[:3, 3])
    assert np.isclose(_yaw_pitch(move_poses(start, "look_down", 8)[-1])[1] - pitch0, LOOK_DEG, atol=1e-3)
    pose = start
    for _ in range(10):  # looking up stops at the limit
        pose = move_poses(pose, "look_up", 4)[-1]
    assert np.isclose(_yaw_pitch(pose)[1], -MAX_PITCH_DEG, atol=1e-3)
    for p in move_poses(start, "turn_left", 8):
        np.testing.assert_allclose(p[:3, :3] @ p[:3, :3].T, np.eye(3), atol=1e-5)


def test_moves_stay_inside_the_bounds_and_unknown_actions_are_refused():
    bounds = (np.array([-0.2, -0.2]), np.array([0.2, 0.2]))
    pose = np.eye(4, dtype=np.float32)
    for _ in range(3):
        pose = move_poses(pose, "forward", 4, bounds)[-1]
    np.testing.assert_allclose(pose[:3, 3], [0.0, 0.0, 0.2], atol=1e-6)
    with pytest.raises(ValueError, match=r"^action: expected one of \['back', 'forward'"):
        move_poses(pose, "jump", 4)
    assert len(ACTIONS) == 8


def test_a_geometry_npz_frame_starts_an_exploration(tmp_path):
    from mirage_jax.data.synthetic import render_clip, save_geometry_npz
    from mirage_jax.world.explore.scenes import geometry_scene
    from mirage_jax.world.explore.session import check_scene

    clip = render_clip(0, 5, H, W)
    path = save_geometry_npz(tmp_path, clip)
    scene = geometry_scene(str(path), start=2)
    np.testing.assert_array_equal(scene.frame, clip["frames"][2])
    np.testing.assert_array_equal(scene.pose, clip["poses_c2w"][2])
    assert scene.bounds is None and not scene.depth_at(clip["poses_c2w"][:3])[0].any()  # later cameras: no depth
    assert check_scene(tiny_world_config(), scene, 2) == 33
    with pytest.raises(ValueError, match=r"^--start: expected a frame of .* in \[0, 4\], got 5"):
        geometry_scene(str(path), start=5)
    with pytest.raises(ValueError, match=r"^geometry frames are 32x56 but the config generates 64x112"):
        config = tiny_world_config()
        config.data.height, config.data.width = 64, 112
        check_scene(config, scene, 2)


# ---- the session and the HTTP API ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explorer():
    config = tiny_world_config()
    generator = WorldGenerator(config, oracle_model(config.latent.channels))
    explorer = Explorer(generator, procedural_scene(0, H, W), max_chunks=MAX_CHUNKS)
    yield explorer
    explorer.close()


@pytest.fixture
def client(explorer):
    yield create_app(explorer).test_client()
    explorer.close()


def _open(client) -> str:
    response = client.post("/api/session")
    assert response.status_code == 200, response.json
    return response.json["session"]


def _wait(client, token, done, timeout=120.0, errors=False) -> dict:
    """Polls the state until ``done(state)``; fails after ``timeout`` seconds, or on a generation error unless
    ``errors``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = client.get(f"/api/state?session={token}").json
        assert errors or state["error"] is None, state["error"]
        if done(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting; last state {state}")


def test_a_session_follows_the_moves_and_equals_one_generate_call(explorer, client):
    """Chunk by chunk as the moves arrive, the memory rollout makes the video ``generate`` makes along the whole
    path at once; the map is redrawn for every move and chunk; the comparison catches up on the same path."""
    token = _open(client)
    first = _wait(client, token, lambda s: s["map_version"] >= 1)  # the start frame is in the memory
    for action in ("forward", "turn_left"):
        assert client.post("/api/move", json={"session": token, "action": action}).status_code == 200
    state = _wait(client, token, lambda s: s["variants"]["memory"]["chunks"] == 2)
    assert state["variants"]["memory"]["frames"] == 33 and state["variants"]["none"]["frames"] == 1
    assert state["map_version"] >= first["map_version"] + 3  # two moves, two chunks
    map_image = np.asarray(Image.open(io.BytesIO(client.get(f"/api/map.png?session={token}").data)))
    assert map_image.shape == (256, 256, 3)
    frame = client.get(f"/api/frame/memory/32.jpg?session={token}")
    assert frame.mimetype == "image/jpeg" and Image.open(io.BytesIO(frame.data)).size == (W, H)

    session = explorer.session
    poses = session.poses[:33]
    depths, masks = explorer.scene.depth_at(poses)
    clip = {"frames": explorer.scene.frame[None], "depths": depths, "masks": masks, "caption": explorer.scene.caption,
            "intrinsics": np.repeat(explorer.scene.intrinsics[None], 33, 0), "poses_c2w": poses}
    whole = explorer.generator.generate(clip, 33, progress=False)
    np.testing.assert_array_equal(np.concatenate(session.variants["memory"].run.video), whole.video)

    assert client.post("/api/compare", json={"session": token, "on": True}).json == {"compare": True}
    state = _wait(client, token, lambda s: s["variants"]["none"]["chunks"] == 2)
    assert state["compare"] and state["variants"]["none"]["frames"] == 33
    without = explorer.generator.generate(clip, 33, cache="none", progress=False)
    np.testing.assert_array_equal(np.concatenate(session.variants["none"].run.video), without.video)


def test_one_session_at_a_time(explorer, client):
    token = _open(client)
    second = client.post("/api/session")
    assert second.status_code == 409 and "another page is exploring" in second.json["error"]
    assert client.get(f"/api/state?session={token}").status_code == 200  # the first one carries on
    stale = client.get("/api/state?session=0123456789abcdef")
    assert stale.status_code == 409 and "is not active" in stale.json["error"]
    assert client.post("/api/close", data=f'{{"session": "{token}"}}', content_type="text/plain").json == {
        "closed": True}  # as navigator.sendBeacon sends it
    assert client.get(f"/api/state?session={token}").status_code == 409
    newer = _open(client)  # a closed session frees the explorer at once
    explorer.idle_s, idle = 0.0, explorer.idle_s  # a page gone silent is taken over
    try:
        newest = _open(client)
    finally:
        explorer.idle_s = idle
    assert client.get(f"/api/state?session={newer}").status_code == 409
    assert client.get(f"/api/state?session={newest}").status_code == 200


def test_a_failed_generation_is_reported_and_frees_the_explorer(explorer, client, monkeypatch):
    def out_of_memory(run, chunk, steps_bar=None):
        raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")

    monkeypatch.setattr(explorer.generator, "run_chunk", out_of_memory)
    token = _open(client)
    assert client.post("/api/move", json={"session": token, "action": "forward"}).status_code == 200
    state = _wait(client, token, lambda s: s["error"] is not None, errors=True)
    assert state["error"] == "RuntimeError: RESOURCE_EXHAUSTED: out of memory" and not state["busy"]
    again = client.post("/api/move", json={"session": token, "action": "forward"})
    assert again.status_code == 409 and "generation stopped (RuntimeError" in again.json["error"]
    assert client.get(f"/api/frame/memory/0.jpg?session={token}").status_code == 200
    monkeypatch.undo()
    _open(client)  # the failed session does not hold the explorer


@pytest.mark.parametrize("path, body, status, message", [
    ("/api/move", b"{not json", 400, "request body: expected a JSON object, got invalid JSON"),
    ("/api/move", b"[1, 2]", 400, "request body: expected a JSON object, got a JSON list"),
    ("/api/move", {"session": None, "action": "forward"}, 400, "session: expected the id that POST /api/session"),
    ("/api/move", {"action": "fly"}, 400, "action: expected one of ['back', 'forward', 'left', 'look_down'"),
    ("/api/move", {"action": "forward", "count": 10**12}, 400,
     f"count: expected an int in [1, {MAX_MOVES_PER_REQUEST}], got 1000000000000"),
    ("/api/move", {"action": "forward", "count": "3"}, 400, "count: expected an int in"),
    ("/api/move", {"action": "forward", "count": True}, 400, "count: expected an int in"),
    ("/api/move", {"action": "forward", "count": MAX_CHUNKS + 1}, 400, f"the path holds at most {MAX_CHUNKS} moves"),
    ("/api/compare", {"on": "yes"}, 400, "on: expected true or false"),
    ("/api/move", b"{" + b" " * MAX_BODY_BYTES + b"}", 413, "Request Entity Too Large"),
    ("/api/frame/rgb/0.jpg", None, 400, "variant: expected one of ['memory', 'none']"),
    ("/api/frame/memory/5.jpg", None, 404, "frame 5 of 'memory' is not generated yet (1 so far)"),
    ("/api/teleport", {}, 404, "Not Found"),
    ("/api/session", None, 405, "Method Not Allowed"),
])
def test_bad_requests_get_json_errors_and_the_server_carries_on(client, path, body, status, message):
    token = _open(client)
    if path == "/api/session":
        response = client.get(path)
    elif body is None:
        response = client.get(f"{path}?session={token}")
    elif isinstance(body, bytes):
        response = client.post(path, data=body, content_type="application/json")
    else:
        response = client.post(path, json={"session": token, **body})
    assert response.status_code == status and response.is_json, response.data[:200]
    assert message in response.json["error"] and "\n" not in response.json["error"]
    state = client.get(f"/api/state?session={token}")
    assert state.status_code == 200 and state.json["path_chunks"] == 0 and state.json["error"] is None


def test_the_page_is_one_static_file(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.data.decode()
    assert "<script>" in html and "src=\"http" not in html and "/api/move" in html


def test_the_command_checks_its_inputs_and_serves_the_explorer(monkeypatch, capsys):
    from mirage_jax.cli import main
    from mirage_jax.world.explore import server

    tiny = ["--checkpoint", "random", "--config", "tiny", "--config.data.height=32", "--config.data.width=56",
            "--config.sample.chunk_frames=17"]
    assert main(["explore", *tiny, "--max-chunks", "0"]) == 2
    assert "mirage-jax explore: error: --max-chunks: expected an int in [1, 256], got 0" in capsys.readouterr().err
    assert main(["explore", *tiny, "--port", "70000"]) == 2
    assert "--port: expected an int in [0, 65535]" in capsys.readouterr().err

    served = {}

    class Server:  # serve() without a socket: Ctrl-C at once
        server_port = 8765

        def serve_forever(self):
            raise KeyboardInterrupt

        def server_close(self):
            served["closed"] = True

    monkeypatch.setattr(server, "serve", lambda app, host, port: served.update(app=app, host=host) or Server())
    assert main(["explore", *tiny, "--max-chunks", "2"]) == 0
    assert "explore: open http://127.0.0.1:8765/" in capsys.readouterr().out
    assert served["host"] == "127.0.0.1" and served["closed"]
    assert served["app"].test_client().get("/").status_code == 200

    monkeypatch.setitem(sys.modules, "flask", None)  # Flask not installed
    monkeypatch.delitem(sys.modules, "mirage_jax.world.explore.server")
    assert main(["explore", *tiny]) == 2
    err = capsys.readouterr().err
    assert "explore needs Flask" in err and "install it with pip install -e '.[explore]'" in err


def test_on_loopback_only_loopback_host_names_are_answered(explorer):
    """DNS rebinding: a page elsewhere that points its own name at 127.0.0.1 sends that name as Host: refused
    (403, JSON) while the loopback names work; bound for other machines, any Host is answered."""
    from mirage_jax.world.explore.server import allowed_hosts

    client = create_app(explorer, allowed_hosts("127.0.0.1")).test_client()
    refused = client.get("/", headers={"Host": "rebind.example:8765"})
    assert refused.status_code == 403 and "'rebind.example'" in refused.json["error"]
    assert client.post("/api/session", headers={"Host": "rebind.example"}).status_code == 403
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "localhost"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host
    assert allowed_hosts("0.0.0.0") is None
    assert create_app(explorer, None).test_client().get("/", headers={"Host": "a.example"}).status_code == 200


def test_a_port_in_use_is_reported_before_the_model_loads(monkeypatch, capsys):
    import socket

    from mirage_jax.cli import main
    from mirage_jax.world import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        argv = ["explore", "--checkpoint", "random", "--config", "tiny", "--port", str(port)]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--host/--port: cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1


# ---- a real browser --------------------------------------------------------------------------------------


def _browser():
    """A headless Chromium through Selenium; skips (a failure in CI, see tests/conftest.py) when either is
    missing. CI installs Debian's chromium and chromium-driver (.ci/run)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        pytest.skip(f"selenium missing ({err}); install with pip install -e '.[test]'")
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not (os.access(path, os.X_OK) or shutil.which(path))]
    if missing:
        pytest.skip(f"no browser: {missing} missing; install with apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='explore-chromium-')}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


IMAGE_SUM = """const img = document.getElementById(arguments[0]);
if (!img.complete || !img.naturalWidth) return null;
const canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const context = canvas.getContext('2d'); context.drawImage(img, 0, 0);
return context.getImageData(0, 0, canvas.width, canvas.height).data.reduce((a, b) => a + b, 0);"""


def test_a_browser_drives_the_camera_and_sees_frames_map_and_comparison(explorer):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser()
    server = serve(create_app(explorer), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        driver.get(f"http://127.0.0.1:{server.server_port}/")
        wait = WebDriverWait(driver, 60, poll_frequency=0.1)
        attribute = lambda element, name: driver.find_element(By.ID, element).get_attribute(name)  # noqa: E731
        wait.until(lambda d: attribute("status", "textContent").startswith("ready"))
        wait.until(lambda d: d.execute_script(IMAGE_SUM, "map") is not None)
        map_before, version_before = driver.execute_script(IMAGE_SUM, "map"), int(attribute("map", "data-version"))

        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("w")
        body.send_keys(Keys.ARROW_LEFT)
        wait.until(lambda d: int(attribute("frame-memory", "data-frame")) == 32)  # both chunks played
        assert explorer.session.path_chunks == 2
        wait.until(lambda d: int(attribute("map", "data-version")) >= version_before + 4)
        wait.until(lambda d: d.execute_script(IMAGE_SUM, "map") not in (None, map_before))
        assert not driver.find_element(By.ID, "view-none").is_displayed()

        driver.find_element(By.ID, "compare").click()
        wait.until(lambda d: d.find_element(By.ID, "view-none").is_displayed())
        wait.until(lambda d: int(attribute("frame-none", "data-frame")) == 32)  # caught up on the same path
        assert explorer.session.variants["none"].chunks == 2
        assert driver.execute_script(IMAGE_SUM, "frame-none") != driver.execute_script(IMAGE_SUM, "frame-memory")
        driver.find_element(By.ID, "compare").click()
        wait.until(lambda d: not d.find_element(By.ID, "view-none").is_displayed())
        assert not explorer.session.variants["none"].enabled
        assert "error" not in attribute("status", "className")
    finally:
        driver.quit()
        server.shutdown()
        thread.join(timeout=10)
        explorer.close()
