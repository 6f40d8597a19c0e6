"""AdamW with warmup + constant/cosine learning rate and global-norm clipping (docs/design.md §6).

Parameters are fp32 master weights (``config.model.param_dtype``), so AdamW moments are fp32 too; the model
computes in ``config.model.compute_dtype`` (bf16 on accelerators). Each training stage builds a fresh
optimizer over its trainable subset only, so frozen parameters have no optimizer state and never change.
"""

from __future__ import annotations

import optax


def learning_rate_schedule(train_config, num_steps: int) -> optax.Schedule:
    """Learning rate per optimizer step of one stage.

    Linear warmup from 0 to ``lr`` over ``warmup_steps``, then ``lr`` constant (``schedule="constant"``) or
    cosine-decayed to 0 at ``num_steps`` (``schedule="cosine"``).
    """
    lr, warmup = float(train_config.lr), int(train_config.warmup_steps)
    if train_config.schedule == "constant":
        after = optax.constant_schedule(lr)
    elif train_config.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, max(num_steps - warmup, 1))
    else:
        raise ValueError(f"config.train.schedule={train_config.schedule!r}: expected 'constant' or 'cosine'")
    if warmup <= 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(train_config, num_steps: int) -> optax.GradientTransformation:
    """Global-norm clipping (``clip_norm``; 0 = off) followed by AdamW (``b1``, ``b2``, ``weight_decay``)."""
    adamw = optax.adamw(learning_rate_schedule(train_config, num_steps), b1=float(train_config.b1),
                        b2=float(train_config.b2), weight_decay=float(train_config.weight_decay))
    if float(train_config.clip_norm) > 0:
        return optax.chain(optax.clip_by_global_norm(float(train_config.clip_norm)), adamw)
    return adamw
