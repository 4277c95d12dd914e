"""``make demo``: strides learned from a small and from a large initialisation, next to the
strided convolutions that the large one stands for.

    python -m diffstride.examples.demo [--epochs 4] [--out runs/demo] [--framework torch]

Trains the small ResNet on the embedded synthetic set three times. DiffStride, with the
complexity regularizer on (``lambda = 0.1``), once from small strides (``1, 1, 1.2, 1.2,
1.2``) and once from large ones (``3, 1, 3, 3, 3``); then strided convolutions at the same
large strides. The class information lives at frequency 8 of 32x32 images, so the stem must
leave at least 17 pixels (the first ReLUs turn a grating's energy into a DC term that any
later downsampling keeps). A stem convolution with stride 3 keeps 11: it aliases the class
band onto other frequencies, and nothing after it can undo that. DiffStride starts from the
same stride with the original's ramp, which reaches ``R`` bins beyond the cut-off: at stride 3
it keeps 20 pixels, the band survives, and the ramp carries the gradient that moves the stride
to where the labels and the regularizer balance. With ``ramp="inside"`` the ramp lies below
the cut-off, keeps 12 pixels and cannot see the band it cut away, so from the large start
nothing in the loss pulls its stride back below the limit. The demo prints each run's table,
then one table of the three runs (stem stride, stem output size against that limit, accuracy,
MACs), and writes one plot.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffstride.examples import synthetic, train

SMALL, LARGE = (1.0, 1.0, 1.2, 1.2, 1.2), (3.0, 1.0, 3.0, 3.0, 3.0)
#: (label, pooling, initial strides)
RUNS = (
    ("DiffStride, small start", "diffstride", SMALL),
    ("DiffStride, large start", "diffstride", LARGE),
    ("strided conv, large", "strided", LARGE),
)
SIZE = 32


def _stem(
    metrics: dict[str, Any], epoch: dict[str, Any]
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The stem's strides and output size (h, w) at an epoch's record."""
    if epoch["strides"]:
        return tuple(epoch["strides"][0]), tuple(epoch["output_sizes"][0])
    stride = metrics["config"]["strides"][0]
    return (stride, stride), (math.ceil(SIZE / stride),) * 2


def _plot(results: dict[str, dict[str, Any]], path: Path, band_pixels: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    colors = ("tab:blue", "tab:orange", "tab:gray")
    for (label, metrics), color in zip(results.items(), colors, strict=False):
        epochs = [e["epoch"] for e in metrics["epochs"]]
        stems = [_stem(metrics, e) for e in metrics["epochs"]]
        style = "--" if metrics["config"]["pooling"] == "strided" else "-"
        left.plot(epochs, [np.mean(s) for s, _ in stems], style, color=color, label=label)
        middle.plot(
            epochs, [np.mean(size) for _, size in stems], "o" + style, color=color, label=label
        )
        right.plot(
            epochs,
            [e["test_accuracy"] for e in metrics["epochs"]],
            "o" + style,
            color=color,
            label=label,
        )
    left.set(xlabel="epoch", ylabel="stem stride (mean of h, w)", title="stem stride")
    middle.axhline(
        band_pixels, color="black", linestyle=":", label=f"{band_pixels} px: keeps the class band"
    )
    middle.set(
        xlabel="epoch", ylabel="stem output size (px, mean of h, w)", title="stem output size"
    )
    right.set(xlabel="epoch", ylabel="test accuracy", title="accuracy", ylim=(0, 1.05))
    for axis in (left, middle, right):
        axis.legend(fontsize="small")
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
    for label, pooling, strides in RUNS:
        print(f"\n=== {label}: strides {strides} ===", flush=True)
        config = train.Config(
            framework=args.framework,
            pooling=pooling,
            strides=strides,
            epochs=args.epochs,
            lambda_complexity=args.lambda_complexity if pooling == "diffstride" else 0.0,
            out=str(out / label.replace(" ", "_").replace(",", "")),
            progress=not args.no_progress,
        )
        results[label] = train.run(config)
    band = synthetic.synthetic_band(SIZE)
    band_pixels = 2 * band + 1
    print(
        f"\nThe stem must keep frequency {band}: at least {band_pixels} px of the {SIZE} px input."
    )
    print(
        f"{'run':<26}{'stem stride start':<20}{'stem stride end':<20}{'stem output':<14}"
        f"{'test acc':<10}MACs/image"
    )
    for label, metrics in results.items():
        (start, _), (end, size) = (
            _stem(metrics, e) for e in (metrics["epochs"][0], metrics["final"])
        )
        final = metrics["final"]
        start_text, end_text = train.format_pair(start), train.format_pair(end)
        print(
            f"{label:<26}{start_text:<20}{end_text:<20}{f'{size[0]}x{size[1]}':<14}"
            f"{final['test_accuracy']:<10.4f}{final['macs']:,}"
        )
    out.mkdir(parents=True, exist_ok=True)
    _plot(results, out / "strides.png", band_pixels)
    print(f"\nplot: {out / 'strides.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
