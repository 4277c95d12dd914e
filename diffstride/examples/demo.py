"""``make demo``: what learning the strides buys, from a poor start, at no more compute.

    python -m diffstride.examples.demo [--epochs 4] [--out runs/demo] [--framework torch]

The small ResNet trains three times from one poor stride start, the configuration that did
worst among the study's strided networks (``POOR_START``, stem first):

- strided convolutions at those strides (what a user who guessed them gets);
- fixed spectral pooling at those strides, pooling first (the spectral crop alone);
- DiffStride, inside ramp, pooling first, with a MAC budget equal to the strided network's
  MACs: the layout ``diffstride.torch.convert`` gives a strided network, learning its strides
  at no more compute than the strided network.

The task is cluttered Fashion-MNIST (each item at a random place of a 64x64 canvas among
pieces of other items), where how fast a network downsamples changes its accuracy by about
10 points (docs/study). Without the Fashion-MNIST files (Debian ``dataset-fashion-mnist``) it
runs on cluttered shapes instead, the same protocol on items generated in-process
(``datasets.cluttered_shapes``), where the poor start costs strided convolutions about 20
points. It prints each run's line, one table (accuracy, MACs, strides) and writes one plot
(``OUT/demo.png``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffstride.examples import data, datasets, train
from diffstride.examples.train import report

POOR_START = (2.0, 1.0, 2.0, 3.0, 3.0)
"""The study's worst strided configuration by validation accuracy (docs/study)."""

TRAIN_IMAGES, TEST_IMAGES = 4000, 2000
"""Cluttered images per run: a subset, so the demo takes under a minute on 2 cores."""

#: (label, the run's options); the budgeted run takes the first run's MACs.
RUNS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("strided convolutions", {"pooling": "strided"}),
    ("fixed spectral pooling, first", {"pooling": "spectral", "pool_first": True}),
    (
        "DiffStride, budget = strided",
        {"pooling": "diffstride", "ramp": "inside", "pool_first": True},
    ),
)


def _dataset() -> tuple[str, int | None]:
    """The data set the demo can run on here, and its training images."""
    try:  # the files can be there, partly, or not at all
        datasets.load("cluttered-fashion-mnist", limit_train=2, limit_test=2)
    except data.MissingDataError:
        return "cluttered-shapes", TRAIN_IMAGES
    return "cluttered-fashion-mnist", TRAIN_IMAGES


def run_demo(
    out: str | Path, *, framework: str = "torch", epochs: int = 4, progress: bool = True
) -> dict[str, dict[str, Any]]:
    """Train the three networks of :data:`RUNS` from :data:`POOR_START`; their metrics."""
    out = Path(out)
    dataset, limit_train = _dataset()
    results: dict[str, dict[str, Any]] = {}
    for label, options in RUNS:
        if options["pooling"] == "diffstride":
            options = {**options, "macs_budget": _first(results)["final"]["macs"] / 1e6}
        print(f"\n=== {label} ===", flush=True)
        config = train.Config(
            framework=framework,
            dataset=dataset,
            strides=POOR_START,
            epochs=epochs,
            batch_size=32,
            lr=2e-3,
            lr_schedule="cosine",
            limit_train=limit_train,
            limit_test=TEST_IMAGES,
            out=str(out / label.split(",")[0].replace(" ", "-")),
            progress=progress,
            **options,
        )
        results[label] = train.run(config)
    return results


def _first(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return next(iter(results.values()))


def table(results: dict[str, dict[str, Any]]) -> str:
    """Accuracy and MACs of each run side by side, against the strided network's."""
    base = _first(results)["final"]
    lines = [
        f"{'run':<32}{'test acc':>9}{'vs strided':>12}{'MMACs/image':>13}{'MACs vs strided':>17}"
        "   learned strides (h x w per layer)"
    ]
    for label, metrics in results.items():
        final = metrics["final"]
        strides = " ".join(f"{h:.2f}x{w:.2f}" for h, w in final["strides"]) or "(fixed)"
        lines.append(
            f"{label:<32}{final['test_accuracy']:>9.2%}"
            f"{100 * (final['test_accuracy'] - base['test_accuracy']):>+11.1f}p"
            f"{final['macs'] / 1e6:>13.2f}{final['macs'] / base['macs']:>16.2f}x   {strides}"
        )
    return "\n".join(lines)


def _plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    with report.figure(path, ncols=2) as (_, (left, right)):
        for label, metrics in results.items():
            epochs = metrics["epochs"]
            style = "s--" if metrics["config"]["pooling"] == "strided" else "o-"
            left.plot(
                [e["epoch"] for e in epochs], [e["macs"] / 1e6 for e in epochs], style, label=label
            )
            final = metrics["final"]
            right.scatter(final["macs"] / 1e6, 100 * final["test_accuracy"], s=60, label=label)
        left.set(xlabel="epoch", ylabel="MMACs per image", title="compute as the strides move")
        right.set(xlabel="MMACs per image", ylabel="test accuracy (%)", title="where each run ends")
        for axis in (left, right):
            axis.legend(fontsize="small")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffstride.examples.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--framework", choices=sorted(train.TRAINERS), default="torch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1; received {args.epochs}")
    results = run_demo(
        args.out, framework=args.framework, epochs=args.epochs, progress=not args.no_progress
    )
    dataset = _first(results)["config"]["dataset"]
    print(f"\nFrom strides {'-'.join(f'{s:g}' for s in POOR_START)} on {dataset}:")
    print(table(results))
    if dataset == "cluttered-shapes":
        print(
            "\nThe Fashion-MNIST files are not installed (apt-get install "
            "dataset-fashion-mnist), so this ran on generated shapes, an easier task: there "
            "fixed spectral pooling first does about as well as learned strides."
        )
    path = Path(args.out) / "demo.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    _plot(results, path)
    print(f"\nplot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
