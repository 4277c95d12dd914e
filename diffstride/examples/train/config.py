"""What a training run is: :class:`Config`, its checks, and the command line built from it.

Every option of ``python -m diffstride.examples.train`` is a field of :class:`Config`, and the
field says everything the command line needs: its default, its type (from the annotation), its
choices and its help (:func:`option`'s metadata). :func:`build_parser` reads them, so an option
is added in one place and the parser cannot drift from the dataclass. A field whose metadata
says ``changes_run=False`` (where the outputs go, the progress bar, ``--resume``) does not
change what a run computes: a checkpoint and the study compare runs without them.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import numbers
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from diffstride._validation import RAMPS, check_macs_budget, check_smoothness_factor
from diffstride.examples import datasets
from diffstride.examples.train.trainers import FRAMEWORKS

__all__ = [
    "DESCRIPTION",
    "DISTRIBUTE",
    "LR_SCHEDULES",
    "MODEL_SOURCES",
    "OPTIMIZERS",
    "OWN_MODELS",
    "POOLINGS",
    "RESNET_STRIDES",
    "Config",
    "ConfigError",
    "build_parser",
    "check_model",
    "config_errors",
    "option",
    "parse_args",
    "run_changing",
]

DESCRIPTION = (
    "Train a ResNet with learnable (or fixed) strides, in PyTorch or Keras, and watch them move."
)

OPTIMIZERS = ("adamw", "sgd")
POOLINGS = ("diffstride", "spectral", "spatial", "strided")
#: Our own ResNets; other models are "SOURCE:NAME" with a source per framework.
OWN_MODELS = ("small", "resnet18")
MODEL_SOURCES = {"torchvision": "torch", "timm": "torch", "keras": "tf"}
RESNET_STRIDES = (1.0, 1.0, 2.0, 2.0, 2.0)
#: "cosine": every learning rate (strides' included) decays to 0 over the run, per step.
LR_SCHEDULES = ("constant", "cosine")
#: "mirrored": the Keras trainer runs under ``tf.distribute.MirroredStrategy`` (every visible
#: device); torch runs one process per device under ``torchrun`` instead.
DISTRIBUTE = ("none", "mirrored")


class ConfigError(ValueError):
    """The configuration names a model or data that cannot be built as asked."""


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Inside: a ValueError is the configuration's (a model the options cannot build or
    convert, data it cannot read or split), said as a usage error; outside it, a ValueError is
    a fault with a traceback."""
    try:
        yield
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(str(error)) from error


def option(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    parse: Any = None,
    changes_run: bool = True,
) -> Any:
    """A :class:`Config` field and its command-line option (``--name-with-dashes``).

    ``parse`` converts the option's text when the annotation's type cannot (None: that type);
    ``changes_run=False`` marks a field that leaves what the run computes unchanged.
    """
    metadata = {
        "help": help,
        "choices": None if choices is None else tuple(choices),
        "metavar": metavar,
        "parse": parse,
        "changes_run": changes_run,
    }
    return field(default=default, metadata=metadata)


def _strides_arg(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--strides must be comma-separated numbers; received {text!r}"
        ) from None
    if any(not v >= 1 for v in values):
        raise argparse.ArgumentTypeError(f"--strides must be >= 1; received {text!r}")
    return values


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any, least: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= least


@dataclass
class Config:
    """One training run: every option of the command, with its default.

    >>> Config(model="torchvision:resnet18").ramp  # the per-model defaults are filled in
    'inside'
    """

    framework: str = option("torch", "PyTorch, or Keras 3 on TensorFlow (tf)", choices=FRAMEWORKS)
    dataset: str = option(
        "synthetic",
        "the data set (synthetic and cluttered-shapes are generated; the others read files)",
        choices=datasets.DATASETS,
    )
    data_dir: str | None = option(None, "the folder of the data set's files", metavar="DIR")
    model: str = option(
        "small",
        "small | resnet18 (our ResNets), or a model to convert: torchvision:NAME, "
        "timm:NAME (torch), keras:NAME (keras.applications, tf)",
    )
    pooling: str = option(
        "diffstride",
        "how the network downsamples: learned strides, fixed spectral pooling, average "
        "pooling (our ResNets) or strided convolutions",
        choices=POOLINGS,
    )
    #: One per stage of our ResNets (None: 1, 1, 2, 2, 2), or per downsampling point of a
    #: converted model (None: the model's own strides).
    strides: tuple[float, ...] | None = option(
        None,
        "one stride per stage, stem first (our ResNets; default 1,1,2,2,2), or per "
        "downsampling point of a converted model (default: its own)",
        metavar="S,S,...",
        parse=_strides_arg,
    )
    epochs: int = option(4, "epochs, >= 1")
    batch_size: int = option(64, "images per step (per process under torchrun)")
    lr: float = option(1e-3, "learning rate of the weights (and of the strides with sgd)")
    stride_lr: float = option(0.05, "Adam's learning rate for the strides (adamw)")
    weight_decay: float = option(5e-4, "weight decay of the weights (the strides get none)")
    lambda_complexity: float = option(0.0, "weight of the complexity regularizer J(S)")
    seed: int = option(
        0, "seeds the weights, the synthetic data, the subsets, the hold-out and the batches"
    )
    out: str = option(
        "runs/train",
        "where metrics.json, strides.png and the checkpoint go",
        metavar="DIR",
        changes_run=False,
    )
    resume: bool = option(
        False,
        "continue the run from OUT/checkpoint.npz, written after every epoch (start afresh "
        "if there is none); the options must be the checkpoint's, --epochs may grow with a "
        "constant learning rate. A job torchrun restarts resumes by itself",
        changes_run=False,
    )
    limit_train: int | None = option(
        None, "keep N training images (a subset drawn with --seed)", metavar="N"
    )
    limit_test: int | None = option(
        None,
        "keep N test images (file sets: a subset that no --seed changes; synthetic and "
        "cluttered sets: build N, default 1024 and 10000)",
        metavar="N",
    )
    progress: bool = option(True, "no progress bar", changes_run=False)
    #: None: the original's "outside" for our ResNets, "inside" for a converted model.
    ramp: str | None = option(
        None,
        "DiffStride's mask: the original's ramp (outside) or one ending at the stride's "
        "cut-off (default: outside for our ResNets, inside for a converted model)",
        choices=RAMPS,
    )
    smoothness_factor: float = option(4.0, "DiffStride's ramp width R, >= 0", metavar="R")
    #: None: off for our ResNets (the original's order), on for a converted model.
    pool_first: bool | None = option(
        None,
        "pool each stage's input, then convolve (default: off for our ResNets, on for a "
        "converted model)",
    )
    macs_budget: float | None = option(
        None,
        "millions of multiply-accumulates per image; a penalty above it, none under it",
        metavar="M",
    )
    budget_weight: float = option(1.0, "weight of the budget penalty in the loss")
    optimizer: str = option(
        "adamw",
        "adamw: AdamW for the weights, Adam at --stride-lr for the strides; sgd: SGD with "
        "momentum 0.9 for both at --lr",
        choices=OPTIMIZERS,
    )
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy, in [0, 1)")
    stride_warmup: int = option(0, "freeze the strides for the first E epochs", metavar="E")
    validation: int = option(
        0,
        "hold out N training images; the test set is then read once, at the end",
        metavar="N",
    )
    lr_schedule: str = option(
        "constant",
        "cosine: every learning rate decays to 0 over the run",
        choices=LR_SCHEDULES,
    )
    distribute: str = option(
        "none",
        "mirrored: Keras on every visible device (tf.distribute.MirroredStrategy); "
        "torch: launch with torchrun --nproc_per_node N instead",
        choices=DISTRIBUTE,
    )

    def __post_init__(self) -> None:
        check_model(self.model, self.framework, self.pooling)
        converted = self.model not in OWN_MODELS
        if self.ramp is None:
            self.ramp = "inside" if converted else "outside"
        if self.pool_first is None:
            self.pool_first = converted
        for item in fields(self):
            choices, value = item.metadata["choices"], getattr(self, item.name)
            if choices is not None and value not in choices:
                raise ValueError(
                    f"{item.name} must be one of {choices}; received {item.name}={value!r}"
                )
        for name in ("pool_first", "progress", "resume"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool; received {name}={value!r}")
        check_smoothness_factor(self.smoothness_factor)
        if self.macs_budget is not None:
            check_macs_budget(self.macs_budget)
        if self.distribute == "mirrored" and self.framework != "tf":
            raise ValueError(
                "distribute='mirrored' is for framework='tf' (torch scales out under torchrun); "
                f"received framework={self.framework!r}"
            )
        for name in ("limit_train", "limit_test"):
            value = getattr(self, name)
            if value is not None and not _count(value, 1):
                raise ValueError(f"{name} must be None or an int >= 1; received {name}={value!r}")
        for name in ("stride_warmup", "validation"):
            value = getattr(self, name)
            if not _count(value, 0):
                raise ValueError(f"{name} must be an int >= 0; received {name}={value!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not _count(value, 1):
                raise ValueError(f"{name} must be an int >= 1; received {name}={value!r}")
        for name in ("lr", "stride_lr"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0; received {name}={value!r}")
        for name in ("weight_decay", "lambda_complexity", "budget_weight"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; received {name}={value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                "label_smoothing must be in [0, 1); received "
                f"label_smoothing={self.label_smoothing!r}"
            )

    @property
    def budget_macs(self) -> float | None:
        """The budget in multiply-accumulates (``macs_budget`` is in millions)."""
        return None if self.macs_budget is None else self.macs_budget * 1e6

    def as_json(self) -> dict[str, Any]:
        """The fields as ``metrics.json`` stores them (``strides`` a list)."""
        return {**vars(self), "strides": None if self.strides is None else list(self.strides)}


def run_changing(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a :meth:`Config.as_json`) without the fields that leave what the run
    computes unchanged (``changes_run=False``)."""
    unused = {f.name for f in fields(Config) if not f.metadata["changes_run"]}
    return {k: v for k, v in config.items() if k not in unused}


def check_model(model: str, framework: str, pooling: str) -> None:
    """``model``: one of our ResNets, or ``torchvision:NAME``, ``timm:NAME`` (torch) or
    ``keras:NAME`` (``keras.applications``, tf) to convert."""
    source, _, name = str(model).partition(":")
    if model in OWN_MODELS:
        return
    if source not in MODEL_SOURCES or not name:
        raise ValueError(
            f"model must be one of {OWN_MODELS} or SOURCE:NAME with SOURCE in "
            f"{tuple(MODEL_SOURCES)}; received model={model!r}"
        )
    if MODEL_SOURCES[source] != framework:
        raise ValueError(
            f"{source} models train with framework={MODEL_SOURCES[source]!r}; received "
            f"model={model!r} with framework={framework!r}"
        )
    if pooling == "spatial":
        raise ValueError(
            "pooling='spatial' is for our ResNets; a converted model takes diffstride, "
            f"spectral or strided; received model={model!r}"
        )


def _argument(item: Any, hint: Any) -> tuple[list[str], dict[str, Any]]:
    """The ``add_argument`` call of one :class:`Config` field."""
    meta, flag = item.metadata, "--" + item.name.replace("_", "-")
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    kind = kinds[0]
    options: dict[str, Any] = {"dest": item.name, "default": item.default, "help": meta["help"]}
    if kind is bool:
        if item.default is True:  # on by default: the option turns it off
            return [f"--no-{flag[2:]}"], {**options, "action": "store_false"}
        if item.default is None:  # None: the per-model default
            return [flag], {**options, "action": argparse.BooleanOptionalAction}
        return [flag], {**options, "action": "store_true"}
    if item.default is not None:
        options["help"] += f" (default: {item.default})"
    options["type"] = meta["parse"] or kind
    for key in ("choices", "metavar"):
        if meta[key] is not None:
            options[key] = meta[key]
    return [flag], options


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m diffstride.examples.train``: one option per
    :class:`Config` field."""
    parser = argparse.ArgumentParser(
        prog="python -m diffstride.examples.train", description=DESCRIPTION
    )
    hints = typing.get_type_hints(Config)
    for item in fields(Config):
        flags, options = _argument(item, hints[item.name])
        parser.add_argument(*flags, **options)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """The :class:`Config` of a command line; a bad value exits with status 2 and an
    ``error:`` line naming the option."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return Config(**vars(args))
    except ValueError as error:
        parser.error(str(error))
