"""The original's ResNet as a Keras 3 functional model, with a choice of downsampling.

Built from the same description as the torch model (``_spec``); the main path and the shortcut
of a projection layer call one shared pooling layer. ``data_format`` defaults to
``keras.config.image_data_format()`` (channels_last unless configured). ``macs``,
``macs_estimate``, ``macs_penalty`` and ``macs_reference`` are ``diffstride.keras``'s, which
count any functional model: the ResNets have no MAC counter of their own.

>>> import numpy as np
>>> from diffstride.models.keras import small_resnet
>>> model = small_resnet(input_shape=(28, 28, 1), pooling="diffstride", num_classes=10)
>>> tuple(model(np.zeros((2, 28, 28, 1), "float32")).shape)
(2, 10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from diffstride.keras import (
    DiffStride,
    FixedSpectralPooling,
    SpatialPooling,
    diffstride_layers,
    macs,
    macs_estimate,
    macs_penalty,
    macs_reference,
)
from diffstride.models._spec import (
    ResNetSpec,
    check_model_options,
    resnet18_spec,
    small_spec,
    stride_report,
)

__all__ = [
    "diffstride_layers",
    "macs",
    "macs_estimate",
    "macs_penalty",
    "macs_reference",
    "pooling_layers",
    "report",
    "resnet",
    "resnet18",
    "small_resnet",
]

_POOLING_TYPES = (DiffStride, FixedSpectralPooling, SpatialPooling)


def _pooling_layer(
    pooling: str, stride: float, data_format: str, options: dict[str, Any]
) -> keras.layers.Layer:
    if pooling == "diffstride":
        return DiffStride(strides=(stride, stride), data_format=data_format, **options)
    if pooling == "spectral":
        return FixedSpectralPooling(strides=(stride, stride), data_format=data_format)
    return SpatialPooling(strides=(int(stride), int(stride)), data_format=data_format)


def _conv(filters: int, kernel: int, stride: float, data_format: str) -> keras.layers.Conv2D:
    if stride != int(stride):
        raise ValueError(
            f"strided convolutions and spatial pooling need integer strides; received {stride}"
        )
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=int(stride),
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        data_format=data_format,
    )


def _batch_norm(data_format: str) -> keras.layers.BatchNormalization:
    axis = 1 if data_format == "channels_first" else -1
    return keras.layers.BatchNormalization(axis=axis, momentum=0.9, epsilon=1e-5)


def resnet(
    spec: ResNetSpec,
    *,
    input_shape: Sequence[int],
    pooling: Any = "diffstride",
    num_classes: int = 10,
    data_format: str | None = None,
    ramp: str = "outside",
    smoothness_factor: float = 4.0,
    pool_first: bool = False,
) -> keras.Model:
    """The original's ResNet for ``spec``; ``input_shape`` excludes the batch axis.

    ``ramp``, ``smoothness_factor`` and ``pool_first`` as for
    ``diffstride.models.torch.ResNet``.
    """
    pooling = check_model_options(pooling, ramp, smoothness_factor, pool_first)
    pool_first = bool(pool_first and pooling)
    options = {"ramp": ramp, "smoothness_factor": smoothness_factor}
    data_format = data_format or keras.config.image_data_format()

    def pooling_layer(stride: float) -> keras.layers.Layer:
        return _pooling_layer(pooling, stride, data_format, options)

    inputs = keras.Input(tuple(input_shape))
    x = inputs
    if pool_first:
        x = pooling_layer(spec.strides[0])(x)
    x = _conv(spec.filters[0], 3, 1 if pooling else spec.strides[0], data_format)(x)
    if pooling and not pool_first:
        x = pooling_layer(spec.strides[0])(x)
    x = keras.layers.ReLU()(_batch_norm(data_format)(x))
    for _, _, c_out, stride, project in spec.layers():
        pool = pooling_layer(stride) if project and pooling else None
        conv_stride = stride if project and pool is None else 1

        def pooled(y: Any, pool: Any = pool) -> Any:
            return y if pool is None else pool(y)

        if pool_first:
            x = pooled(x)
            y = _conv(c_out, spec.kernel_size, 1, data_format)(x)
            y = keras.layers.ReLU()(_batch_norm(data_format)(y))
        else:
            y = _conv(c_out, spec.kernel_size, conv_stride, data_format)(x)
            y = keras.layers.ReLU()(_batch_norm(data_format)(pooled(y)))
        y = _batch_norm(data_format)(_conv(c_out, spec.kernel_size, 1, data_format)(y))
        if project and pool_first:
            x = _batch_norm(data_format)(_conv(c_out, 1, 1, data_format)(x))
        elif project:
            x = _batch_norm(data_format)(pooled(_conv(c_out, 1, conv_stride, data_format)(x)))
        x = keras.layers.ReLU()(keras.layers.Add()([y, x]))
    x = keras.layers.GlobalAveragePooling2D(data_format=data_format)(x)
    outputs = keras.layers.Dense(num_classes, kernel_initializer="he_normal")(x)
    model = keras.Model(inputs, outputs)
    return model


def resnet18(strides: Sequence[float] | None = None, **kwargs: Any) -> keras.Model:
    """The original's ``resnet18`` (strides ``[1, 1, 2, 2, 2]`` by default)."""
    return resnet(resnet18_spec(strides), **kwargs)


def small_resnet(strides: Sequence[float] | None = None, **kwargs: Any) -> keras.Model:
    """A narrow ResNet that trains on a CPU in minutes (strides ``[1, 1, 2, 2, 2]``)."""
    return resnet(small_spec(strides), **kwargs)


def pooling_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The pooling layers in forward (topological) order."""
    return [layer for layer in model.layers if isinstance(layer, _POOLING_TYPES)]


def report(model: keras.Model, input_size: tuple[int, int]) -> list[dict]:
    """Each pooling layer's strides and sizes for an ``input_size`` image."""
    return stride_report(pooling_layers(model), input_size)
