"""The compiled train and evaluation steps: one ``jax.jit`` each, with explicit in/out shardings.

The train state is a plain pytree ``{"trainable", "frozen", "opt", "step", "rng"}``:
  * ``trainable``: ``{"dit": ...}`` (the model part selected by the stage's filter, via
    ``nnx.split(model, filter, ...)``), plus ``"head"`` (the ``LatentDepthHead`` state, trained in every stage
    when ``train.depth_head``);
  * ``frozen``: the rest of the model;
  * ``opt``: the optax state of the trainable part only;
  * ``step``: the global step; ``rng``: the base PRNG key.
Gradients are taken w.r.t. ``trainable`` only, so frozen parameters pass through untouched (bitwise). The
per-step key is ``fold_in(rng, step)``: reproducible across resumes and independent of the mesh (partitionable
threefry). Gradient accumulation scans over ``grad_accum`` micro-batches (example ``j`` of micro-batch ``i`` is
row ``j·A + i``, so each micro-batch stays spread over the data axes) and averages their gradients before one
optimizer update.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mirage_jax.models.depth_head import depth_head_loss
from mirage_jax.models.partitioning import state_shardings
from mirage_jax.sharding import logical_to_spec
from mirage_jax.train.loss import LossSettings, flow_matching_loss


def batch_sharding(mesh: Mesh, ndim: int, rules) -> NamedSharding:
    """Leading (batch) dimension over the mesh axes the ``batch`` rule names; the rest replicated."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (ndim - 1), rules))


def train_state_shardings(state: dict, tx: optax.GradientTransformation, mesh: Mesh, rules) -> dict:
    """``NamedSharding`` pytree matching a train state (parameters by logical axes, optimizer moments alike)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    trainable = {k: state_shardings(v, mesh, rules) for k, v in state["trainable"].items()}
    opt = optax.tree_map_params(tx, lambda _, sh: sh, state["opt"], trainable,
                                transform_non_params=lambda _: replicated)
    return {"trainable": trainable, "frozen": state_shardings(state["frozen"], mesh, rules), "opt": opt,
            "step": replicated, "rng": replicated}


def new_train_state(model, trainable_filter, tx: optax.GradientTransformation, mesh: Mesh, rules, rng: jax.Array,
                    *, step: int = 0, head=None, restore_opt: Callable | None = None):
    """``(graphdef, state, shardings)`` of a stage: the model split by ``trainable_filter``, placed on ``mesh``.

    The optimizer state is fresh (``tx.init`` compiled straight into its shardings) unless ``restore_opt`` is
    given: then it is ``restore_opt(abstract opt state with shardings)`` (a checkpoint restore).
    """
    graphdef, dit, frozen = nnx.split(model, trainable_filter, ...)
    trainable = {"dit": dit} if head is None else {"dit": dit, "head": nnx.state(head)}
    abstract = {"trainable": trainable, "frozen": frozen, "opt": jax.eval_shape(tx.init, trainable),
                "step": jax.ShapeDtypeStruct((), jnp.int32), "rng": rng}
    shardings = train_state_shardings(abstract, tx, mesh, rules)
    if restore_opt is not None:
        target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), abstract["opt"],
                              shardings["opt"])
        opt = restore_opt(target)
    else:
        opt = jax.jit(tx.init, out_shardings=shardings["opt"])(trainable)
    state = jax.device_put({"trainable": trainable, "frozen": frozen, "opt": opt,
                            "step": jnp.asarray(step, jnp.int32), "rng": rng}, shardings)
    return graphdef, state, shardings


def split_micro_batches(batch: dict, accum: int) -> dict:
    """``[B, ...]`` → ``[accum, B/accum, ...]`` with micro-batch ``i`` = rows ``i, i+accum, ...``."""
    return jax.tree.map(lambda x: jnp.moveaxis(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 1, 0), batch)


def in_mesh(mesh: Mesh) -> Callable:
    """Decorator: traces the function with ``mesh`` as the current (abstract) mesh, so that the model's activation
    constraints (``models.partitioning.constrain``) and its context-parallel attention
    (``models.context_parallel``) see the mesh the step is compiled for."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def traced(*args):
            with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                return fn(*args)

        return traced

    return wrap


def make_train_step(graphdef, tx: optax.GradientTransformation, settings: LossSettings, *, grad_accum: int,
                    state_sharding: dict, batch_shardings: dict, mesh: Mesh, head_graphdef=None,
                    depth_weight: float = 0.0) -> Callable:
    """``step(state, batch, empty_context, score_latent) -> (state, metrics)`` compiled with explicit shardings.

    The objective is the flow-matching loss, plus ``depth_weight`` × the depth-head loss (L1 on log-depth of the
    clean target latents vs ``batch["target_depth"]``) when ``head_graphdef`` is given. ``metrics`` (replicated):
    ``loss`` (flow matching), ``depth_loss`` (with a head), ``grad_norm`` (before clipping),
    ``bucket_sum``/``bucket_count`` ``[NUM_BUCKETS]``. The input state is donated.
    """

    def loss_fn(trainable, frozen, micro, key, empty_context, score_latent):
        model = nnx.merge(graphdef, trainable["dit"], frozen)
        loss, aux = flow_matching_loss(model, micro, key, settings, empty_context, score_latent)
        aux["loss"] = loss
        if head_graphdef is not None:
            head = nnx.merge(head_graphdef, trainable["head"])
            aux["depth_loss"] = depth_head_loss(head, micro["target_latents"], micro["target_depth"])
            loss = loss + depth_weight * aux["depth_loss"]
        return loss, aux

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @in_mesh(mesh)
    def step(state, batch, empty_context, score_latent):
        key = jax.random.fold_in(state["rng"], state["step"])
        args = (state["frozen"],)
        if grad_accum == 1:
            (loss, aux), grads = grad_fn(state["trainable"], *args, batch, key, empty_context, score_latent)
        else:
            def body(carry, inputs):
                i, micro = inputs
                (loss, aux), grads = grad_fn(state["trainable"], *args, micro, jax.random.fold_in(key, i),
                                             empty_context, score_latent)
                return jax.tree.map(jnp.add, carry, (loss, aux, grads)), None

            micros = split_micro_batches(batch, grad_accum)
            shapes = jax.eval_shape(grad_fn, state["trainable"], *args, jax.tree.map(lambda x: x[0], micros), key,
                                    empty_context, score_latent)
            init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (shapes[0][0], shapes[0][1], shapes[1]))
            (loss, aux, grads), _ = jax.lax.scan(
                body, init, (jnp.arange(grad_accum), micros))
            aux = {k: v / grad_accum if k in ("loss", "depth_loss") else v for k, v in aux.items()}
            grads = jax.tree.map(lambda g: g / grad_accum, grads)
        updates, opt = tx.update(grads, state["opt"], state["trainable"])
        trainable = optax.apply_updates(state["trainable"], updates)
        new_state = {"trainable": trainable, "frozen": state["frozen"], "opt": opt, "step": state["step"] + 1,
                     "rng": state["rng"]}
        metrics = {"grad_norm": optax.global_norm(grads), **aux}
        return new_state, metrics

    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step, in_shardings=(state_sharding, batch_shardings, replicated, replicated),
                   out_shardings=(state_sharding, replicated), donate_argnums=0)


def make_eval_step(graphdef, settings: LossSettings, sigmas: tuple[float, ...], *, state_sharding: dict,
                   batch_shardings: dict, mesh: Mesh, seed: int = 1234) -> Callable:
    """``eval(state, batch, empty_context, score_latent) -> [len(sigmas)]`` losses at fixed σ (fixed noise seed).

    Every target frame 1.. gets the same σ (no shift applied: the values are the model-facing noise levels);
    no text dropout.
    """

    @in_mesh(mesh)
    def evaluate(state, batch, empty_context, score_latent):
        model = nnx.merge(graphdef, state["trainable"]["dit"], state["frozen"])
        b, tl = batch["target_latents"].shape[:2]
        losses = []
        for i, sigma in enumerate(sigmas):
            fixed = jnp.full((b, tl), sigma, jnp.float32)
            loss, _ = flow_matching_loss(model, batch, jax.random.fold_in(jax.random.key(seed), i), settings,
                                         empty_context, score_latent, sigmas=fixed)
            losses.append(loss)
        return jnp.stack(losses)

    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(evaluate, in_shardings=(state_sharding, batch_shardings, replicated, replicated),
                   out_shardings=replicated)
