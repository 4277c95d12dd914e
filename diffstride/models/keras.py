"""The original's ResNet as a Keras 3 functional model, with a choice of downsampling.

Built from the same description as the torch model (``_spec``); the main path and the shortcut
of a projection layer call one shared pooling layer. ``data_format`` defaults to
``keras.config.image_data_format()`` (channels_last unless configured).

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

from diffstride._complexity import budget_penalty_of, weighted_reach_of
from diffstride.keras import DiffStride, FixedSpectralPooling, SpatialPooling
from diffstride.models._spec import (
    ResNetSpec,
    check_model_options,
    macs_weights,
    resnet18_spec,
    segment_macs,
    small_spec,
    stride_report,
)

__all__ = [
    "diffstride_layers",
    "macs",
    "macs_estimate",
    "macs_penalty",
    "macs_weights_of",
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
    model.resnet_spec = spec  # read by macs(); not saved with the model
    model.resnet_pool_first = pool_first
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


def diffstride_layers(model: keras.Model) -> list[DiffStride]:
    return [layer for layer in model.layers if isinstance(layer, DiffStride)]


def _segment_macs(model: keras.Model, input_size: tuple[int, int], in_channels: int) -> list[int]:
    poolings = pooling_layers(model)
    return segment_macs(
        model.resnet_spec,
        input_size,
        in_channels=in_channels,
        num_classes=model.outputs[0].shape[-1],
        pooling_sizes=[p.output_size for p in poolings] if poolings else None,
        pool_first=getattr(model, "resnet_pool_first", False),
    )


def macs(model: keras.Model, input_size: tuple[int, int], *, in_channels: int) -> int:
    """Multiply-accumulates per image at the current strides (see ``estimate_macs``)."""
    return sum(_segment_macs(model, input_size, in_channels))


def macs_weights_of(
    model: keras.Model, input_size: tuple[int, int], *, in_channels: int
) -> tuple[float, list[float]]:
    """The constant and per-layer weights of :func:`macs_estimate`, counted at the current
    strides (read eagerly; pass them into a ``tf.function`` step as tensors)."""
    values = [
        layer.current_strides() if isinstance(layer, DiffStride) else None
        for layer in pooling_layers(model)
    ]
    return macs_weights(_segment_macs(model, input_size, in_channels), values)


def macs_estimate(model: keras.Model, constant: Any, weights: Any) -> Any:
    """MACs per image as a differentiable function of the DiffStride strides: the paper's
    ``J`` with the per-layer ``weights`` of :func:`macs_weights_of` (a list or a 1-D tensor,
    one per pooling layer), plus its ``constant``; equal to :func:`macs` where they were
    counted.

    >>> from diffstride.models.keras import small_resnet, macs, macs_estimate, macs_weights_of
    >>> model = small_resnet(input_shape=(28, 28, 1), pooling="diffstride", ramp="inside")
    >>> constant, weights = macs_weights_of(model, (28, 28), in_channels=1)
    >>> estimate = macs_estimate(model, constant, weights)
    >>> round(float(estimate)) == macs(model, (28, 28), in_channels=1)
    True
    """
    strides = [
        keras.ops.convert_to_tensor(layer.strides) if isinstance(layer, DiffStride) else None
        for layer in pooling_layers(model)
    ]
    return constant + weighted_reach_of(strides, [weights[i] for i in range(len(strides))])


def macs_penalty(model: keras.Model, constant: Any, weights: Any, macs_budget: float) -> Any:
    """``max(MACs / budget - 1, 0)`` with :func:`macs_estimate`: zero under ``macs_budget``
    (multiply-accumulates per image), the relative excess above."""
    return budget_penalty_of(macs_estimate(model, constant, weights), macs_budget, xp=keras.ops)


def report(model: keras.Model, input_size: tuple[int, int]) -> list[dict]:
    """Each pooling layer's strides and sizes for an ``input_size`` image."""
    return stride_report(pooling_layers(model), input_size)
