"""The golden cases of the original Keras implementation, as plain dicts.

Files live in ``data/`` (see its README for provenance). Each DiffStride case holds ``meta``
(shape, strides, smoothness_factor, shared_stride, cropping, data_format, lower/upper limits),
``x``, ``y``, ``cot``, ``grad_x``, ``grad_strides``, ``strides_init`` and ``strides_after``;
each fixed spectral pooling case ``meta`` (shape, strides, data_format), ``x``, ``y``, ``cot``
and ``grad_x``.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

__all__ = ["diffstride_cases", "diffstride_kwargs", "spectral_pooling_cases"]

DIFFSTRIDE_FILES = ("keras_reference.npz", "extra_reference.npz")
SPECTRAL_FILES = ("keras_reference_fixed.npz", "extra_reference_fixed.npz")


def _load(filename: str) -> list[dict[str, Any]]:
    with resources.as_file(resources.files(__package__) / "data" / filename) as path:
        data = np.load(path)
        names = sorted({key.split("_", 1)[0] for key in data.files})
        cases = []
        for name in names:
            case = {key.split("_", 1)[1]: data[key] for key in data.files if key.startswith(name)}
            case["meta"] = json.loads(str(case["meta"]))
            case["id"] = f"{filename.removesuffix('.npz')}:{name}"
            cases.append(case)
    return cases


@cache
def diffstride_cases() -> tuple[dict[str, Any], ...]:
    """Every DiffStride golden case (shared and extra)."""
    return tuple(case for f in DIFFSTRIDE_FILES for case in _load(f))


@cache
def spectral_pooling_cases() -> tuple[dict[str, Any], ...]:
    """Every fixed spectral pooling golden case (shared and extra)."""
    return tuple(case for f in SPECTRAL_FILES for case in _load(f))


def diffstride_kwargs(meta: dict[str, Any]) -> dict[str, Any]:
    """The functional API's keyword arguments for a case's ``meta``."""
    return {
        "smoothness_factor": meta["smoothness_factor"],
        "cropping": meta["cropping"],
        "data_format": meta["data_format"],
        "lower_limit_stride": meta["lower_limit_stride"],
        "upper_limit_stride": meta["upper_limit_stride"],
    }
