"""The Keras trainer (TensorFlow backend): our ResNets or a converted ``keras.applications``
model, a ``tf.function`` train step (not ``model.fit``, so that the penalties, the progress bar
and the records are those of the torch trainer), and ``tf.distribute.MirroredStrategy`` with
``--distribute mirrored``."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

import diffstride.keras
from diffstride.examples import data
from diffstride.examples.train.checkpoint import CheckpointError
from diffstride.examples.train.config import OWN_MODELS, RESNET_STRIDES, Config, config_errors
from diffstride.examples.train.trainers import TrainerBase, pooling, total_steps
from diffstride.keras import MacsReference, diffstride_layers, macs_penalty, macs_reference
from diffstride.models import keras as models
from diffstride.tf import complexity_penalty

__all__ = ["KerasTrainer", "converted_model"]


class KerasTrainer(TrainerBase):
    """Trains ``config``'s model on ``dataset`` in Keras.

    With ``distribute="mirrored"`` the model, the optimizers and the step live under
    ``tf.distribute.MirroredStrategy``: each batch is split over the replicas and the
    gradients (the strides' included) summed over them. ``context`` is accepted for the
    common signature; Keras does not run under ``torchrun``.
    """

    def _build(self, dataset: data.Dataset) -> None:
        config = self.config
        keras.utils.set_random_seed(config.seed)
        mirrored = config.distribute == "mirrored"
        strategy = tf.distribute.MirroredStrategy() if mirrored else tf.distribute.get_strategy()
        if mirrored:
            devices = ", ".join(strategy.extended.worker_devices)
            print(f"MirroredStrategy: {strategy.num_replicas_in_sync} replicas ({devices})")
        self.strategy = strategy
        self.replicas = strategy.num_replicas_in_sync
        self.num_classes = dataset.num_classes
        with strategy.scope():
            self._build_model(config, dataset)
        self._distributed_step = tf.function(self._replicated_step, reduce_retracing=True)
        self._predict = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def _build_model(self, config: Config, dataset: data.Dataset) -> None:
        """The model and the optimizers (under the strategy's scope)."""
        channels = dataset.x_train.shape[1]
        input_size = (int(dataset.x_train.shape[2]), int(dataset.x_train.shape[3]))
        with config_errors():
            if config.model in OWN_MODELS:
                build = models.small_resnet if config.model == "small" else models.resnet18
                model = build(
                    config.strides or RESNET_STRIDES,
                    input_shape=(*dataset.x_train.shape[2:], channels),
                    pooling=pooling(config.pooling),
                    num_classes=dataset.num_classes,
                    data_format="channels_last",
                    ramp=config.ramp,
                    smoothness_factor=config.smoothness_factor,
                    pool_first=config.pool_first,
                )
            else:
                model = converted_model(config, channels, input_size, dataset.num_classes)
        self.model = model
        self.layers = diffstride_layers(model)
        self.budget_terms = _Budget(model, self.layers, channels, input_size)
        self.stride_vars = [layer.strides for layer in self.layers]
        stride_ids = {id(v) for v in self.stride_vars}
        self.weights = [v for v in model.trainable_variables if id(v) not in stride_ids]
        steps = total_steps(config, len(dataset.y_train))

        def rate(lr: float) -> Any:
            if config.lr_schedule == "constant":
                return lr
            return keras.optimizers.schedules.CosineDecay(lr, steps)

        if config.optimizer == "sgd":
            self.optimizer = keras.optimizers.SGD(
                rate(config.lr), momentum=0.9, weight_decay=config.weight_decay or None
            )
            self.stride_optimizer = keras.optimizers.SGD(rate(config.lr), momentum=0.9)
        else:
            self.optimizer = keras.optimizers.AdamW(
                rate(config.lr), weight_decay=config.weight_decay
            )
            self.stride_optimizer = keras.optimizers.Adam(rate(config.stride_lr))
        self.optimizer.build(self.weights)  # their variables made here, not in a traced step
        if self.stride_vars:
            self.stride_optimizer.build(self.stride_vars)
        self.loss_fn = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing
        )

    def _step(self, x: Any, y: Any, train_strides: Any, constant: Any, macs_weights: Any) -> Any:
        """One replica's step: its optimizers sum the replicas' gradients, so each replica's
        loss is divided by their number (1 without a strategy)."""
        config, weights, stride_vars = self.config, self.weights, self.stride_vars
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True)
            loss = self.loss_fn(tf.one_hot(y, self.num_classes), logits)
            if stride_vars and config.lambda_complexity:
                penalty = complexity_penalty(self.layers)
                loss = loss + config.lambda_complexity * penalty * train_strides
            if stride_vars and config.budget_macs is not None:
                penalty = self.budget_terms.penalty(config.budget_macs, constant, macs_weights)
                loss = loss + config.budget_weight * penalty * train_strides
            share = loss / self.replicas
        grads = tape.gradient(share, weights + stride_vars)
        self.optimizer.apply(grads[: len(weights)], weights)
        if stride_vars:
            stride_grads = [g * train_strides for g in grads[len(weights) :]]
            self.stride_optimizer.apply(stride_grads, stride_vars)
        correct = tf.cast(tf.argmax(logits, axis=1) == tf.cast(y, tf.int64), tf.float32)
        return loss, tf.reduce_mean(correct)

    def _replicated_step(self, x: Any, y: Any, *rest: Any) -> Any:
        loss, acc = self.strategy.run(self._step, args=(x, y, *rest))
        mean = tf.distribute.ReduceOp.MEAN
        return (
            self.strategy.reduce(mean, loss, axis=None),
            self.strategy.reduce(mean, acc, axis=None),
        )

    def _split(self, values: np.ndarray) -> Any:
        """``values`` as the replicas' parts of one batch (the whole batch without a strategy)."""
        if self.replicas == 1:
            return values
        parts = np.array_split(values, self.replicas)
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group])
        )

    def train_step(self, x: np.ndarray, y: np.ndarray, train_strides: bool) -> tuple[float, float]:
        needed = self.config.budget_macs is not None and bool(self.stride_vars) and train_strides
        constant, macs_weights = self.budget_terms.reference(needed)
        if len(y) < self.replicas:  # too small to give every replica a part: repeat examples
            repeated = np.resize(np.arange(len(y)), self.replicas)
            x, y = x[repeated], y[repeated]
        loss, acc = self._distributed_step(
            self._split(_nhwc(x)),
            self._split(y),
            tf.constant(1.0 if train_strides else 0.0),
            tf.constant(constant, tf.float32),
            tf.constant(macs_weights, tf.float32),
        )
        return float(loss), float(acc)

    def accuracy(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
        correct = 0
        for xb, yb in data.batches(x, y, batch_size, shuffle=False, seed=0):
            correct += int((np.argmax(self._predict(_nhwc(xb)), axis=1) == yb).sum())
        return correct / len(y)

    def strides(self) -> list[tuple[float, float]]:
        return [layer.current_strides() for layer in self.layers]

    def output_sizes(self, input_size: tuple[int, int]) -> list[tuple[int, int]]:
        return self.budget_terms.output_sizes()

    def macs(self, input_size: tuple[int, int]) -> int:
        return diffstride.keras.macs(self.model)

    def state(self) -> dict[str, Any]:
        """Every variable of the model (strides, batch statistics and seed generators
        included) and of both optimizers (their step counts drive the schedule)."""
        return {
            name: [np.asarray(keras.ops.convert_to_numpy(v)) for v in group]
            for name, group in self._groups()
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s values."""
        for name, group in self._groups():
            values = state[name]
            shapes = [tuple(v.shape) for v in group]
            if [tuple(np.shape(v)) for v in values] != shapes:
                raise CheckpointError(
                    f"the checkpoint's {name} variables do not fit this model: shapes "
                    f"{[tuple(np.shape(v)) for v in values]} stored, {shapes} here"
                )
            for variable, value in zip(group, values, strict=True):
                variable.assign(value)

    def _groups(self) -> list[tuple[str, list[Any]]]:
        return [
            ("model", list(self.model.variables)),
            ("optimizer", list(self.optimizer.variables)),
            ("stride_optimizer", list(self.stride_optimizer.variables) if self.stride_vars else []),
        ]


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def converted_model(config: Config, channels: int, size: tuple[int, int], num_classes: int) -> Any:
    """A ``keras.applications`` model (random weights, logits out) for the data set's
    images, converted as ``config.pooling`` says (``"strided"``: left as it is)."""
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
    return diffstride.keras.convert(
        model,
        ramp=config.ramp,
        pool_first=config.pool_first,
        smoothness_factor=config.smoothness_factor,
        pooling=config.pooling,
    )


class _Budget:
    """The MAC budget and the learned sizes of a Keras model in the Keras trainer: the MAC
    estimate's reference is read eagerly each step and enters the compiled step as tensors
    (``constant`` and one weight per term), so the step is traced once."""

    def __init__(self, model: Any, layers: list[Any], channels: int, size: tuple[int, int]):
        self.model, self.layers = model, layers
        self._groups = [group for group, _ in macs_reference(model).terms]
        outputs = [layer._inbound_nodes[0].output_tensors[0] for layer in layers]
        self._probe = keras.Model(model.inputs[0], outputs) if layers else None
        self._zeros = np.zeros((1, *size, channels), "float32")

    def reference(self, needed: bool) -> tuple[float, list[float]]:
        if not needed:
            return 0.0, [0.0] * len(self._groups)
        reference = macs_reference(self.model)
        weights = dict(reference.terms)
        if not weights.keys() <= set(self._groups):  # the graph is fixed: it cannot happen
            raise RuntimeError("the model's MAC terms changed during training")
        return reference.constant, [weights.get(group, 0.0) for group in self._groups]

    def penalty(self, budget: float, constant: Any, weights: Any) -> Any:
        terms = tuple((group, weights[i]) for i, group in enumerate(self._groups))
        reference = MacsReference(constant, terms)
        return keras.ops.convert_to_tensor(macs_penalty(self.model, budget, reference=reference))

    def output_sizes(self) -> list[tuple[int, int]]:
        if self._probe is None:
            return []
        outputs = self._probe(self._zeros)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return [tuple(int(n) for n in o.shape[1:3]) for o in outputs]
