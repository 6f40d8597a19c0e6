"""``mirage-jax explore --checkpoint SOURCE [--config CONFIG] [--procedural SEED | --geometry geometry.npz]
[--host 127.0.0.1] [--port 8765] [--max-chunks N]``.

Serves a local page (``http://HOST:PORT/``) where a person drives the camera through the world with the keyboard
and watches each generated chunk, the latent memory's bird's-eye map with the path so far, and, on request, the
same path generated without memory. ``SOURCE`` is any model source of ``generate`` (or ``random`` with
``--config``). The page and its API are ``mirage_jax.world.explore.server``; Flask comes with the ``explore``
extra. Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import logging

from mirage_jax.world.loading import add_model_arguments

INSTALL_HINT = "pip install -e '.[explore]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--procedural", type=int, default=0,
                        help="seed of the procedural world to explore (default 0; ground-truth depth everywhere)")
    source.add_argument("--geometry", help="start from a frame of this geometry.npz instead (depth of that frame "
                                           "only, unless --depth-source head)")
    parser.add_argument("--start", type=int, default=0, help="the geometry.npz frame to start from")
    parser.add_argument("--max-chunks", type=int, default=32, help="the most moves (chunks) a session may make")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")


def run(args) -> int:
    try:
        from mirage_jax.world.explore.server import (  # noqa: PLC0415 (needs Flask)
            allowed_hosts,
            check_can_listen,
            create_app,
            serve,
        )
    except ImportError as err:
        raise ValueError(f"explore needs Flask, which is not installed ({err}); install it with {INSTALL_HINT}") \
            from None
    from mirage_jax.world.explore.scenes import geometry_scene, procedural_scene  # noqa: PLC0415
    from mirage_jax.world.explore.session import Explorer, check_scene  # noqa: PLC0415
    from mirage_jax.world.generator import WorldGenerator  # noqa: PLC0415
    from mirage_jax.world.loading import generation_mesh, load_config_and_check, load_model  # noqa: PLC0415

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port: expected an int in [0, 65535], got {args.port}")
    config, depth_source, source = load_config_and_check(args)
    check_can_listen(args.host, args.port)  # before the model is loaded
    if args.geometry:
        scene = geometry_scene(args.geometry, args.start)
    else:
        scene = procedural_scene(args.procedural, int(config.data.height), int(config.data.width))
    check_scene(config, scene, args.max_chunks)  # before the model is loaded
    mesh = generation_mesh(config)
    model, head = load_model(config, source, depth_source, mesh)
    explorer = Explorer(WorldGenerator(config, model, depth_head=head, mesh=mesh), scene, depth_source=depth_source,
                        seed=args.seed, max_chunks=args.max_chunks)
    server = serve(create_app(explorer, allowed_hosts(args.host)), args.host, args.port)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request: the page polls twice a second
    print(f"explore: open http://{args.host}:{server.server_port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        explorer.close()
        server.server_close()
    return 0
