"""``mirage-jax explore``: a local web page where a person drives the camera through a world with the keyboard
and watches the model generate it chunk by chunk, the latent memory's bird's-eye map, and the same path without
memory beside it.

``camera`` turns key presses into camera paths, ``scenes`` gives the start (a procedural world, or a
``geometry.npz`` frame), ``session`` generates along the growing path in a worker thread (one session at a
time), ``server`` is the Flask app over it with ``page.html``, ``cli`` the command. Flask comes with the
``explore`` extra: ``pip install -e '.[explore]'``.
"""
