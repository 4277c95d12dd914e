"""What a run leaves behind: ``metrics.json``'s content, the final table and the plot."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffstride.examples import data
from diffstride.examples.train.config import Config

__all__ = ["Record", "figure", "format_pair", "metrics", "plot", "summary_table"]

#: The per-epoch keys of ``metrics.json``, after ``epoch``.
EPOCH_KEYS = (
    "train_loss",
    "train_accuracy",
    "test_accuracy",
    "validation_accuracy",
    "strides",
    "output_sizes",
    "macs",
    "seconds",
)


@dataclass
class Record:
    """What one epoch leaves behind (epoch 0: before training)."""

    epoch: int
    train_loss: float | None
    train_accuracy: float | None
    test_accuracy: float | None
    validation_accuracy: float | None
    strides: list[list[float]]
    output_sizes: list[list[int]]
    macs: int
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def metrics(
    config: Config, dataset: data.Dataset, records: list[Record], seconds: float
) -> dict[str, Any]:
    """``metrics.json``: the options, the data set, every epoch and the final one."""
    epochs = [{"epoch": r.epoch, **{k: getattr(r, k) for k in EPOCH_KEYS}} for r in records]
    budget = config.budget_macs
    final = dict(epochs[-1])
    if budget is not None:
        final["macs_budget"] = budget
        final["budget_miss"] = round(final["macs"] / budget - 1.0, 4)
    return {
        "config": config.as_json(),
        "dataset": {
            "name": dataset.name,
            "train": len(dataset.y_train),
            "test": len(dataset.y_test),
            "description": dataset.description,
        },
        "epochs": epochs,
        "final": final,
        "seconds": round(seconds, 1),
    }


def summary_table(metrics: dict[str, Any]) -> str:
    """The final table: accuracy, MACs, and each DiffStride layer's strides and output."""
    final, config = metrics["final"], metrics["config"]
    ramp = f" ramp={config.get('ramp', 'outside')}" if config["pooling"] == "diffstride" else ""
    lines = [
        "",
        f"{config['framework']} | {config['model']} | pooling={config['pooling']}{ramp} | "
        f"lambda={config['lambda_complexity']} | {metrics['dataset']['name']} | "
        f"{metrics['seconds']} s",
        f"test accuracy {final['test_accuracy']:.4f}   MACs/image {final['macs']:,}",
    ]
    if final.get("validation_accuracy") is not None:
        lines[-1] += f"   validation accuracy {final['validation_accuracy']:.4f}"
    if final.get("macs_budget") is not None:
        miss = final["budget_miss"]
        if abs(miss) <= 0.10:
            verdict = "within +-10%"
        elif miss > 0:
            verdict = "OVER it by more than 10%"
        else:  # the penalty is zero below the budget: the strides did not need the MACs
            verdict = "more than 10% under it"
        lines.append(
            f"MACs budget {final['macs_budget']:,.0f}: ended at {miss:+.1%} of it ({verdict})"
        )
    if final["strides"]:
        lines.append(f"{'layer':<8}{'initial strides':<20}{'learned strides':<20}{'output':<10}")
        initial = metrics["epochs"][0]["strides"]
        for i, (start, end, size) in enumerate(
            zip(initial, final["strides"], final["output_sizes"], strict=True)
        ):
            lines.append(f"{i:<8}{format_pair(start):<20}{format_pair(end):<20}{size[0]}x{size[1]}")
    return "\n".join(lines)


def format_pair(values: Sequence[float]) -> str:
    """``(1.0, 2.25)`` -> ``"(1.000, 2.250)"``: a stride pair as the tables print it."""
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


@contextlib.contextmanager
def figure(path: Path, ncols: int = 1, figsize: tuple[float, float] = (11, 4)) -> Iterator[Any]:
    """``(fig, axes)`` of a figure drawn headless (matplotlib's Agg, imported here: only the
    plots need it) and saved to ``path`` when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=figsize)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def plot(metrics: dict[str, Any], path: Path) -> None:
    """Stride trajectories (left) and test accuracy and MACs per epoch (right)."""
    epochs = [e["epoch"] for e in metrics["epochs"]]
    with figure(path, ncols=2) as (fig, (left, right)):
        trajectories = np.asarray([e["strides"] for e in metrics["epochs"]], dtype=float)
        for layer in range(trajectories.shape[1] if trajectories.ndim == 3 else 0):
            line = left.plot(epochs, trajectories[:, layer, 0], label=f"layer {layer} (h)")[0]
            left.plot(epochs, trajectories[:, layer, 1], "--", color=line.get_color())
        left.set(
            xlabel="epoch", ylabel="stride (solid: height, dashed: width)", title="learned strides"
        )
        if trajectories.ndim == 3:
            left.legend(fontsize="small")
        key = "validation_accuracy" if metrics["config"].get("validation") else "test_accuracy"
        right.plot(epochs, [e[key] for e in metrics["epochs"]], "o-", color="black")
        right.set(xlabel="epoch", ylabel=key.replace("_", " "), title="accuracy and compute")
        twin = right.twinx()
        twin.plot(epochs, [e["macs"] / 1e6 for e in metrics["epochs"]], "s--", color="tab:red")
        twin.set_ylabel("MMACs / image", color="tab:red")
        config = metrics["config"]
        fig.suptitle(
            f"{config['framework']} {config['model']} {config['pooling']} "
            f"lambda={config['lambda_complexity']} on {metrics['dataset']['name']}"
        )
