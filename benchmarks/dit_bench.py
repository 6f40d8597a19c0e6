"""DiT throughput: our WanDiT (JAX, jit) vs diffusers' WanTransformer3DModel (PyTorch eager) on this CPU.

Same config, same weights (the diffusers model is converted with ``mirage_jax.convert.dit``), same inputs
(per-frame timesteps with frame 0 clean), fp32, measured interleaved in one run. Like diffusers (no gradient
checkpointing by default), ours runs without rematerialisation (``model.remat_policy="none"``; the config
default recomputes each layer in the backward to save memory at scale); ``--remat`` measures another policy.
Reports forward and forward+backward (gradients w.r.t. all parameters) tokens/s, the ratio ours/theirs and
the load average (timings on a busy machine are not comparable).

    python benchmarks/dit_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from mirage_jax.models.block import REMAT_POLICIES


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(layers=2, heads=2, head_dim=64, ffn=512, frames=3, hw=16, text=16, iters=3)
    return dict(layers=4, heads=4, head_dim=64, ffn=1024, frames=5, hw=32, text=64, iters=8)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few iterations (< 1 min)")
    parser.add_argument("--remat", default="none", choices=REMAT_POLICIES,
                        help="config.model.remat_policy of our model (default: none, as diffusers)")
    parser.add_argument("--unrolled", action="store_true",
                        help="config.model.scan_layers=False: layers unrolled instead of one jax.lax.scan")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dit.json"))
    args = parser.parse_args()

    import diffusers
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    from mirage_jax.convert.dit import config_from_diffusers, load_model

    torch.set_num_threads(2)
    z = _sizes(args.quick)
    dim = z["heads"] * z["head_dim"]
    torch.manual_seed(0)
    ref = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=z["heads"], attention_head_dim=z["head_dim"], in_channels=48,
        out_channels=48, text_dim=dim, freq_dim=256, ffn_dim=z["ffn"], num_layers=z["layers"])
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        config = config_from_diffusers(json.loads((Path(tmp) / "config.json").read_text()))
        config.model.remat_policy = args.remat
        config.model.scan_layers = not args.unrolled
        model, _ = load_model(config, [tmp])

    rng = np.random.default_rng(0)
    b, f, hw = 1, z["frames"], z["hw"]
    tokens = b * f * (hw // 2) ** 2
    x = rng.standard_normal((b, f, hw, hw, 48)).astype(np.float32)
    t = np.full((b, f), 700.0, np.float32)
    t[:, 0] = 0.0
    ctx = rng.standard_normal((b, z["text"], dim)).astype(np.float32)
    x_t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    t_t = torch.from_numpy(np.repeat(t, (hw // 2) ** 2, axis=1))
    ctx_t = torch.from_numpy(ctx)

    graphdef, params = nnx.split(model)
    fwd = jax.jit(lambda p, x, t, c: nnx.merge(graphdef, p)(x, t, c, num_references=0))
    grad = jax.jit(jax.grad(lambda p, x, t, c: jnp.mean(nnx.merge(graphdef, p)(x, t, c, num_references=0) ** 2)))
    xj, tj, cj = jnp.asarray(x), jnp.asarray(t), jnp.asarray(ctx)

    def ours_fwd():
        fwd(params, xj, tj, cj).block_until_ready()

    def ours_bwd():
        jax.block_until_ready(grad(params, xj, tj, cj))

    def theirs_fwd():
        with torch.no_grad():
            ref(x_t, t_t, ctx_t, return_dict=False)

    def theirs_bwd():
        ref.zero_grad(set_to_none=True)
        (ref(x_t, t_t, ctx_t, return_dict=False)[0] ** 2).mean().backward()

    results = {}
    for mode, ours, theirs in (("forward", ours_fwd, theirs_fwd), ("forward+backward", ours_bwd, theirs_bwd)):
        ours(), theirs()  # compile / warm up
        times = {"ours": [], "diffusers": []}
        for _ in range(z["iters"]):
            for name, fn in (("ours", ours), ("diffusers", theirs)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        results[mode] = {"ours_tokens_per_s": tokens / med["ours"], "diffusers_tokens_per_s": tokens / med["diffusers"],
                         "ours_ms": 1e3 * med["ours"], "diffusers_ms": 1e3 * med["diffusers"],
                         "ratio": med["diffusers"] / med["ours"]}

    load = os.getloadavg()[0]
    print(f"WanDiT {z['layers']} layers, dim {dim} ({z['heads']}x{z['head_dim']}), ffn {z['ffn']}, "
          f"{tokens} tokens, text {z['text']}, fp32, remat {args.remat}, CPU ({jax.device_count()} JAX devices "
          f"visible, torch 2 threads), load average (1 min) {load:.2f} on {os.cpu_count()} CPUs")
    print(f"{'mode':<18}{'ours tok/s':>12}{'diffusers tok/s':>17}{'ours ms':>10}{'diff. ms':>10}{'ratio':>8}")
    for mode, r in results.items():
        print(f"{mode:<18}{r['ours_tokens_per_s']:>12.0f}{r['diffusers_tokens_per_s']:>17.0f}"
              f"{r['ours_ms']:>10.1f}{r['diffusers_ms']:>10.1f}{r['ratio']:>7.2f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"sizes": z, "tokens": tokens, "remat_policy": args.remat, "load_average_1min": load,
                               "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
