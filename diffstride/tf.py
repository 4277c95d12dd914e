"""TensorFlow front-end: functions for tf tensors, and the Keras layers under their old home.

``diffstride.tf.diffstride`` and ``spectral_pooling`` take tf tensors (differentiable with
``tf.GradientTape``, usable inside ``tf.function``). The Keras layers live in
:mod:`diffstride.keras`, which runs on every Keras backend; they are exported here too, so
that code written for the TensorFlow backend keeps working.
"""

from __future__ import annotations

from diffstride import _api
from diffstride.keras import (
    DiffStride,
    DiffStride1D,
    DiffStride2D,
    DiffStride3D,
    FixedSpectralPooling,
    FixedSpectralPooling1D,
    FixedSpectralPooling2D,
    FixedSpectralPooling3D,
    SpatialPooling,
    StrideConstraint,
    StrideHistory,
    UpdateCrops,
    complexity_penalty,
    diffstride_layers,
    update_crops,
)

__all__ = [
    "DiffStride",
    "DiffStride1D",
    "DiffStride2D",
    "DiffStride3D",
    "FixedSpectralPooling",
    "FixedSpectralPooling1D",
    "FixedSpectralPooling2D",
    "FixedSpectralPooling3D",
    "SpatialPooling",
    "StrideConstraint",
    "StrideHistory",
    "UpdateCrops",
    "complexity_penalty",
    "diffstride",
    "diffstride_layers",
    "spectral_pooling",
    "update_crops",
]

diffstride, spectral_pooling = _api.bind("tensorflow")
