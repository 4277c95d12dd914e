"""Argument checks shared by every front-end and layer.

One place decides what is valid and how the error reads, so that torch, Keras, jax and numpy
users get the same message: it names the argument and repeats the value received.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = [
    "check_data_format",
    "check_limits",
    "check_macs_budget",
    "check_method",
    "check_ramp",
    "check_smoothness_factor",
    "check_spatial_sizes",
    "check_stride_values",
    "spatial_axes",
]

DATA_FORMATS = ("channels_first", "channels_last")
METHODS = ("auto", "fft", "matmul")
#: Where the mask's ramp lies: beyond the stride's threshold (the original) or below it.
RAMPS = ("outside", "inside")


def check_method(method: Any) -> str:
    """The computation path: FFTs, the GEMM formulation, or chosen by size."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; received method={method!r}")
    return method


def check_ramp(ramp: Any) -> str:
    """``"outside"`` (the original's ramp, beyond ``N / S``) or ``"inside"`` (ending there)."""
    if ramp not in RAMPS:
        raise ValueError(f"ramp must be one of {RAMPS}; received ramp={ramp!r}")
    return ramp


def check_data_format(data_format: Any) -> str:
    if data_format not in DATA_FORMATS:
        raise ValueError(
            f"data_format must be one of {DATA_FORMATS}; received data_format={data_format!r}"
        )
    return data_format


def spatial_axes(data_format: str) -> tuple[int, int]:
    """The (height, width) axes of a rank-4 input: NCHW -> (2, 3), NHWC -> (1, 2)."""
    return (2, 3) if check_data_format(data_format) == "channels_first" else (1, 2)


def _is_real_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_stride_values(strides: Any, *, name: str = "strides") -> tuple[float, ...]:
    """Concrete strides: one number (shared) or two, each finite and >= 1."""
    if _is_real_number(strides):
        values: Sequence[Any] = (strides,)
    elif isinstance(strides, Sequence) and not isinstance(strides, str):
        values = strides
    else:
        raise TypeError(
            f"{name} must be a number or a sequence of 1 or 2 numbers; received "
            f"{name}={strides!r} of type {type(strides).__name__}"
        )
    if len(values) not in (1, 2) or not all(_is_real_number(v) for v in values):
        raise ValueError(f"{name} must hold 1 or 2 real numbers; received {name}={strides!r}")
    floats = tuple(float(v) for v in values)
    if not all(math.isfinite(v) and v >= 1 for v in floats):
        raise ValueError(f"{name} must be finite and >= 1 per axis; received {name}={strides!r}")
    return floats


def check_smoothness_factor(smoothness_factor: Any) -> float:
    if not _is_real_number(smoothness_factor):
        raise TypeError(
            f"smoothness_factor must be a real number; received "
            f"smoothness_factor={smoothness_factor!r}"
        )
    value = float(smoothness_factor)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"smoothness_factor must be finite and >= 0; received "
            f"smoothness_factor={smoothness_factor!r}"
        )
    return value


def check_macs_budget(macs_budget: Any) -> float:
    """A budget of multiply-accumulates per image: a finite number > 0."""
    if not _is_real_number(macs_budget):
        raise TypeError(f"macs_budget must be a real number; received macs_budget={macs_budget!r}")
    if not (math.isfinite(float(macs_budget)) and float(macs_budget) > 0):
        raise ValueError(
            f"macs_budget must be finite and > 0; received macs_budget={macs_budget!r}"
        )
    return float(macs_budget)


def check_limits(lower: Any, upper: Any) -> tuple[float | None, float | None]:
    """``lower_limit_stride`` / ``upper_limit_stride``: None or finite numbers >= 1, ordered."""
    checked = []
    for name, value in (("lower_limit_stride", lower), ("upper_limit_stride", upper)):
        if value is None:
            checked.append(None)
            continue
        if not _is_real_number(value):
            raise TypeError(f"{name} must be None or a real number; received {name}={value!r}")
        if not (math.isfinite(float(value)) and float(value) >= 1):
            raise ValueError(f"{name} must be finite and >= 1; received {name}={value!r}")
        checked.append(float(value))
    low, high = checked
    if low is not None and high is not None and low > high:
        raise ValueError(
            "lower_limit_stride must be <= upper_limit_stride; received "
            f"lower_limit_stride={lower!r}, upper_limit_stride={upper!r}"
        )
    return low, high


def check_spatial_sizes(
    shape: Sequence[Any], data_format: str, *, allow_unknown: bool = False
) -> tuple[Any, Any]:
    """Rank 4 and spatial sizes of at least 2; returns ``(H, W)``. With ``allow_unknown``,
    an unknown (None) size is returned as None for the caller to read at run time."""
    if len(shape) != 4:
        layout = "(N, C, H, W)" if data_format == "channels_first" else "(N, H, W, C)"
        raise ValueError(
            f"x must be a rank-4 array {layout} for data_format={data_format!r}; received "
            f"an array of shape {tuple(shape)}"
        )
    sizes = tuple(shape[a] for a in spatial_axes(data_format))
    if allow_unknown and any(s is None for s in sizes):
        known = [int(s) for s in sizes if s is not None]
        if any(s < 2 for s in known):
            raise ValueError(
                f"x must have spatial sizes >= 2; received shape {tuple(shape)} "
                f"(data_format={data_format!r})"
            )
        return sizes[0], sizes[1]
    if any(s is None for s in sizes):
        raise ValueError(
            f"x must have static spatial sizes; received shape {tuple(shape)} "
            f"(data_format={data_format!r}). Inside tf.function a DiffStride output has a "
            "data-dependent size: put layers that accept unknown sizes after it, or run eagerly."
        )
    height, width = (int(s) for s in sizes)
    if height < 2 or width < 2:
        raise ValueError(
            f"x must have spatial sizes >= 2; received (H, W)={(height, width)} from shape "
            f"{tuple(shape)} (data_format={data_format!r})"
        )
    return height, width
