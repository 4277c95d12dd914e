"""PyTorch front-end: functions for torch tensors (autograd gives the gradients)."""

from __future__ import annotations

from diffstride import _api

__all__ = ["diffstride", "spectral_pooling"]

diffstride, spectral_pooling = _api.bind("torch")
