"""Training: flow-matching loss, optimizer, sharded jit step, metrics, the loop and CLI.

Entry point: ``mirage_jax.train.loop.train(config, workdir) -> summary``; the trained model is read back with
``mirage_jax.checkpoints`` (``load_model(open_source(workdir), config)``).
"""
