"""Train a ResNet with learnable (or fixed) strides, in PyTorch or Keras, and watch them move.

    python -m diffstride.examples.train --framework torch --dataset synthetic --epochs 4 \\
        --pooling diffstride --strides 1,1,2,2,2 --lambda-complexity 0.1 --out runs/demo

Both frameworks run the same loop (``run``): the data as numpy batches, the loss
``cross-entropy + lambda * J(S) + budget_weight * max(MACs(S) / budget - 1, 0)`` with the
paper's complexity regularizer and, with ``--macs-budget``, a penalty that is zero under the
budget (``MACs(S)``: the model's counted MACs as a differentiable function of its strides,
``macs_estimate``). Optimizers: ``adamw`` (AdamW for the weights, Adam with a separate learning
rate for the strides, ``--stride-lr``: stride gradients are per-parameter averages of many
terms and move slowly at the weights' rate) or ``sgd`` (the original's recipe: SGD with
momentum 0.9 for weights and strides at one learning rate; pair it with
``--label-smoothing 0.1``); ``--lr-schedule cosine`` decays every rate to 0 over the run.
``--stride-warmup E`` freezes the strides for the first E epochs.
With ``--validation N``, N training images are held out: each epoch is evaluated on them and
the test set is read once, after the last epoch; without it, on the test set each epoch. Keras
runs a ``tf.function`` train step rather than ``model.fit`` so that the penalties, the progress
bar and the records are the same as in torch.

Outputs: a progress bar with loss and accuracy, a final table (test accuracy, learned strides
per DiffStride layer, output sizes, multiply-accumulates), ``OUT/metrics.json`` (per epoch and
``final``: ``train_loss``, ``test_accuracy``, ``strides`` as ``[s_h, s_w]`` per DiffStride
layer, ``macs``) and ``OUT/strides.png`` (stride trajectories, accuracy and MACs).

Scaling out: ``torchrun --nproc_per_node N -m diffstride.examples.train --framework torch ...``
trains with ``DistributedDataParallel``, one shard of the training set per process
(:mod:`diffstride.examples.distributed`; rank 0 alone writes, ``metrics.json`` records
``world_size``); ``--framework tf --distribute mirrored`` trains Keras under
``tf.distribute.MirroredStrategy`` on every visible device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from diffstride._validation import (
    RAMPS,
    _is_real_number,
    check_macs_budget,
    check_ramp,
    check_smoothness_factor,
)
from diffstride.examples import data, datasets, distributed

__all__ = ["Config", "ConfigError", "main", "parse_args", "run"]


@dataclass
class Config:
    framework: str = "torch"
    dataset: str = "synthetic"
    data_dir: str | None = None
    model: str = "small"
    pooling: str = "diffstride"
    #: One per stage of our ResNets (None: 1, 1, 2, 2, 2), or per downsampling point of a
    #: converted model (None: the model's own strides).
    strides: tuple[float, ...] | None = None
    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    stride_lr: float = 0.05
    weight_decay: float = 5e-4
    lambda_complexity: float = 0.0
    seed: int = 0
    out: str = "runs/train"
    limit_train: int | None = None
    progress: bool = True
    #: None: the original's "outside" for our ResNets, "inside" for a converted model.
    ramp: str | None = None
    smoothness_factor: float = 4.0
    #: None: off for our ResNets (the original's order), on for a converted model.
    pool_first: bool | None = None
    macs_budget: float | None = None  # millions of multiply-accumulates per image
    budget_weight: float = 1.0
    optimizer: str = "adamw"
    label_smoothing: float = 0.0
    stride_warmup: int = 0
    validation: int = 0
    lr_schedule: str = "constant"
    distribute: str = "none"  # "mirrored": Keras under tf.distribute.MirroredStrategy

    def __post_init__(self) -> None:
        check_model(self.model, self.framework, self.pooling)
        converted = self.model not in OWN_MODELS
        if self.ramp is None:
            self.ramp = "inside" if converted else "outside"
        if self.pool_first is None:
            self.pool_first = converted
        check_ramp(self.ramp)
        if not isinstance(self.pool_first, bool):
            raise TypeError(f"pool_first must be a bool; received pool_first={self.pool_first!r}")
        check_smoothness_factor(self.smoothness_factor)
        if self.macs_budget is not None:
            check_macs_budget(self.macs_budget)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {LR_SCHEDULES}; received "
                f"lr_schedule={self.lr_schedule!r}"
            )
        if self.distribute not in DISTRIBUTE:
            raise ValueError(
                f"distribute must be one of {DISTRIBUTE}; received distribute={self.distribute!r}"
            )
        if self.distribute == "mirrored" and self.framework != "tf":
            raise ValueError(
                "distribute='mirrored' is for framework='tf' (torch scales out under torchrun); "
                f"received framework={self.framework!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {OPTIMIZERS}; received optimizer={self.optimizer!r}"
            )
        if self.limit_train is not None and (
            isinstance(self.limit_train, bool)
            or not isinstance(self.limit_train, int)
            or self.limit_train < 1
        ):
            raise ValueError(
                "limit_train must be None or an int >= 1; received "
                f"limit_train={self.limit_train!r}"
            )
        for name in ("stride_warmup", "validation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0; received {name}={value!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
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


def _finite(value: Any) -> bool:
    return _is_real_number(value) and math.isfinite(value)


class ConfigError(ValueError):
    """The configuration names a model or data that cannot be built as asked."""


@contextlib.contextmanager
def _building_from_config() -> Iterator[None]:
    """Inside: a ValueError is the configuration's (a model the options cannot build or
    convert), said as a usage error; outside it, a ValueError is a fault with a traceback."""
    try:
        yield
    except ValueError as error:
        raise ConfigError(str(error)) from error


OPTIMIZERS = ("adamw", "sgd")
#: Our own ResNets; other models are "SOURCE:NAME" with a source per framework.
OWN_MODELS = ("small", "resnet18")
MODEL_SOURCES = {"torchvision": "torch", "timm": "torch", "keras": "tf"}
RESNET_STRIDES = (1.0, 1.0, 2.0, 2.0, 2.0)


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


#: "cosine": every learning rate (strides' included) decays to 0 over the run, per step.
LR_SCHEDULES = ("constant", "cosine")
#: "mirrored": the Keras trainer runs under ``tf.distribute.MirroredStrategy`` (every visible
#: device); torch runs one process per device under ``torchrun`` instead.
DISTRIBUTE = ("none", "mirrored")


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


def _total_steps(config: Config, dataset: data.Dataset) -> int:
    return config.epochs * -(-len(dataset.y_train) // config.batch_size)


class _Trainer(Protocol):
    """The few operations ``run`` needs from a framework (one implementation per framework
    below: ``_torch_trainer``, ``_keras_trainer``)."""

    def train_step(
        self, x: np.ndarray, y: np.ndarray, train_strides: bool
    ) -> tuple[float, float]: ...
    def accuracy(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> float: ...
    def strides(self) -> list[tuple[float, float]]: ...
    def output_sizes(self, input_size: tuple[int, int]) -> list[tuple[int, int]]: ...
    def macs(self, input_size: tuple[int, int]) -> int: ...


def _torch_trainer(
    config: Config, dataset: data.Dataset, context: distributed.Context = distributed.SINGLE
) -> _Trainer:
    """The torch trainer; under ``torchrun`` (``context.active``) the model is wrapped in
    ``DistributedDataParallel`` and evaluation is split over the ranks."""
    import torch

    from diffstride.models.torch import resnet18, small_resnet
    from diffstride.torch import MacsEstimator, complexity_penalty, macs

    torch.manual_seed(config.seed)
    channels, size = dataset.x_train.shape[1], tuple(int(n) for n in dataset.x_train.shape[2:])
    with _building_from_config():
        if config.model in OWN_MODELS:
            build = small_resnet if config.model == "small" else resnet18
            model = build(
                config.strides or RESNET_STRIDES,
                pooling=_pooling(config.pooling),
                in_channels=channels,
                num_classes=dataset.num_classes,
                ramp=config.ramp,
                smoothness_factor=config.smoothness_factor,
                pool_first=config.pool_first,
            )
            layers = model.diffstride_layers()
        else:
            model, layers = _converted_torch_model(config, channels, size, dataset.num_classes)
    device = torch.device("cpu")
    net: Any = model
    if context.active:
        device = distributed.init_torch(context)
        model.to(device)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None
        )
    example = torch.zeros(1, channels, *size, device=device)
    own = config.model in OWN_MODELS
    report = model.stride_report if own else _torch_reporter(model, layers, example)
    count = lambda _: macs(model, example)  # noqa: E731
    # It reads the sizes each training step's own forward pass saw: no second pass.
    estimate = MacsEstimator(model, example) if config.budget_macs is not None else None
    stride_params = [layer.strides for layer in layers]
    ids = {id(p) for p in stride_params}
    weights = [p for p in model.parameters() if id(p) not in ids]
    if config.optimizer == "sgd":
        groups = [
            {"params": weights, "weight_decay": config.weight_decay},
            {"params": stride_params, "weight_decay": 0.0},
        ]
        optimizer: Any = torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    else:
        groups = [
            {"params": weights, "weight_decay": config.weight_decay},
            {"params": stride_params, "lr": config.stride_lr, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    scheduler = None
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=_total_steps(config, dataset)
        )

    class Trainer:
        def train_step(
            self, x: np.ndarray, y: np.ndarray, train_strides: bool
        ) -> tuple[float, float]:
            model.train()
            logits = net(torch.from_numpy(x).to(device))
            target = torch.from_numpy(y).to(device)
            loss = torch.nn.functional.cross_entropy(
                logits, target, label_smoothing=config.label_smoothing
            )
            if stride_params and train_strides:
                if config.lambda_complexity:
                    loss = loss + config.lambda_complexity * complexity_penalty(layers)
                if estimate is not None:  # from the sizes this forward pass saw
                    loss = loss + config.budget_weight * estimate.penalty(config.budget_macs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if not train_strides:
                for p in stride_params:
                    p.grad = None  # frozen: neither the gradient nor momentum moves them
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            return float(loss.detach()), float((logits.argmax(1) == target).float().mean())

        def accuracy(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
            model.eval()
            correct = 0
            share = slice(context.rank, None, context.world_size)  # every rank a part
            x_part, y_part = x[share], y[share]
            with torch.no_grad():
                for xb, yb in data.batches(x_part, y_part, batch_size, shuffle=False, seed=0):
                    predicted = model(torch.from_numpy(xb).to(device)).argmax(1).cpu().numpy()
                    correct += int((predicted == yb).sum())
            return distributed.all_sum([correct], context)[0] / len(y)

        def strides(self) -> list[tuple[float, float]]:
            return [layer.current_strides() for layer in layers]

        def output_sizes(self, input_size: tuple[int, int]) -> list[tuple[int, int]]:
            return _diffstride_sizes(report(input_size))

        def macs(self, input_size: tuple[int, int]) -> int:
            return count(input_size)

    return Trainer()


def _keras_trainer(
    config: Config, dataset: data.Dataset, context: distributed.Context = distributed.SINGLE
) -> _Trainer:
    """The Keras trainer; with ``distribute="mirrored"`` the model, the optimizers and the step
    live under ``tf.distribute.MirroredStrategy``: each batch is split over the replicas and
    the gradients (the strides' included) summed over them."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(config.seed)
    mirrored = config.distribute == "mirrored"
    strategy = tf.distribute.MirroredStrategy() if mirrored else tf.distribute.get_strategy()
    if mirrored:
        devices = ", ".join(strategy.extended.worker_devices)
        print(f"MirroredStrategy: {strategy.num_replicas_in_sync} replicas ({devices})")
    with strategy.scope():
        return _keras_trainer_in(config, dataset, strategy)


def _keras_trainer_in(config: Config, dataset: data.Dataset, strategy: Any) -> _Trainer:
    """The Keras trainer, built under ``strategy``'s scope."""
    import keras
    import tensorflow as tf

    import diffstride.keras
    from diffstride.keras import diffstride_layers
    from diffstride.models import keras as models
    from diffstride.tf import complexity_penalty

    replicas = strategy.num_replicas_in_sync
    channels = dataset.x_train.shape[1]
    input_size = (int(dataset.x_train.shape[2]), int(dataset.x_train.shape[3]))
    with _building_from_config():
        if config.model in OWN_MODELS:
            build = models.small_resnet if config.model == "small" else models.resnet18
            model = build(
                config.strides or RESNET_STRIDES,
                input_shape=(*dataset.x_train.shape[2:], channels),
                pooling=_pooling(config.pooling),
                num_classes=dataset.num_classes,
                data_format="channels_last",
                ramp=config.ramp,
                smoothness_factor=config.smoothness_factor,
                pool_first=config.pool_first,
            )
        else:
            model = _converted_keras_model(config, channels, input_size, dataset.num_classes)
    layers = diffstride_layers(model)
    budget_terms = _KerasBudget(model, layers, channels, input_size)
    stride_vars = [layer.strides for layer in layers]
    stride_ids = {id(v) for v in stride_vars}
    weights = [v for v in model.trainable_variables if id(v) not in stride_ids]

    def rate(lr: float) -> Any:
        if config.lr_schedule == "constant":
            return lr
        return keras.optimizers.schedules.CosineDecay(lr, _total_steps(config, dataset))

    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            rate(config.lr), momentum=0.9, weight_decay=config.weight_decay or None
        )
        stride_optimizer = keras.optimizers.SGD(rate(config.lr), momentum=0.9)
    else:
        optimizer = keras.optimizers.AdamW(rate(config.lr), weight_decay=config.weight_decay)
        stride_optimizer = keras.optimizers.Adam(rate(config.stride_lr))
    optimizer.build(weights)  # their variables made here, not in the first (traced) step
    if stride_vars:
        stride_optimizer.build(stride_vars)
    loss_fn = keras.losses.CategoricalCrossentropy(
        from_logits=True, label_smoothing=config.label_smoothing
    )
    lam = config.lambda_complexity
    budget = config.budget_macs

    def step(x: Any, y: Any, train_strides: Any, constant: Any, macs_weights: Any) -> Any:
        """One replica's step: its optimizers sum the replicas' gradients, so each replica's
        loss is divided by their number (1 without a strategy)."""
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(tf.one_hot(y, dataset.num_classes), logits)
            if stride_vars and lam:
                loss = loss + lam * complexity_penalty(layers) * train_strides
            if stride_vars and budget is not None:
                penalty = budget_terms.penalty(budget, constant, macs_weights)
                loss = loss + config.budget_weight * penalty * train_strides
            share = loss / replicas
        grads = tape.gradient(share, weights + stride_vars)
        optimizer.apply(grads[: len(weights)], weights)
        if stride_vars:
            stride_grads = [g * train_strides for g in grads[len(weights) :]]
            stride_optimizer.apply(stride_grads, stride_vars)
        correct = tf.cast(tf.argmax(logits, axis=1) == tf.cast(y, tf.int64), tf.float32)
        return loss, tf.reduce_mean(correct)

    @tf.function(reduce_retracing=True)
    def distributed_step(x: Any, y: Any, *rest: Any) -> Any:
        loss, acc = strategy.run(step, args=(x, y, *rest))
        mean = tf.distribute.ReduceOp.MEAN
        return strategy.reduce(mean, loss, axis=None), strategy.reduce(mean, acc, axis=None)

    def split(values: np.ndarray) -> Any:
        """``values`` as the replicas' parts of one batch (the whole batch without a strategy)."""
        if replicas == 1:
            return values
        parts = np.array_split(values, replicas)
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group])
        )

    predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def nhwc(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    class Trainer:
        def train_step(
            self, x: np.ndarray, y: np.ndarray, train_strides: bool
        ) -> tuple[float, float]:
            constant, macs_weights = budget_terms.reference(
                budget is not None and bool(stride_vars) and train_strides
            )
            if len(y) < replicas:  # too small to give every replica a part: repeat examples
                repeated = np.resize(np.arange(len(y)), replicas)
                x, y = x[repeated], y[repeated]
            loss, acc = distributed_step(
                split(nhwc(x)),
                split(y),
                tf.constant(1.0 if train_strides else 0.0),
                tf.constant(constant, tf.float32),
                tf.constant(macs_weights, tf.float32),
            )
            return float(loss), float(acc)

        def accuracy(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
            correct = 0
            for xb, yb in data.batches(x, y, batch_size, shuffle=False, seed=0):
                correct += int((np.argmax(predict(nhwc(xb)), axis=1) == yb).sum())
            return correct / len(y)

        def strides(self) -> list[tuple[float, float]]:
            return [layer.current_strides() for layer in layers]

        def output_sizes(self, input_size: tuple[int, int]) -> list[tuple[int, int]]:
            return budget_terms.output_sizes()

        def macs(self, input_size: tuple[int, int]) -> int:
            return diffstride.keras.macs(model)

    return Trainer()


def _torch_backbone(model: str, channels: int, num_classes: int) -> Any:
    """A torchvision or timm model (random weights) for ``channels``-channel images: timm
    takes the channel count; a torchvision model gets a 1x1 convolution to three first."""
    import torch

    source, _, name = model.partition(":")
    if source == "timm":
        timm = _import_extra("timm")
        try:
            return timm.create_model(
                name, pretrained=False, num_classes=num_classes, in_chans=channels
            )
        except RuntimeError as error:  # timm's "Unknown model (NAME)"
            raise ConfigError(f"model={model!r}: {error}") from error
    torchvision = _import_extra("torchvision")
    try:
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except ValueError as error:
        raise ValueError(f"model={model!r}: {error}") from error
    if channels == 3:
        return net
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 3, 1, bias=False), net)


def _import_extra(name: str) -> Any:
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(
            f"--model {name}:NAME needs {name}: pip install 'diffstride[vision]'"
        ) from None


def _converted_torch_model(
    config: Config, channels: int, size: tuple[int, ...], num_classes: int
) -> tuple[Any, list[Any]]:
    """The backbone with its downsampling as ``config.pooling`` says, and one DiffStride
    layer per stride parameter (forward order)."""
    import torch

    from diffstride.torch import convert

    backbone = _torch_backbone(config.model, channels, num_classes)
    example = torch.zeros(2, channels, *size)
    if config.pooling == "strided" and config.strides is None:
        model = backbone
    else:
        model = convert(
            backbone,
            example,
            ramp=config.ramp,
            pool_first=config.pool_first,
            smoothness_factor=config.smoothness_factor,
            pooling=config.pooling,
            strides=config.strides,
        )
    leaders = {}
    for module in model.modules():
        if hasattr(module, "current_strides") and isinstance(
            getattr(module, "strides", None), torch.nn.Parameter
        ):
            leaders.setdefault(id(module.strides), module)
    return model, list(leaders.values())


def _torch_reporter(model: Any, layers: list[Any], example: Any) -> Any:
    """``stride_report``'s rows for a converted model: each stride's layer and the size it
    gives, read from one forward pass in eval mode."""
    import torch

    def report(input_size: tuple[int, int]) -> list[dict[str, Any]]:
        sizes: dict[int, list[int]] = {}

        def seen(module: Any, inputs: Any, output: Any) -> None:
            sizes[id(module)] = [int(output.shape[a]) for a in module._axes(output.ndim)]

        hooks = [layer.register_forward_hook(seen) for layer in layers]
        training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(example)
        finally:
            model.train(training)
            for hook in hooks:
                hook.remove()
        return [
            {"strides": list(layer.current_strides()), "output_size": sizes[id(layer)]}
            for layer in layers
        ]

    return report


def _converted_keras_model(
    config: Config, channels: int, size: tuple[int, int], num_classes: int
) -> Any:
    """A ``keras.applications`` model (random weights, logits out) for the data set's
    images, converted as ``config.pooling`` says (``"strided"``: left as it is)."""
    import keras

    from diffstride.keras import convert

    name = config.model.partition(":")[2]
    build = getattr(keras.applications, name, None)
    if not callable(build):
        raise ValueError(
            f"keras.applications has no model {name!r}; received model={config.model!r}"
        )
    if config.strides is not None:
        raise ValueError(
            "--strides is not taken by keras:NAME models (each layer starts at its own "
            f"strides); received strides={config.strides}"
        )
    model = build(
        weights=None,
        input_shape=(*size, channels),
        classes=num_classes,
        classifier_activation=None,
    )
    if config.pooling == "strided":
        return model
    return convert(
        model,
        ramp=config.ramp,
        pool_first=config.pool_first,
        smoothness_factor=config.smoothness_factor,
        pooling=config.pooling,
    )


class _KerasBudget:
    """The MAC budget and the learned sizes of a Keras model in the Keras trainer: the MAC
    estimate's reference is read eagerly each step and enters the compiled step as tensors
    (``constant`` and one weight per term), so the step is traced once."""

    def __init__(self, model: Any, layers: list[Any], channels: int, size: tuple[int, int]):
        import keras

        from diffstride.keras import macs_reference

        self.model, self.layers = model, layers
        self._groups = [group for group, _ in macs_reference(model).terms]
        outputs = [layer._inbound_nodes[0].output_tensors[0] for layer in layers]
        self._probe = keras.Model(model.inputs[0], outputs) if layers else None
        self._zeros = np.zeros((1, *size, channels), "float32")

    def reference(self, needed: bool) -> tuple[float, list[float]]:
        from diffstride.keras import macs_reference

        if not needed:
            return 0.0, [0.0] * len(self._groups)
        reference = macs_reference(self.model)
        weights = dict(reference.terms)
        if not weights.keys() <= set(self._groups):  # the graph is fixed: it cannot happen
            raise RuntimeError("the model's MAC terms changed during training")
        return reference.constant, [weights.get(group, 0.0) for group in self._groups]

    def penalty(self, budget: float, constant: Any, weights: Any) -> Any:
        import keras

        from diffstride.keras import MacsReference, macs_penalty

        terms = tuple((group, weights[i]) for i, group in enumerate(self._groups))
        reference = MacsReference(constant, terms)
        return keras.ops.convert_to_tensor(macs_penalty(self.model, budget, reference=reference))

    def output_sizes(self) -> list[tuple[int, int]]:
        if self._probe is None:
            return []
        outputs = self._probe(self._zeros)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return [tuple(int(n) for n in o.shape[1:3]) for o in outputs]


def _pooling(name: str) -> str | None:
    return None if name == "strided" else name


def _diffstride_sizes(report: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The output sizes of the layers whose strides are learned (the report gives them
    strides; the others have None), whatever their class is called."""
    return [tuple(row["output_size"]) for row in report if row["strides"] is not None]


TRAINERS: dict[str, Callable[[Config, data.Dataset, distributed.Context], _Trainer]] = {
    "torch": _torch_trainer,
    "tf": _keras_trainer,
}


def _progress(iterable: Any, total: int, description: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=description,
        leave=False,
        mininterval=0.5,
        file=sys.stdout,
        dynamic_ncols=True,
    )


def _hold_out(
    dataset: data.Dataset, count: int, seed: int
) -> tuple[data.Dataset, tuple[np.ndarray, np.ndarray] | None]:
    """The data set without ``count`` training images, drawn with ``seed``, and those images."""
    if count == 0:
        return dataset, None
    if count >= len(dataset.y_train):
        raise ValueError(
            f"validation must leave training images; received validation={count} for "
            f"{len(dataset.y_train)} training images"
        )
    order = np.random.default_rng(seed + 7919).permutation(len(dataset.y_train))
    held, kept = np.sort(order[:count]), np.sort(order[count:])
    train = replace(dataset, x_train=dataset.x_train[kept], y_train=dataset.y_train[kept])
    return train, (dataset.x_train[held], dataset.y_train[held])


def run(config: Config) -> dict[str, Any]:
    """Train as ``config`` says; write ``metrics.json`` and ``strides.png``; return metrics.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each process trains on its shard
    of the training set, ``--batch-size`` images a step (``world_size`` times as many in all);
    rank 0 alone prints and writes, and the run fails if the ranks' final strides differ."""
    context = distributed.from_env()
    if context.active and config.framework != "torch":
        raise ValueError(
            "multi-process runs (torchrun) are for framework='torch'; Keras scales out with "
            f"distribute='mirrored'; received framework={config.framework!r}"
        )
    try:
        return _run(config, context)
    finally:
        distributed.shutdown(context)


def _run(config: Config, context: distributed.Context) -> dict[str, Any]:
    try:  # a data set this config cannot read or split as asked
        dataset = datasets.load(config.dataset, config.data_dir, config.limit_train, config.seed)
        dataset, validation = _hold_out(dataset, config.validation, config.seed)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    whole = dataset
    x_shard, y_shard = distributed.shard(dataset.x_train, dataset.y_train, context)
    dataset = replace(dataset, x_train=x_shard, y_train=y_shard)
    trainer = TRAINERS[config.framework](config, dataset, context)
    say = print if context.is_main else _silent
    progress = config.progress and context.is_main
    input_size = (int(dataset.x_train.shape[2]), int(dataset.x_train.shape[3]))
    batch_count = -(-len(dataset.y_train) // config.batch_size)

    def record(epoch: int, loss: float | None, acc: float | None, seconds: float) -> Record:
        last = epoch == config.epochs
        return Record(
            epoch=epoch,
            train_loss=loss,
            train_accuracy=acc,
            test_accuracy=(
                trainer.accuracy(dataset.x_test, dataset.y_test, 256)
                if validation is None or last
                else None
            ),
            validation_accuracy=(
                None if validation is None else trainer.accuracy(*validation, 256)
            ),
            strides=[[round(s, 5) for s in pair] for pair in trainer.strides()],
            output_sizes=[list(size) for size in trainer.output_sizes(input_size)],
            macs=trainer.macs(input_size),
            seconds=round(seconds, 2),
        )

    started = time.perf_counter()
    records = [record(0, None, None, 0.0)]
    for epoch in range(1, config.epochs + 1):
        losses, accuracies = [], []
        epoch_start = time.perf_counter()
        train_strides = epoch > config.stride_warmup
        bar = _progress(
            data.batches(
                dataset.x_train,
                dataset.y_train,
                config.batch_size,
                shuffle=True,
                seed=config.seed * 1000 + epoch,
            ),
            batch_count,
            f"epoch {epoch}/{config.epochs}",
            progress,
        )
        for xb, yb in bar:
            loss, acc = trainer.train_step(xb, yb, train_strides)
            losses.append(loss)
            accuracies.append(acc)
            if progress:
                bar.set_postfix(
                    loss=f"{np.mean(losses[-20:]):.3f}", acc=f"{np.mean(accuracies[-20:]):.3f}"
                )
        mean_loss, mean_accuracy = (
            total / context.world_size
            for total in distributed.all_sum(
                [float(np.mean(losses)), float(np.mean(accuracies))], context
            )
        )
        records.append(record(epoch, mean_loss, mean_accuracy, time.perf_counter() - epoch_start))
        last = records[-1]
        shown = [
            f"{name} accuracy {value:.4f}"
            for name, value in (
                ("validation", last.validation_accuracy),
                ("test", last.test_accuracy),
            )
            if value is not None
        ]
        say(
            f"epoch {epoch}: train loss {last.train_loss:.4f}, {', '.join(shown)}, "
            f"MACs/image {last.macs:,}, strides {last.strides}",
            flush=True,
        )
    ranks = distributed.check_identical([list(pair) for pair in trainer.strides()], context)
    metrics = _metrics(config, whole, records, time.perf_counter() - started)
    metrics["world_size"] = context.world_size
    if context.active:
        metrics["rank_strides"] = ranks  # every rank's final strides, unrounded
    if context.is_main:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot(metrics, out / "strides.png")
        print(summary_table(metrics))
        print(f"wrote {out / 'metrics.json'} and {out / 'strides.png'}")
    return metrics


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` on the ranks that do not print."""


def _metrics(
    config: Config, dataset: data.Dataset, records: list[Record], seconds: float
) -> dict[str, Any]:
    keys = (
        "train_loss",
        "train_accuracy",
        "test_accuracy",
        "validation_accuracy",
        "strides",
        "output_sizes",
        "macs",
        "seconds",
    )
    epochs = [{"epoch": r.epoch, **{k: getattr(r, k) for k in keys}} for r in records]
    budget = config.budget_macs
    final = dict(epochs[-1])
    if budget is not None:
        final["macs_budget"] = budget
        final["budget_miss"] = round(final["macs"] / budget - 1.0, 4)
    return {
        "config": {**vars(config), "strides": config.strides and list(config.strides)},
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


def plot(metrics: dict[str, Any], path: Path) -> None:
    """Stride trajectories (left) and test accuracy and MACs per epoch (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e["epoch"] for e in metrics["epochs"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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


def parse_args(argv: Sequence[str] | None = None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m diffstride.examples.train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--framework", choices=sorted(TRAINERS), default="torch")
    parser.add_argument("--dataset", choices=datasets.DATASETS, default="synthetic")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--model",
        default="small",
        help="small | resnet18 (our ResNets), or a model to convert: torchvision:NAME, "
        "timm:NAME (torch), keras:NAME (keras.applications, tf)",
    )
    parser.add_argument(
        "--pooling", choices=("diffstride", "spectral", "spatial", "strided"), default="diffstride"
    )
    parser.add_argument(
        "--strides",
        type=_strides_arg,
        default=None,
        help="one stride per stage, stem first (our ResNets; default 1,1,2,2,2), or per "
        "downsampling point of a converted model (default: its own)",
    )
    parser.add_argument("--epochs", type=int, default=Config.epochs)
    parser.add_argument("--batch-size", type=int, default=Config.batch_size)
    parser.add_argument("--lr", type=float, default=Config.lr)
    parser.add_argument("--stride-lr", type=float, default=Config.stride_lr)
    parser.add_argument("--weight-decay", type=float, default=Config.weight_decay)
    parser.add_argument("--lambda-complexity", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=Config.out)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--ramp",
        choices=RAMPS,
        default=None,
        help="DiffStride's mask: the original's (outside) or ending at the stride's cut-off",
    )
    parser.add_argument("--smoothness-factor", type=float, default=Config.smoothness_factor)
    parser.add_argument(
        "--pool-first",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="pool each stage's input, then convolve (default: off for our ResNets, on for "
        "a converted model)",
    )
    parser.add_argument(
        "--macs-budget",
        type=float,
        default=None,
        metavar="M",
        help="millions of multiply-accumulates per image; a penalty above it, none under it",
    )
    parser.add_argument("--budget-weight", type=float, default=Config.budget_weight)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=Config.optimizer)
    parser.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=Config.lr_schedule,
        help="cosine: every learning rate decays to 0 over the run",
    )
    parser.add_argument("--label-smoothing", type=float, default=Config.label_smoothing)
    parser.add_argument(
        "--stride-warmup", type=int, default=0, metavar="E", help="freeze strides for E epochs"
    )
    parser.add_argument(
        "--validation",
        type=int,
        default=0,
        metavar="N",
        help="hold out N training images; the test set is then read once, at the end",
    )
    parser.add_argument(
        "--distribute",
        choices=DISTRIBUTE,
        default=Config.distribute,
        help="mirrored: Keras on every visible device (tf.distribute.MirroredStrategy); "
        "torch: launch with torchrun --nproc_per_node N instead",
    )
    args = parser.parse_args(argv)
    values = vars(args)
    values["progress"] = not values.pop("no_progress")
    try:
        return Config(**values)
    except ValueError as error:
        parser.error(str(error))


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        run(config)
    except (data.MissingDataError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
