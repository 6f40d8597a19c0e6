"""Reference rules compared on the evaluation: frozen (official) vs current, revisit consistency per world.

The two ``memory.reference_rule`` values differ in what a history latent is scored by when references are
chosen: what it saw right after its chunk was written (``frozen``, the official pipeline) or what it sees in
the cache now (``current``). Everything else (model, seed, poses, write-back depth) is the same, so the table
isolates the rule. Held-out procedural worlds (seeds outside the training clips), trajectories that come back
(``revisit``, ``loop``), the latent memory variant.

    python benchmarks/reference_rule_bench.py --checkpoint mirage_demo/checkpoint [--worlds 777,778,779,780]

Prints a table; writes ``benchmarks/results/reference_rules.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mirage_jax.checkpoints import load_model, open_source, resolve_config
from mirage_jax.world.evaluate import evaluate

RULES = ("frozen", "current")
KEYS = ("revisit_psnr", "revisit_psnr_gt", "follow_psnr")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a trained model source (e.g. mirage_demo/checkpoint)")
    parser.add_argument("--worlds", default="777,778,779,780", help="procedural world seeds (held out)")
    parser.add_argument("--frames", type=int, default=97, help="video length (3 chunks of 33)")
    parser.add_argument("--out", default="benchmarks/results/eval_reference_rules", help="evaluation outputs")
    args = parser.parse_args()
    worlds = [int(w) for w in args.worlds.split(",")]
    source = open_source(args.checkpoint)
    rows = {}
    for rule in RULES:
        config, _ = resolve_config(source, None, [f"--config.memory.reference_rule={rule}"])
        model = load_model(source, config)
        for world in worlds:
            metrics = evaluate(config, model, Path(args.out) / rule / str(world), trajectories=("revisit", "loop"),
                               num_frames=args.frames, seed=world, variants=("latent",), progress=False,
                               save_videos=False)["latent"]["trajectories"]
            for trajectory, m in metrics.items():
                scores = {k: m[k] for k in KEYS} | {"references": m["references"]}
                rows.setdefault((world, trajectory), {})[rule] = scores
    print(f"{'world':>6} {'trajectory':>10} " + " ".join(f"{r + ' revisit PSNR':>22}" for r in RULES) + f"{'diff':>8}")
    for (world, trajectory), by_rule in rows.items():
        values = [by_rule[r]["revisit_psnr"] for r in RULES]
        cells = " ".join(f"{v:>22.2f}" for v in values)
        print(f"{world:>6} {trajectory:>10} {cells}{values[1] - values[0]:>+8.2f}")
    means = {r: {k: float(np.nanmean([v[r][k] for v in rows.values()])) for k in KEYS} for r in RULES}
    for rule, m in means.items():
        print(f"mean {rule:>8}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()))
    results = Path("benchmarks/results")
    results.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(source.path), "step": source.step, "frames": args.frames, "means": means,
              "per_world": [{"world": w, "trajectory": t, **by_rule} for (w, t), by_rule in rows.items()]}
    (results / "reference_rules.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
