"""Does learning the strides beat choosing them? Many training runs on cluttered Fashion-MNIST.

    python -m diffstride.examples.study --out runs/study [--quick] [--arms strided,spectral]

Why this study, and why this data
---------------------------------
DiffStride's claim is that a network that *learns* its strides does as well as the best of the
fixed stride choices, from any starting point, and can be held to a compute budget. That claim
is only testable on a task where the choice of strides matters, and plain Fashion-MNIST is not
one: stride draws of the small ResNet with strided convolutions all reach about the same test
accuracy on it. On cluttered Fashion-MNIST
(:func:`~diffstride.examples.datasets.cluttered_fashion_mnist`: the item at a random place of a
64x64 canvas among pieces of other items) the network must find the item and ignore the
clutter, so how early and how much it downsamples (resolution, receptive field, compute)
matters: the same draws spread far more widely than repeats of one configuration with other
seeds (the measurements are in ``docs/study``).

The design
----------
* Stride configurations are drawn at random with a fixed seed (:func:`draw_strides`): one
  stride in {1, 2, 3} per stage. The small ResNet's stage 1 has no projection and ignores its
  stride, so it is set to 1 rather than drawn (two draws that differ only there would be the
  same network). Draws whose strided network costs more than ``max_draw_macs`` are redrawn: the
  all-ones draw costs 273 MMACs per image on 64x64 (the cap is 40), and one DiffStride run
  at it would take a large share of the study's time.
* The budget: the settings (:data:`FULL`) are sized for a run of the whole study on a small
  CPU machine; run times per arm are in ``docs/study``. Another busy process on the same
  cores slows PyTorch's threads, so time the study on an otherwise idle machine.
* Every arm (:data:`ARMS`) trains one network per configuration: strided convolutions, fixed
  spectral pooling at the same strides, and DiffStride started from them. Arms are data, a
  list of :class:`Arm`, so adding one is one line.
* Every run holds out ``validation_fraction`` of its training images. Model selection uses
  validation accuracy only: "the best strided configuration" is the one with the best
  *validation* accuracy, and its MACs set the budget of the budgeted DiffStride arm. The test
  set is read once per run, at its end.
* Runs are resumable: a run whose ``OUT/<name>/metrics.json`` exists is read back, not rerun
  (and must have been made with the same settings, else the study stops and says so); a run
  that was interrupted goes on from the checkpoint of its last finished epoch
  (``train --resume``), which must have been written with the same settings too.

Outputs: ``OUT/<run>/metrics.json`` (and ``strides.png``) per run, ``OUT/summary.json``,
``OUT/table.md`` (per arm: runs, test accuracy mean +- sd, worst, best, MACs per image,
seconds per run, and the headline comparison) and ``OUT/accuracy_vs_macs.png``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from diffstride.examples import data, datasets, train
from diffstride.examples.train import report
from diffstride.examples.train.config import run_changing

__all__ = [
    "ARMS",
    "CONVERTED_ARMS",
    "DATASET",
    "FAMILIES",
    "FULL",
    "QUICK",
    "Arm",
    "Family",
    "Settings",
    "StudyError",
    "draw_converted_strides",
    "draw_strides",
    "main",
    "run_study",
]

DATASET = "cluttered-fashion-mnist"
"""The data set every run trains on."""

STRIDE_CHOICES = (1, 2, 3)
"""The strides a drawn configuration picks from, per stage."""


class StudyError(ValueError):
    """The study cannot go on as asked: a stored run made with other settings, or an arm
    whose budget comes from an arm that does not run before it. The message says which."""


@dataclass(frozen=True)
class Arm:
    """One way of downsampling, trained once from every drawn stride configuration.

    Parameters
    ----------
    name
        A short name, used in run folder names (``<name>-<strides>``) and in ``--arms``.
    description
        One line for the table.
    config
        Overrides of :class:`~diffstride.examples.train.Config` (``pooling`` at least).
    budget_from
        The name of an earlier arm: this arm's ``macs_budget`` is the MACs per image of that
        arm's run with the best *validation* accuracy. None: no budget.

    Examples
    --------
    >>> Arm("spectral", "fixed spectral pooling", {"pooling": "spectral"}).name
    'spectral'
    """

    name: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)
    budget_from: str | None = None


# Arms that the model family and the converted networks both run.
_SPECTRAL_FIRST = Arm(
    "spectral-first",
    "fixed spectral pooling, pool first",
    {"pooling": "spectral", "pool_first": True},
)
_BUDGET_SPECTRAL_FIRST = Arm(
    "ds-first-budget-sf",
    "DiffStride, ramp inside, pool first, MACs budget = best spectral-first",
    {"pooling": "diffstride", "ramp": "inside", "pool_first": True},
    budget_from="spectral-first",
)


def _ramp_arms(ramp: str, note: str) -> tuple[Arm, Arm]:
    """DiffStride with ``ramp``: unregularized, and held to the best strided run's MACs."""
    return (
        Arm(f"ds-{ramp}", f"DiffStride, ramp {ramp}{note}, lambda 0", _diffstride(ramp)),
        Arm(
            f"ds-{ramp}-budget",
            f"DiffStride, ramp {ramp}, MACs budget = best strided (by validation)",
            _diffstride(ramp),
            budget_from="strided",
        ),
    )


def _diffstride(ramp: str) -> dict[str, Any]:
    return {"pooling": "diffstride", "ramp": ramp}


ARMS: tuple[Arm, ...] = (
    Arm("strided", "strided convolutions", {"pooling": "strided"}),
    Arm("spectral", "fixed spectral pooling", {"pooling": "spectral"}),
    _SPECTRAL_FIRST,
    *_ramp_arms("inside", ""),
    *_ramp_arms("outside", " (the original)"),
    Arm(
        "ds-inside-sgd",
        "DiffStride, ramp inside, original recipe (SGD 0.9, lr 0.1, label smoothing 0.1)",
        {
            "pooling": "diffstride",
            "ramp": "inside",
            "optimizer": "sgd",
            "lr": 0.1,
            "label_smoothing": 0.1,
        },
    ),
    Arm(
        "ds-inside-first",
        "DiffStride, ramp inside, pool first, MACs budget = best strided",
        {"pooling": "diffstride", "ramp": "inside", "pool_first": True},
        budget_from="strided",
    ),
    _BUDGET_SPECTRAL_FIRST,
    Arm(
        "ds-inside-warmup",
        "DiffStride, ramp inside, strides frozen for the first epoch",
        {"pooling": "diffstride", "ramp": "inside", "stride_warmup": 1},
    ),
    Arm(
        "ds-inside-r2",
        "DiffStride, ramp inside, R = 2",
        {"pooling": "diffstride", "ramp": "inside", "smoothness_factor": 2.0},
    ),
)
"""The study's arms, in the order they run (an arm named in ``budget_from`` runs earlier)."""

CONVERTED_ARMS: tuple[Arm, ...] = (
    Arm("strided", "the network's strided convolutions and poolings", {"pooling": "strided"}),
    _SPECTRAL_FIRST,
    _BUDGET_SPECTRAL_FIRST,
    Arm(
        "ds-first-budget-sf-w10",
        "as ds-first-budget-sf, budget weight 10",
        {"pooling": "diffstride", "ramp": "inside", "pool_first": True, "budget_weight": 10.0},
        budget_from="spectral-first",
    ),
)
"""The arms of a family on a converted off-the-shelf network (``train --model SOURCE:NAME``)."""


@dataclass(frozen=True)
class Family:
    """One network and its arms: the study's own small ResNet, or an off-the-shelf network
    converted by ``diffstride.torch.convert`` (strides drawn per downsampling point).

    ``max_draw_macs``: draws whose strided network costs more MACs per image are redrawn, so
    that no single run takes a large share of the study's time.
    """

    name: str
    model: str
    arms: tuple[Arm, ...]
    max_draw_macs: float


FAMILIES = {
    "small-resnet": Family("small-resnet", "small", ARMS, 40e6),
    "mobilenet": Family("mobilenet", "torchvision:mobilenet_v3_small", CONVERTED_ARMS, 20e6),
}
"""The study's families (``--family``); each writes its own folder of results."""


@dataclass(frozen=True)
class Settings:
    """What every run of a study shares.

    Parameters
    ----------
    inits
        The number of stride configurations drawn (each arm trains one network per config).
    limit_train
        Training images read (before the validation hold-out).
    validation_fraction
        The fraction of them held out for validation.
    epochs, batch_size, lr
        As in the training command (an arm's ``config`` may override ``lr``).
        AdamW at 2e-3 with batches of 32 gets further in 4 epochs than the command's
        default 1e-3 with 64, most of all on the cheapest configurations, whose networks
        learn slowest.
    draw_seed
        The seed of the stride draws.
    seed
        The seed of every run (data subset, canvases, hold-out, weights).
    num_test
        Test canvases per run (``train.Config.limit_test``).
    lr_schedule
        Passed to ``train.Config.lr_schedule`` where the training command has that field
        (None: leave its default). With a constant learning rate the accuracy at the last
        epoch is noisy across seeds of one configuration; a cosine decay to zero over the
        run makes it far steadier. Without the field, the study warns and runs at a
        constant rate.
    """

    inits: int = 6
    limit_train: int = 8000
    validation_fraction: float = 0.1
    epochs: int = 4
    batch_size: int = 32
    lr: float = 2e-3
    draw_seed: int = 0
    seed: int = 0
    num_test: int = 10000
    lr_schedule: str | None = "cosine"

    @property
    def validation(self) -> int:
        """The number of held-out training images."""
        return max(1, round(self.limit_train * self.validation_fraction))


FULL = Settings()
"""The study's settings (budget: see the module docstring)."""

QUICK = Settings(inits=2, limit_train=240, epochs=1, batch_size=32, num_test=300)
"""A smoke run of the whole pipeline in a few minutes: not a measurement."""


@functools.cache
def _strided_macs(strides: tuple[float, ...], size: int) -> int:
    """MACs per image of the small strided ResNet at ``strides`` on a ``size x size`` image."""
    from diffstride.models.torch import small_resnet

    return small_resnet(strides, pooling=None, in_channels=1).macs((size, size))


def draw_strides(
    count: int, seed: int, *, max_macs: float, size: int = datasets.CLUTTERED_CANVAS
) -> list[tuple[float, ...]]:
    """``count`` distinct stride configurations of the small ResNet, drawn at random.

    Each of the stem and the three projection stages draws a stride from
    :data:`STRIDE_CHOICES`; stage 1 (no projection: the model ignores its stride) is 1. A draw
    already made, or whose strided network costs more than ``max_macs`` MACs per image on a
    ``size x size`` input, is redrawn. The first ``k`` configurations are the same for every
    ``count >= k``.

    Parameters
    ----------
    count
        How many configurations, at least 1.
    seed
        The seed of the draws.
    max_macs
        The cost cap of a configuration, in MACs per image of its strided network.
    size
        The input side.

    Returns
    -------
    list of tuple of float
        Five strides per configuration, stem first.

    Raises
    ------
    ValueError
        If ``count`` is not a positive integer, or fewer than ``count`` configurations fit
        under ``max_macs``.

    Examples
    --------
    >>> draw_strides(2, 0, max_macs=40e6)
    [(3.0, 1.0, 2.0, 2.0, 1.0), (1.0, 1.0, 3.0, 2.0, 3.0)]
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer; received count={count!r}")
    space = len(STRIDE_CHOICES) ** 4
    affordable = sum(
        _strided_macs((s0, 1, s2, s3, s4), size) <= max_macs
        for s0 in STRIDE_CHOICES
        for s2 in STRIDE_CHOICES
        for s3 in STRIDE_CHOICES
        for s4 in STRIDE_CHOICES
    )
    if affordable < count:
        raise ValueError(
            f"only {affordable} of the {space} stride configurations cost at most "
            f"max_macs={max_macs:g} MACs per image; received count={count}"
        )
    rng = np.random.default_rng(seed)
    drawn: list[tuple[float, ...]] = []
    while len(drawn) < count:
        stem, *rest = (float(STRIDE_CHOICES[i]) for i in rng.integers(0, len(STRIDE_CHOICES), 4))
        strides = (stem, 1.0, *rest)
        if strides not in drawn and _strided_macs(strides, size) <= max_macs:
            drawn.append(strides)
    return drawn


def _converted_backbone(model: str, size: int) -> tuple[Any, Any]:
    import torch

    from diffstride.examples.train.trainers.torch import backbone

    return backbone(model, 1, 10), torch.zeros(1, 1, size, size)


def draw_converted_strides(
    model: str,
    count: int,
    seed: int,
    *,
    max_macs: float,
    size: int = datasets.CLUTTERED_CANVAS,
    attempts: int = 2000,
) -> list[tuple[float, ...]]:
    """``count`` distinct stride configurations of a converted network: one stride from
    :data:`STRIDE_CHOICES` per downsampling point (``diffstride.torch.downsampling_points``),
    redrawn when already drawn or when the network's strided convolutions at them cost more
    than ``max_macs`` MACs per image on a ``size x size`` grey image."""
    from diffstride.torch import convert, downsampling_points, macs

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer; received count={count!r}")
    backbone, x = _converted_backbone(model, size)
    points = len(downsampling_points(backbone, x))
    rng = np.random.default_rng(seed)
    drawn: list[tuple[float, ...]] = []
    for _ in range(attempts):
        if len(drawn) == count:
            return drawn
        strides = tuple(float(STRIDE_CHOICES[i]) for i in rng.integers(0, 3, points))
        if strides in drawn:
            continue
        strided = convert(backbone, x, pooling="strided", strides=list(strides))
        if macs(strided, x) <= max_macs:
            drawn.append(strides)
    raise ValueError(
        f"found {len(drawn)} of {count} stride configurations of {model} under "
        f"max_macs={max_macs:g} in {attempts} draws"
    )


def _label(strides: Sequence[float]) -> str:
    """``(3, 1, 2, 2, 1)`` -> ``"31221"`` (strides are single digits here)."""
    return "".join(f"{s:g}" for s in strides)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A config as JSON stores it, without the keys that do not change a run's result: the
    output options (``changes_run=False`` in ``train.Config``), DiffStride's mask options where
    no DiffStride layer is built, and the layer order where nothing pools."""
    plain = run_changing(json.loads(json.dumps(config)))
    unused = set()
    if plain.get("pooling") != "diffstride":
        unused |= {"ramp", "smoothness_factor"}
    if plain.get("pooling") == "strided":
        unused.add("pool_first")
    return {k: v for k, v in plain.items() if k not in unused}


def _config_defaults() -> dict[str, Any]:
    """``train.Config``'s defaults: what a run stored before a field existed ran with."""
    return _comparable(
        {f.name: f.default for f in fields(train.Config) if f.default is not MISSING}
    )


def _run(config: train.Config) -> dict[str, Any]:
    """``train.run(config)``, or the metrics a previous run left in ``config.out``."""
    path = Path(config.out) / "metrics.json"
    wanted = _comparable(config.as_json())
    if path.is_file():
        metrics = json.loads(path.read_text())
        stored = {**_config_defaults(), **_comparable(metrics["config"])}
        if "limit_test" not in metrics["config"] and "dataset" in metrics:
            # Stored before the field existed: it read the test images its metrics count.
            stored["limit_test"] = metrics["dataset"]["test"]
        differ = sorted(k for k in wanted.keys() & stored.keys() if wanted[k] != stored[k])
        if differ:
            raise StudyError(
                f"{path} was made with other settings ({', '.join(differ)}: "
                f"{[stored[k] for k in differ]} instead of {[wanted[k] for k in differ]}); "
                "use another --out, or delete that run to redo it"
            )
        print(f"--- {path.parent.name}: done before, read back", flush=True)
        return metrics
    print(f"\n=== {path.parent.name} ===", flush=True)
    try:
        return train.run(config)
    except train.ConfigError as error:  # a checkpoint of other settings, say
        raise StudyError(f"{path.parent.name}: {error}") from error


def _schedule(name: str | None) -> dict[str, Any]:
    """``{"lr_schedule": name}`` if the training command has that option, else ``{}``."""
    if name is None:
        return {}
    if "lr_schedule" in {f.name for f in fields(train.Config)}:
        return {"lr_schedule": name}
    print(
        f"warning: train.Config has no lr_schedule, so the runs keep a constant learning rate "
        f"instead of {name!r}: expect single-run accuracies to be noisy (see Settings)",
        file=sys.stderr,
        flush=True,
    )
    return {}


def _best_by_validation(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The run with the best final validation accuracy (ties: fewer MACs)."""
    return max(runs, key=lambda r: (r["final"]["validation_accuracy"], -r["final"]["macs"]))


def run_study(
    out: str | Path,
    settings: Settings = FULL,
    arms: Sequence[Arm] = ARMS,
    data_dir: str | None = None,
    framework: str = "torch",
    family: Family = FAMILIES["small-resnet"],
) -> dict[str, Any]:
    """Train every arm from every drawn configuration into ``out``; write the summary.

    Parameters
    ----------
    out
        The study's folder; runs already in it are read back, not rerun.
    settings
        What the runs share (:data:`FULL` or :data:`QUICK`).
    arms
        The arms, in order (:data:`ARMS` by default).
    data_dir
        The Fashion-MNIST folder (None: the Debian package's).
    framework
        ``"torch"`` or ``"tf"``.
    family
        The network (:data:`FAMILIES`); a converted one draws one stride per downsampling
        point, under its own ``max_draw_macs``.

    Returns
    -------
    dict
        The summary (also in ``out/summary.json``).

    Raises
    ------
    StudyError
        If an arm's ``budget_from`` names no earlier arm, or a stored run was made with other
        settings.
    MissingDataError
        If the Fashion-MNIST files are missing.
    """
    out = Path(out)
    started = time.perf_counter()
    names = [arm.name for arm in arms]
    for index, arm in enumerate(arms):
        if arm.budget_from is not None and arm.budget_from not in names[:index]:
            raise StudyError(
                f"arm {arm.name!r} takes its budget from arm {arm.budget_from!r}, which must "
                f"run before it; received arms={names}"
            )
    schedule = _schedule(settings.lr_schedule)
    if family.model == "small":
        inits = draw_strides(settings.inits, settings.draw_seed, max_macs=family.max_draw_macs)
    else:
        inits = draw_converted_strides(
            family.model, settings.inits, settings.draw_seed, max_macs=family.max_draw_macs
        )
    results: dict[str, list[dict[str, Any]]] = {}
    for arm in arms:
        overrides = dict(arm.config)
        if arm.budget_from is not None:
            best = _best_by_validation(results[arm.budget_from])
            overrides["macs_budget"] = best["final"]["macs"] / 1e6
        results[arm.name] = [
            _run(
                train.Config(
                    **{
                        "framework": framework,
                        "dataset": DATASET,
                        "data_dir": data_dir,
                        "model": family.model,
                        "strides": strides,
                        "epochs": settings.epochs,
                        "batch_size": settings.batch_size,
                        "lr": settings.lr,
                        "seed": settings.seed,
                        "limit_train": settings.limit_train,
                        "limit_test": settings.num_test,
                        "validation": settings.validation,
                        "progress": False,
                        "resume": True,  # an interrupted run goes on from its checkpoint
                        **schedule,
                        **overrides,
                        "out": str(out / f"{arm.name}-{_label(strides)}"),
                    }
                )
            )
            for strides in inits
        ]
    summary = _summarise(settings, arms, inits, results, time.perf_counter() - started)
    summary["family"] = {
        "name": family.name,
        "model": family.model,
        "max_draw_macs": family.max_draw_macs,
    }
    summary["lr_schedule"] = schedule.get("lr_schedule", "constant")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = _table(summary)
    (out / "table.md").write_text(table + "\n")
    _plot(summary, out / "accuracy_vs_macs.png")
    print(f"\n{table}\n\nstudy took {summary['seconds'] / 60:.1f} min; wrote {out / 'table.md'}")
    return summary


def _stats(values: Sequence[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "worst": min(values),
        "best": max(values),
    }


def _summarise(
    settings: Settings,
    arms: Sequence[Arm],
    inits: Sequence[Sequence[float]],
    results: dict[str, list[dict[str, Any]]],
    seconds: float,
) -> dict[str, Any]:
    """Everything the table and the plot need, JSON-ready."""
    summary_arms = {}
    for arm in arms:
        runs = results[arm.name]
        summary_arms[arm.name] = {
            "description": arm.description,
            "config": arm.config,
            "macs_budget": runs[0]["config"].get("macs_budget"),
            "test_accuracy": _stats([r["final"]["test_accuracy"] for r in runs]),
            "validation_accuracy": _stats([r["final"]["validation_accuracy"] for r in runs]),
            "macs": _stats([r["final"]["macs"] for r in runs]),
            "seconds": _stats([r["seconds"] for r in runs]),
            "runs": [
                {
                    "name": Path(r["config"]["out"]).name,
                    "init": list(init),
                    "test_accuracy": r["final"]["test_accuracy"],
                    "validation_accuracy": r["final"]["validation_accuracy"],
                    "macs": r["final"]["macs"],
                    "strides": r["final"]["strides"],
                    "seconds": r["seconds"],
                }
                for init, r in zip(inits, runs, strict=True)
            ],
        }
    summary: dict[str, Any] = {
        "dataset": DATASET,
        "settings": asdict(settings),
        "inits": [list(s) for s in inits],
        "arms": summary_arms,
        "seconds": round(seconds, 1),
        # What the runs took, whether they ran in this call or were read back (resumed).
        "run_seconds": round(sum(r["seconds"] for runs in results.values() for r in runs), 1),
    }
    for baseline in BASELINES:
        if baseline in results:
            best = _best_by_validation(results[baseline])
            summary[f"best_{baseline.replace('-', '_')}"] = {
                "name": Path(best["config"]["out"]).name,
                "strides": best["config"]["strides"],
                "test_accuracy": best["final"]["test_accuracy"],
                "validation_accuracy": best["final"]["validation_accuracy"],
                "macs": best["final"]["macs"],
            }
    return summary


#: The searched baselines a learned-stride arm is held to: the best configuration of each,
#: chosen by validation accuracy.
BASELINES = ("strided", "spectral-first")


def _headline(summary: dict[str, Any]) -> list[str]:
    """Each learned-stride arm's mean over initialisations against the best configuration
    of each searched baseline (by validation)."""
    lines: list[str] = []
    for baseline in BASELINES:
        best = summary.get(f"best_{baseline.replace('-', '_')}")
        if best is None:
            continue
        spread = summary["arms"][baseline]["test_accuracy"]
        lines += [
            "",
            f"Best {baseline} configuration by validation: {_label(best['strides'])}, test "
            f"{100 * best['test_accuracy']:.2f}%, {best['macs'] / 1e6:.1f} MMACs/image "
            f"({baseline} spread over configurations: "
            f"{100 * (spread['best'] - spread['worst']):.2f} points).",
            "",
            f"| arm | mean test % over inits | minus best {baseline} | spread (best - worst) | "
            f"mean MMACs | MACs / best {baseline}'s |",
            "|---|---|---|---|---|---|",
        ]
        for name, arm in summary["arms"].items():
            if arm["config"].get("pooling") != "diffstride":
                continue
            acc, macs = arm["test_accuracy"], arm["macs"]
            gain = acc["mean"] - best["test_accuracy"]
            lines.append(
                f"| {name} | {100 * acc['mean']:.2f} | {100 * gain:+.2f} | "
                f"{100 * (acc['best'] - acc['worst']):.2f} | {macs['mean'] / 1e6:.1f} | "
                f"{macs['mean'] / best['macs']:.2f}x |"
            )
    return lines


def _table(summary: dict[str, Any]) -> str:
    """``table.md``: one row per arm, then the headline comparison."""
    settings = summary["settings"]
    family = summary.get("family", {"name": "small-resnet", "model": "small"})
    lines = [
        f"Study ({family['name']}, model {family['model']}) on {summary['dataset']}: "
        f"{len(summary['inits'])} stride configurations "
        f"({', '.join(_label(s) for s in summary['inits'])}), {settings['limit_train']} "
        f"training images ({settings['validation_fraction']:.0%} held out for validation), "
        f"epochs {settings['epochs']}, batch {settings['batch_size']}, learning rate "
        f"{settings['lr']:g} ({summary['lr_schedule']}), {settings['num_test']} "
        f"test images; the runs took {summary['run_seconds'] / 60:.1f} min in all.",
        "",
        "| arm | runs | test accuracy % (mean +- sd) | worst | best | MMACs/image | s/run |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, arm in summary["arms"].items():
        acc = arm["test_accuracy"]
        budget = arm["macs_budget"]
        label = f"{name}: {arm['description']}"
        if budget is not None:
            label += f" ({budget:.1f} MMACs)"
        lines.append(
            f"| {label} | {len(arm['runs'])} | {100 * acc['mean']:.2f} +- {100 * acc['sd']:.2f}"
            f" | {100 * acc['worst']:.2f} | {100 * acc['best']:.2f} | "
            f"{arm['macs']['mean'] / 1e6:.1f} | {arm['seconds']['mean']:.0f} |"
        )
    return "\n".join(lines + _headline(summary))


def _plot(summary: dict[str, Any], path: Path) -> None:
    """Test accuracy against MACs per image: every run a point, one colour per arm."""
    import matplotlib.ticker

    with report.figure(path, figsize=(7, 5)) as (_, ax):
        for name, arm in summary["arms"].items():
            macs = [r["macs"] / 1e6 for r in arm["runs"]]
            accuracy = [100 * r["test_accuracy"] for r in arm["runs"]]
            ax.scatter(macs, accuracy, label=name, alpha=0.8)
        best = summary.get("best_strided")
        if best is not None:
            ax.scatter(
                [best["macs"] / 1e6],
                [100 * best["test_accuracy"]],
                marker="*",
                s=250,
                facecolors="none",
                edgecolors="black",
                label="best strided (by validation)",
            )
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.set(
            xlabel="MMACs per image (final strides)",
            ylabel="test accuracy (%)",
            title=f"{summary['dataset']}: accuracy vs compute",
        )
        ax.legend(fontsize="small")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m diffstride.examples.study", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", default="runs/study", help="the study's folder (resumable)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of the pipeline (minutes), not results"
    )
    parser.add_argument(
        "--arms",
        default=None,
        help="comma-separated arm names of the family, in order (default: all of them)",
    )
    parser.add_argument("--inits", type=int, default=None, help="stride configurations to draw")
    parser.add_argument(
        "--family",
        choices=sorted(FAMILIES),
        default="small-resnet",
        help="the network: our small ResNet, or an off-the-shelf one converted",
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--framework", choices=sorted(train.TRAINERS), default="torch")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.inits is not None:
        if args.inits < 1:
            parser.error(f"--inits must be >= 1; received {args.inits}")
        settings = replace(settings, inits=args.inits)
    family = FAMILIES[args.family]
    arms = list(family.arms)
    if args.arms is not None:
        by_name = {arm.name: arm for arm in family.arms}
        unknown = [n for n in args.arms.split(",") if n not in by_name]
        if unknown:
            parser.error(f"--arms: unknown {unknown}; choose from {sorted(by_name)}")
        arms = [by_name[n] for n in args.arms.split(",")]
    try:
        run_study(args.out, settings, arms, args.data_dir, args.framework, family)
    except (data.MissingDataError, StudyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
