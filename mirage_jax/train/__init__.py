"""Training: flow-matching loss, optimizer, sharded jit step, Orbax checkpoints, metrics, the loop and CLI.

Entry points: ``mirage_jax.train.loop.train(config, workdir) -> summary`` and
``mirage_jax.train.checkpoint.restore_model(config, checkpoint_dir) -> model``.
"""
