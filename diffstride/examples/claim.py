"""The paper's claim, measured: accuracy vs stride initialisation, and accuracy vs compute.

    python -m diffstride.examples.claim --out runs/claim [--epochs 3] [--limit-train 20000]

Runs the training command on Fashion-MNIST with the small ResNet for every pooling in
{strided, spectral, diffstride} x stride initialisation in {good: 1,1,2,2,2; poor: 1,1,3,2,3}
x seeds, then DiffStride with the good initialisation under three values of the complexity
weight lambda. Writes every run under ``OUT/``, ``OUT/summary.json`` and ``OUT/table.md``
(mean +- sd of test accuracy and MACs per configuration), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffstride.examples import train

INITS = {"good": (1.0, 1.0, 2.0, 2.0, 2.0), "poor": (1.0, 1.0, 3.0, 2.0, 3.0)}
POOLINGS = ("strided", "spectral", "diffstride")


def _mean_sd(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    mean = statistics.fmean(values) * scale
    sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} +- {sd:.{digits}f}"


def _row(label: str, runs: list[dict[str, Any]]) -> str:
    accuracy = [r["final"]["test_accuracy"] for r in runs]
    macs = [r["final"]["macs"] for r in runs]
    seconds = [r["seconds"] for r in runs]
    strides = runs[0]["final"]["strides"]
    learned = "; ".join(f"{s[0]:.2f},{s[1]:.2f}" for s in strides) if strides else "-"
    return (
        f"| {label} | {len(runs)} | {_mean_sd(accuracy, 100)} | "
        f"{_mean_sd(macs, 1e-6)} | {learned} | {statistics.fmean(seconds):.0f} |"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffstride.examples.claim", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", default="runs/claim")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--lambdas", default="0.01,0.1,1.0")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()

    def run(name: str, **overrides: Any) -> dict[str, Any]:
        config = train.Config(
            dataset="fashion-mnist",
            data_dir=args.data_dir,
            epochs=args.epochs,
            limit_train=args.limit_train,
            out=str(out / name),
            progress=False,
            **overrides,
        )
        print(f"\n=== {name} ===", flush=True)
        return train.run(config)

    groups: dict[str, list[dict[str, Any]]] = {}
    for pooling in POOLINGS:
        for init, strides in INITS.items():
            groups[f"{pooling}, {init} init, lambda 0"] = [
                run(f"{pooling}-{init}-seed{seed}", pooling=pooling, strides=strides, seed=seed)
                for seed in range(args.seeds)
            ]
    for lam in (float(v) for v in args.lambdas.split(",")):
        groups[f"diffstride, good init, lambda {lam:g}"] = [
            run(
                f"diffstride-good-lambda{lam:g}",
                pooling="diffstride",
                strides=INITS["good"],
                lambda_complexity=lam,
                seed=0,
            )
        ]
    header = (
        "| configuration | runs | test accuracy % (mean +- sd) | MMACs/image | "
        "learned strides (h,w per DiffStride layer, seed 0) | s/run |\n"
        "|---|---|---|---|---|---|"
    )
    table = "\n".join([header, *(_row(label, runs) for label, runs in groups.items())])
    total = time.perf_counter() - started
    (out / "table.md").write_text(table + "\n")
    (out / "summary.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "seconds": round(total),
                "groups": {label: [r["final"] for r in runs] for label, runs in groups.items()},
            },
            indent=2,
        )
    )
    print(f"\n{table}\n\ntotal {total / 60:.1f} min; wrote {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
