"""``make demo``: strides learned from a small and from a large initialisation.

    python -m diffstride.examples.demo [--epochs 4] [--out runs/demo] [--framework torch]

Trains the small ResNet with DiffStride on the embedded synthetic set twice, with the
complexity regularizer on (``lambda = 0.1``): once from small strides (``1, 1, 1.2, 1.2, 1.2``)
and once from large ones (``3, 1, 3, 3, 3``). The class information lives at frequency 8 of
32x32 images, so the stem's DiffStride (the only pooling before the first ReLUs, which turn a
grating's energy into a DC term that any later downsampling keeps) must leave at least 17
pixels: the regularizer pushes its stride up, the labels hold it back. The demo prints each
run's table, then the stem's stride and output size for both starts next to that limit, and
writes one plot of both runs' trajectories.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffstride.examples import data, train

STARTS = {"small start": (1.0, 1.0, 1.2, 1.2, 1.2), "large start": (3.0, 1.0, 3.0, 3.0, 3.0)}


def _plot(results: dict[str, dict[str, Any]], path: Path, band_pixels: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for (label, metrics), color in zip(results.items(), ("tab:blue", "tab:orange"), strict=False):
        epochs = [e["epoch"] for e in metrics["epochs"]]
        strides = np.asarray([e["strides"] for e in metrics["epochs"]])
        sizes = np.asarray([e["output_sizes"] for e in metrics["epochs"]])
        for layer in range(strides.shape[1]):
            style = "-" if layer == 0 else ":"
            left.plot(
                epochs,
                strides[:, layer].mean(axis=1),
                style,
                color=color,
                label=f"{label}, {'stem' if layer == 0 else f'layer {layer}'}",
            )
        right.plot(epochs, sizes[:, 0].mean(axis=1), "o-", color=color, label=label)
    left.set(xlabel="epoch", ylabel="stride (mean of h, w)", title="learned strides")
    left.legend(fontsize="x-small", ncol=2)
    right.axhline(
        band_pixels,
        color="gray",
        linestyle="--",
        label=f"{band_pixels} px: smallest map that keeps the class band",
    )
    right.set(xlabel="epoch", ylabel="stem output size (px)", title="stem output size")
    right.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffstride.examples.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--framework", choices=sorted(train.TRAINERS), default="torch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lambda-complexity", type=float, default=0.1)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    results = {}
    for label, strides in STARTS.items():
        print(f"\n=== {label}: strides {strides} ===", flush=True)
        config = train.Config(
            framework=args.framework,
            strides=strides,
            epochs=args.epochs,
            lambda_complexity=args.lambda_complexity,
            out=str(out / label.replace(" ", "_")),
            progress=not args.no_progress,
        )
        results[label] = train.run(config)
    band_pixels = 2 * data.synthetic_band(32) + 1
    print(
        f"\nThe stem must keep frequency {data.synthetic_band(32)}: at least {band_pixels} px "
        "of the 32 px input."
    )
    print(
        f"{'start':<14}{'stem stride start':<20}{'stem stride end':<20}{'stem output':<14}"
        f"{'test acc':<10}MACs/image"
    )
    for label, metrics in results.items():
        first, final = metrics["epochs"][0], metrics["final"]
        size = final["output_sizes"][0]
        print(
            f"{label:<14}{train._pair(first['strides'][0]):<20}"
            f"{train._pair(final['strides'][0]):<20}{size[0]}x{size[1]:<11}"
            f"{final['test_accuracy']:<10.4f}{final['macs']:,}"
        )
    out.mkdir(parents=True, exist_ok=True)
    _plot(results, out / "strides.png", band_pixels)
    print(f"\nplot: {out / 'strides.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
