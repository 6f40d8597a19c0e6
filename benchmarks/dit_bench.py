"""DiT throughput: our WanDiT (JAX, jit) vs diffusers' WanTransformer3DModel (PyTorch eager) on this CPU.

Same config, same weights (the diffusers model is converted with ``mirage_jax.convert.dit``), same inputs
(per-frame timesteps with frame 0 clean), fp32, measured interleaved in one run. Ours runs twice, with
``model.attention="xla"`` (``jax.nn.dot_product_attention``) and ``"chunked"`` (flash attention with a
block-recomputing backward, ``mirage_jax/models/attention.py``). Like diffusers (no gradient checkpointing by
default), ours runs without rematerialisation (``model.remat_policy="none"``; the config default recomputes each
layer in the backward to save memory at scale); ``--remat`` measures another policy. Reports forward and
forward+backward (gradients w.r.t. all parameters) tokens/s, the ratio ours/theirs and the load average
(timings on a busy machine are not comparable); then the temporary bytes of our compiled forward+backward
(``compiled.memory_analysis().temp_size_in_bytes``: XLA's buffer plan, arguments and outputs excluded) per
attention backend at the benchmark's token count and at 4x it.

    python benchmarks/dit_bench.py [--quick] [--blocks 1024,1024] [--no-memory]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from mirage_jax.models import attention
from mirage_jax.models.block import REMAT_POLICIES

BACKENDS = ("xla", "chunked")


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(layers=2, heads=2, head_dim=64, ffn=512, frames=3, hw=16, text=16, iters=3)
    return dict(layers=4, heads=4, head_dim=64, ffn=1024, frames=5, hw=32, text=64, iters=8)


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few iterations (< 1 min)")
    parser.add_argument("--remat", default="none", choices=REMAT_POLICIES,
                        help="config.model.remat_policy of our model (default: none, as diffusers)")
    parser.add_argument("--unrolled", action="store_true",
                        help="config.model.scan_layers=False: layers unrolled instead of one jax.lax.scan")
    parser.add_argument("--blocks", default=f"{attention.Q_BLOCK},{attention.KV_BLOCK}",
                        help="Q_BLOCK,KV_BLOCK of the chunked backend (default: the tuned values)")
    parser.add_argument("--no-memory", action="store_true", help="skip the compiled memory comparison")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dit.json"))
    return parser.parse_args()


def _models(z: dict, args):
    """(diffusers reference, {backend: our WanDiT with the same weights}, dim)."""
    import diffusers
    import torch

    from mirage_jax.convert.dit import config_from_diffusers, load_model

    dim = z["heads"] * z["head_dim"]
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=z["heads"], attention_head_dim=z["head_dim"], in_channels=48,
        out_channels=48, text_dim=dim, freq_dim=256, ffn_dim=z["ffn"], num_layers=z["layers"])
    ours = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        base = config_from_diffusers(json.loads((Path(tmp) / "config.json").read_text()))
        base.model.remat_policy = args.remat
        base.model.scan_layers = not args.unrolled
        for backend in BACKENDS:
            config = copy.deepcopy(base)
            config.model.attention = backend
            ours[backend] = load_model(config, [tmp])[0]
    return ref, ours, dim


def _inputs(z: dict, dim: int, hw: int):
    """Latents [1, F, hw, hw, 48], per-frame timesteps [1, F] (frame 0 clean), text [1, text, dim] (numpy)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, z["frames"], hw, hw, 48)).astype(np.float32)
    t = np.full((1, z["frames"]), 700.0, np.float32)
    t[:, 0] = 0.0
    ctx = rng.standard_normal((1, z["text"], dim)).astype(np.float32)
    return x, t, ctx


def _jax_functions(model):
    """(params, jitted forward, jitted gradient of mean(out**2) w.r.t. all parameters)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, params = nnx.split(model)
    forward = lambda p, x, t, c: nnx.merge(graphdef, p)(x, t, c, num_references=0)
    grad = jax.grad(lambda p, x, t, c: jnp.mean(forward(p, x, t, c) ** 2))
    return params, jax.jit(forward), jax.jit(grad)


def _sides(ref, ours: dict, x, t, ctx, hw: int) -> dict:
    """{mode: {side: a call that runs one step to completion}} for our backends and diffusers."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    xj, tj, cj = jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx)
    x_t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    t_t = torch.from_numpy(np.repeat(t, (hw // 2) ** 2, axis=1))
    ctx_t = torch.from_numpy(ctx)
    sides = {"forward": {}, "forward+backward": {}}
    for backend, model in ours.items():
        params, fwd, grad = _jax_functions(model)
        sides["forward"][f"ours_{backend}"] = lambda f=fwd, p=params: f(p, xj, tj, cj).block_until_ready()
        sides["forward+backward"][f"ours_{backend}"] = lambda g=grad, p=params: jax.block_until_ready(g(p, xj, tj, cj))

    def theirs_forward():
        with torch.no_grad():
            ref(x_t, t_t, ctx_t, return_dict=False)

    def theirs_backward():
        ref.zero_grad(set_to_none=True)
        (ref(x_t, t_t, ctx_t, return_dict=False)[0] ** 2).mean().backward()

    sides["forward"]["diffusers"] = theirs_forward
    sides["forward+backward"]["diffusers"] = theirs_backward
    return sides


def _interleaved_medians(calls: dict, iters: int) -> dict:
    """Median seconds per side, the sides run in turn each iteration (after one warm-up / compile call each)."""
    for fn in calls.values():
        fn()
    times = {name: [] for name in calls}
    for _ in range(iters):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def _backward_temp_bytes(model, z: dict, dim: int, hw: int) -> int:
    """Temporary bytes of our compiled forward+backward at latents hw x hw (compiled, not run)."""
    params, _, grad = _jax_functions(model)
    x, t, ctx = _inputs(z, dim, hw)
    return grad.lower(params, x, t, ctx).compile().memory_analysis().temp_size_in_bytes


def _memory(ours: dict, z: dict, dim: int) -> dict:
    """{tokens: {backend: temp MiB}} at the benchmark's latent size and at twice its height and width."""
    result = {}
    for hw in (z["hw"], 2 * z["hw"]):
        tokens = z["frames"] * (hw // 2) ** 2
        result[tokens] = {b: _backward_temp_bytes(m, z, dim, hw) / 2**20 for b, m in ours.items()}
    return result


def _print_tables(z: dict, dim: int, tokens: int, args, results: dict, memory: dict, load: float) -> None:
    import jax

    print(f"WanDiT {z['layers']} layers, dim {dim} ({z['heads']}x{z['head_dim']}), ffn {z['ffn']}, "
          f"{tokens} tokens, text {z['text']}, fp32, remat {args.remat}, chunked blocks {args.blocks}, CPU "
          f"({jax.device_count()} JAX devices visible, torch 2 threads), load average (1 min) {load:.2f} on "
          f"{os.cpu_count()} CPUs, jax {jax.__version__}")
    print(f"{'mode':<18}{'side':<14}{'tok/s':>9}{'ms':>9}{'ours/diffusers':>16}")
    for mode, sides in results.items():
        for side, r in sides.items():
            ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
            print(f"{mode:<18}{side:<14}{r['tokens_per_s']:>9.0f}{r['ms']:>9.1f}{ratio:>16}")
    for n, per_backend in memory.items():
        cells = ", ".join(f"{b} {mib:.1f} MiB" for b, mib in per_backend.items())
        print(f"forward+backward temp bytes (compiled memory_analysis) at {n} tokens: {cells}")


def main() -> int:
    args = _parse_args()
    import torch

    torch.set_num_threads(2)
    attention.Q_BLOCK, attention.KV_BLOCK = (int(b) for b in args.blocks.split(","))
    z = _sizes(args.quick)
    ref, ours, dim = _models(z, args)
    x, t, ctx = _inputs(z, dim, z["hw"])
    tokens = z["frames"] * (z["hw"] // 2) ** 2
    results = {}
    for mode, calls in _sides(ref, ours, x, t, ctx, z["hw"]).items():
        med = _interleaved_medians(calls, z["iters"])
        results[mode] = {side: {"tokens_per_s": tokens / sec, "ms": 1e3 * sec} for side, sec in med.items()}
        for side in ours:
            results[mode][f"ours_{side}"]["ratio"] = med["diffusers"] / med[f"ours_{side}"]
    memory = {} if args.no_memory else _memory(ours, z, dim)
    load = os.getloadavg()[0]
    _print_tables(z, dim, tokens, args, results, memory, load)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"sizes": z, "tokens": tokens, "remat_policy": args.remat, "blocks": args.blocks,
                               "load_average_1min": load, "results": results,
                               "backward_temp_mib": memory}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
