"""The explorer's HTTP interface (Flask): one static page and a small JSON API over an ``Explorer``.

=====================================  ==============================================================
``GET /``                              the page (``page.html``: one static HTML + JS file)
``POST /api/session``                  opens the session: ``{"session": id, ...state}``; 409 while another is active
``GET /api/state?session=ID``          path, frames so far, progress, map version, error (the page polls it)
``POST /api/move``                     ``{"session", "action", "count"}``: adds moves to the path
``POST /api/compare``                  ``{"session", "on": bool}``: the no-memory rollout on / off
``POST /api/close``                    ``{"session"}``: ends it (any content type: the page sends a beacon)
``GET /api/frame/VARIANT/I.jpg``       frame ``I`` of ``memory`` or ``none`` (``?session=ID``)
``GET /api/map.png?session=ID``        the memory's bird's-eye map with the path so far
=====================================  ==============================================================

Every error is JSON ``{"error": message}`` with its status: 400 for a malformed request (bad JSON, unknown
action, a count out of range), 403 for a ``Host`` header the server does not answer to, 404 for a frame not
generated yet or an unknown route, 409 for a session that is not the active one (or a second one), 413 for a
body over ``MAX_BODY_BYTES``, 500 for anything else; the server keeps running. Bound to a loopback address, the
server answers only requests addressed to a loopback name (``allowed_hosts``): a web page elsewhere cannot
reach it by pointing a DNS name at 127.0.0.1 (DNS rebinding).
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from mirage_jax.world.explore.session import Explorer, NotReady, SessionConflict

PAGE = Path(__file__).with_name("page.html")
MAX_BODY_BYTES = 4096
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def allowed_hosts(bind_host: str) -> frozenset[str] | None:
    """The ``Host`` names a server bound to ``bind_host`` answers: the loopback names for a loopback address,
    any (None) when it was bound to be reached from elsewhere."""
    return LOOPBACK_HOSTS if bind_host in LOOPBACK_HOSTS else None


def _host_name(host_header: str) -> str:
    """``"127.0.0.1:8765"`` → ``"127.0.0.1"``, ``"[::1]:8765"`` → ``"::1"``."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _body() -> dict:
    """The request's JSON object (whatever its content type: ``sendBeacon`` posts text/plain)."""
    try:
        body = json.loads(request.get_data(cache=False) or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"request body: expected a JSON object, got invalid JSON ({err.msg})") from None
    if not isinstance(body, dict):
        raise ValueError(f"request body: expected a JSON object, got a JSON {type(body).__name__}")
    return body


def create_app(explorer: Explorer, hosts: frozenset[str] | None = None) -> Flask:
    """The Flask app serving ``explorer`` (see the module docstring); ``hosts``: the ``Host`` names it answers
    (None: any)."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def error(message: str, status: int):
        return jsonify(error=message), status

    @app.before_request
    def check_host():
        name = _host_name(request.host)
        if hosts is not None and name not in hosts:
            return error(f"Host {name!r}: this explorer answers only {sorted(hosts)} (it listens on loopback)", 403)
        return None

    @app.errorhandler(ValueError)
    def bad_request(err):
        return error(str(err), 400)

    @app.errorhandler(NotReady)
    def not_ready(err):
        return error(str(err), 404)

    @app.errorhandler(SessionConflict)
    def conflict(err):
        return error(str(err), 409)

    @app.errorhandler(HTTPException)
    def http_error(err):
        return error(f"{err.name}: {err.description}", err.code)

    @app.errorhandler(Exception)
    def internal(err):
        logging.getLogger(__name__).exception("explore: request failed")
        return error(f"internal error: {type(err).__name__}: {err}", 500)

    @app.get("/")
    def page():
        return Response(PAGE.read_bytes(), mimetype="text/html")

    @app.post("/api/session")
    def open_session():
        session = explorer.open()
        return jsonify(session=session.token, **session.state())

    @app.get("/api/state")
    def state():
        return jsonify(explorer.get(request.args.get("session")).state())

    @app.post("/api/move")
    def move():
        body = _body()
        return jsonify(explorer.get(body.get("session")).move(body.get("action"), body.get("count", 1)))

    @app.post("/api/compare")
    def compare():
        body = _body()
        return jsonify(explorer.get(body.get("session")).set_compare(body.get("on")))

    @app.post("/api/close")
    def close():
        explorer.get(_body().get("session")).close()
        return jsonify(closed=True)

    @app.get("/api/frame/<variant>/<int:index>.jpg")
    def frame(variant: str, index: int):
        data = explorer.get(request.args.get("session")).frame(variant, index)
        return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/map.png")
    def map_png():
        return Response(explorer.get(request.args.get("session")).map_png(), mimetype="image/png",
                        headers={"Cache-Control": "no-store"})

    return app


def check_can_listen(host: str, port: int) -> None:
    """``ValueError`` when nothing can listen on ``host:port`` (in use, or not this machine's address): checked
    before the model loads, so a taken port is reported at once."""
    try:
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET):
            pass
    except OSError as err:
        raise ValueError(f"--host/--port: cannot listen on {host}:{port} ({err.strerror}); pick another --port") \
            from None


def serve(app: Flask, host: str, port: int):
    """A threaded WSGI server for ``app`` on ``host:port`` (port 0: a free one, ``server.server_port``); call
    ``serve_forever()`` on it, ``shutdown()`` from another thread to stop."""
    try:
        return make_server(host, port, app, threaded=True)
    except OSError as err:
        raise ValueError(f"--host/--port: cannot listen on {host}:{port} ({err.strerror}); pick another --port") \
            from None
