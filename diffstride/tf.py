"""TensorFlow front-end: functions for tf tensors, and the Keras layers under their old home.

``diffstride.tf.diffstride`` and ``spectral_pooling`` take tf tensors (differentiable with
``tf.GradientTape``, usable inside ``tf.function``). The Keras layers live in
:mod:`diffstride.keras`, which runs on every Keras backend; they are exported here too, so
that code written for the TensorFlow backend keeps working.
"""

# ruff: noqa: F401 (the Keras names are imported to be re-exported; __all__ derives them)
from __future__ import annotations

from diffstride import _api
from diffstride import keras as _keras
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

#: All of :mod:`diffstride.keras` but what converts models (added later, on Keras only).
__all__ = sorted({*_keras.__all__} - _keras._CONVERT_NAMES | {"diffstride", "spectral_pooling"})

diffstride, spectral_pooling = _api.bind("tensorflow")
