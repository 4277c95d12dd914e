"""TensorFlow / Keras 3 front-end: functions for tf tensors and Keras layers.

The layers need ``KERAS_BACKEND=tensorflow`` (the default): the FFTs run through the
TensorFlow adapter. They are registered as serializable (package ``diffstride``), so a model
saved to ``.keras`` loads back without ``custom_objects``. ``DiffStride`` keeps its stride in
a float32 variable named ``strides`` with a :class:`StrideConstraint` for the limits (as the
original); ``training=True`` calls project it in place, ``S <- max(S, N / (N - R))``. Inside
``tf.function`` (``model.fit``) the crop size is computed in the graph, so the output's
spatial size is dynamic there: convolutions, global pooling, ``SpatialPooling`` and further
``DiffStride`` layers accept that; ``FixedSpectralPooling`` needs static sizes and says so.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from diffstride import _api
from diffstride._complexity import complexity_penalty_of
from diffstride._layers import DiffStrideMixin, FixedSpectralPoolingMixin, SpatialPoolingMixin

__all__ = [
    "DiffStride",
    "FixedSpectralPooling",
    "SpatialPooling",
    "StrideConstraint",
    "StrideHistory",
    "complexity_penalty",
    "diffstride",
    "diffstride_layers",
    "spectral_pooling",
]

diffstride, spectral_pooling = _api.bind("tensorflow")

_PACKAGE = "diffstride"


def _check_keras_backend() -> None:
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "diffstride.tf layers need the TensorFlow Keras backend; received "
            f"KERAS_BACKEND={keras.backend.backend()!r}. Use diffstride.torch or diffstride.jax "
            "for the other frameworks."
        )


def _default_format(data_format: str | None) -> str:
    return keras.config.image_data_format() if data_format is None else data_format


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StrideConstraint(keras.constraints.Constraint):
    """Keeps strides in ``[lower or 1, upper or float32 max]`` after each optimizer step."""

    def __init__(self, lower_limit: float | None = None, upper_limit: float | None = None):
        self.lower_limit = lower_limit
        self.upper_limit = upper_limit

    def __call__(self, w: Any) -> Any:
        low = 1.0 if self.lower_limit is None else self.lower_limit
        high = tf.float32.max if self.upper_limit is None else self.upper_limit
        return tf.clip_by_value(w, low, high)

    def get_config(self) -> dict[str, Any]:
        return {"lower_limit": self.lower_limit, "upper_limit": self.upper_limit}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiffStride(DiffStrideMixin, keras.layers.Layer):
    """Spectral pooling with learnable strides (Riad et al., ICLR 2022), as a Keras 3 layer.

    Arguments as ``diffstride.torch.DiffStride`` (``ramp`` included); ``data_format`` defaults
    to ``keras.config.image_data_format()``. ``training=True`` calls store the original's
    projection in ``strides`` with the outside ramp; with ``ramp="inside"`` they store nothing
    and the constraint keeps the strides within the limits.

    Examples
    --------
    >>> import numpy as np
    >>> from diffstride.tf import DiffStride
    >>> layer = DiffStride(strides=(2.0, 2.0), data_format="channels_last")
    >>> tuple(layer(np.zeros((8, 32, 32, 3), "float32")).shape)
    (8, 24, 24, 3)
    >>> layer.current_strides(), layer.compute_output_shape((None, 32, 32, 3))
    ((2.0, 2.0), (None, 24, 24, 3))
    """

    def __init__(
        self,
        strides: Any = (2.0, 2.0),
        smoothness_factor: float = 4.0,
        cropping: bool = True,
        trainable: bool = True,
        shared_stride: bool = False,
        lower_limit_stride: float | None = None,
        upper_limit_stride: float | None = None,
        data_format: str | None = None,
        method: str = "auto",
        ramp: str = "outside",
        **kwargs: Any,
    ) -> None:
        _check_keras_backend()
        super().__init__(trainable=trainable, **kwargs)
        self._init_diffstride(
            strides,
            smoothness_factor,
            cropping,
            shared_stride,
            lower_limit_stride,
            upper_limit_stride,
            _default_format(data_format),
            method,
            ramp,
        )

    def build(self, input_shape: Any) -> None:
        self._check_input_shape(input_shape)
        self.strides = self.add_weight(
            name="strides",
            shape=self.stride_shape,
            initializer=keras.initializers.Constant(self.initial_value),
            trainable=self.trainable,
            dtype="float32",
            constraint=StrideConstraint(self.lower_limit_stride, self.upper_limit_stride),
        )

    def _stride_values(self) -> Any:
        if not self.built:
            return self.initial_value
        return keras.ops.convert_to_numpy(self.strides)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        backend = _api.get_backend("tensorflow")
        self._check_input_shape(inputs.shape, allow_unknown=True)
        sizes = _api.spatial_sizes(inputs, self.data_format, backend)
        strides = tf.convert_to_tensor(self.strides.value)
        if training and self.ramp == "outside":
            xp = backend.namespace()
            self.strides.assign(self._projected(strides, sizes, clip=False, xp=xp))
        outputs = _api.diffstride_on(
            backend,
            inputs,
            strides,
            check_values=False,
            **self._functional_kwargs(),
        )
        # In graph mode the spatial size depends on the stride's value; the rest is static.
        shape = list(inputs.shape)
        shape[self._axes[0]] = shape[self._axes[1]] = None
        return tf.ensure_shape(outputs, shape)

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        shape = list(input_shape)
        axes = self._axes
        if all(shape[a] is not None for a in axes):
            size = self.output_size((shape[axes[0]], shape[axes[1]]))
        else:
            size = (None, None)
        shape[axes[0]], shape[axes[1]] = size
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._diffstride_config()}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FixedSpectralPooling(FixedSpectralPoolingMixin, keras.layers.Layer):
    """Fixed spectral pooling (the original's ``FixedSpectralPooling``); no weight.
    ``method`` as for ``diffstride.torch.DiffStride``.

    >>> import numpy as np
    >>> from diffstride.tf import FixedSpectralPooling
    >>> layer = FixedSpectralPooling((2, 2), data_format="channels_first")
    >>> tuple(layer(np.zeros((1, 3, 32, 32), "float32")).shape)
    (1, 3, 16, 16)
    """

    def __init__(
        self,
        strides: Any = (2.0, 2.0),
        data_format: str | None = None,
        method: str = "auto",
        **kwargs: Any,
    ) -> None:
        _check_keras_backend()
        super().__init__(**kwargs)
        self._init_spectral(strides, _default_format(data_format), method)

    def call(self, inputs: Any) -> Any:
        self._check_input_shape(inputs.shape)
        return spectral_pooling(
            inputs, self.strides_value, data_format=self.data_format, method=self.method
        )

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        shape = list(input_shape)
        h, w = self._axes
        shape[h], shape[w] = self.output_size((shape[h], shape[w]))
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "strides": self.strides_value,
            "data_format": self.data_format,
            "method": self.method,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpatialPooling(SpatialPoolingMixin, keras.layers.AveragePooling2D):
    """The original's ``SpatialPooling``: average pooling with 'same' padding.

    >>> import numpy as np
    >>> from diffstride.tf import SpatialPooling
    >>> tuple(SpatialPooling(data_format="channels_last")(np.zeros((1, 15, 15, 3))).shape)
    (1, 8, 8, 3)
    """

    def __init__(
        self,
        pool_size: Any = (1, 1),
        strides: Any = (2, 2),
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        padding = kwargs.pop("padding", "same")
        if padding != "same":
            raise ValueError(f"SpatialPooling pads 'same'; received padding={padding!r}")
        self._init_spatial(pool_size, strides, _default_format(data_format))
        super().__init__(
            pool_size=self.pool_size,
            strides=self.strides_value,
            padding="same",
            data_format=self.data_format,
            **kwargs,
        )


def diffstride_layers(model_or_layers: Any) -> list[DiffStride]:
    """The DiffStride layers of a Keras model (nested ones too), in the order Keras tracks
    them, which is the order they were created; or a given list, unchanged."""
    if isinstance(model_or_layers, (list, tuple)):
        return list(model_or_layers)
    layers = model_or_layers._flatten_layers(include_self=False, recursive=True)
    return [layer for layer in layers if isinstance(layer, DiffStride)]


def complexity_penalty(model_or_layers: Any) -> Any:
    """The paper's complexity regularizer over a model's DiffStride layers (forward order),
    differentiable with respect to their strides; add ``lambda * J`` to the loss.

    >>> from diffstride.tf import DiffStride, complexity_penalty
    >>> layers = [DiffStride((2.0, 2.0)), DiffStride((2.0, 2.0))]
    >>> for layer in layers:
    ...     layer.build((None, 8, 8, 1))
    >>> float(complexity_penalty(layers))
    0.3125
    """
    strides = [
        tf.convert_to_tensor(layer.strides.value) for layer in diffstride_layers(model_or_layers)
    ]
    return complexity_penalty_of(strides, xp=_api.get_backend("tensorflow").namespace())


class StrideHistory(keras.callbacks.Callback):
    """Records every DiffStride layer's strides at the end of each epoch (and at the start).

    ``history`` is a list (one entry per record) of lists of ``(s_h, s_w)`` per layer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: list[list[tuple[float, float]]] = []

    def _record(self) -> None:
        self.history.append([layer.current_strides() for layer in diffstride_layers(self.model)])

    def on_train_begin(self, logs: Any = None) -> None:
        self._record()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._record()
