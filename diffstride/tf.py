"""TensorFlow / Keras 3 front-end: functions for tf tensors (``tf.GradientTape`` gradients).

Inside ``tf.function`` the crop size is computed in the graph from the stride values.
"""

from __future__ import annotations

from diffstride import _api

__all__ = ["diffstride", "spectral_pooling"]

diffstride, spectral_pooling = _api.bind("tensorflow")
