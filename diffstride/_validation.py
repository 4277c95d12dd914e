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
    "channel_axis",
    "check_data_format",
    "check_input",
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
#: The numbers of spatial axes a layer acts on.
RANKS = (1, 2, 3)


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


def spatial_axes(data_format: str, ndim: int = 4) -> tuple[int, ...]:
    """The spatial axes of an ``ndim`` input: ``(N, C, *spatial)`` or ``(N, *spatial, C)``."""
    first = 2 if check_data_format(data_format) == "channels_first" else 1
    return tuple(range(first, first + ndim - 2))


def channel_axis(data_format: str, ndim: int) -> int:
    return 1 if data_format == "channels_first" else ndim - 1


def _is_real_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_stride_values(
    strides: Any, *, rank: int | None = None, name: str = "strides"
) -> tuple[float, ...]:
    """Concrete strides: one number (shared) or one per spatial axis (``rank`` of them; 1 to
    3 when the rank is not known yet), each finite and >= 1."""
    if _is_real_number(strides):
        values: Sequence[Any] = (strides,)
    elif isinstance(strides, Sequence) and not isinstance(strides, str):
        values = strides
    else:
        raise TypeError(
            f"{name} must be a number or a sequence of numbers; received "
            f"{name}={strides!r} of type {type(strides).__name__}"
        )
    lengths = (1, rank) if rank is not None else (1, *RANKS)
    if len(values) not in lengths or not all(_is_real_number(v) for v in values):
        expected = {None: "1, 2 or 3", 1: "1"}.get(rank, f"1 (shared) or {rank}")
        raise ValueError(
            f"{name} must hold {expected} real numbers, one per spatial axis; received "
            f"{name}={strides!r}"
        )
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


def check_macs_budget(macs_budget: Any, name: str = "macs_budget") -> float:
    """A budget of multiply-accumulates per image: a finite number > 0 (``name``: the
    argument's name in the caller's signature)."""
    if not _is_real_number(macs_budget):
        raise TypeError(f"{name} must be a real number; received {name}={macs_budget!r}")
    if not (math.isfinite(float(macs_budget)) and float(macs_budget) > 0):
        raise ValueError(f"{name} must be finite and > 0; received {name}={macs_budget!r}")
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


def _layout(data_format: str, rank: int) -> str:
    spatial = ("W",) if rank == 1 else ("H", "W") if rank == 2 else ("D", "H", "W")
    inner = ("C", *spatial) if data_format == "channels_first" else (*spatial, "C")
    return "(" + ", ".join(("N", *inner)) + ")"


def check_spatial_sizes(
    shape: Sequence[Any], data_format: str, *, allow_unknown: bool = False, rank: int | None = None
) -> tuple[Any, ...]:
    """Rank 3, 4 or 5 (1 to 3 spatial axes; exactly ``rank`` where given) and spatial sizes
    of at least 2; returns the spatial sizes. With ``allow_unknown``, an unknown (None) size
    is returned as None for the caller to read at run time."""
    spatial_rank = len(shape) - 2
    if (rank is not None and spatial_rank != rank) or spatial_rank not in RANKS:
        ranks = (rank,) if rank is not None else RANKS
        expected = " or ".join(f"rank-{k + 2} {_layout(data_format, k)}" for k in ranks)
        raise ValueError(
            f"x must be a {expected} array for data_format={data_format!r}; received an array "
            f"of shape {tuple(shape)}"
        )
    sizes = tuple(shape[a] for a in spatial_axes(data_format, len(shape)))
    if any(s is None for s in sizes) and not allow_unknown:
        raise ValueError(
            f"x must have static spatial sizes; received shape {tuple(shape)} "
            f"(data_format={data_format!r}). Inside tf.function a DiffStride output has a "
            "data-dependent size: put layers that accept unknown sizes after it, or run eagerly."
        )
    if any(s is not None and int(s) < 2 for s in sizes):
        raise ValueError(
            f"x must have spatial sizes >= 2; received shape {tuple(shape)} "
            f"(data_format={data_format!r})"
        )
    return tuple(None if s is None else int(s) for s in sizes)


def check_input(x: Any, data_format: str, backend: Any, *, rank: int | None = None) -> tuple:
    """The spatial sizes of ``x`` after checking its dtype, rank and sizes (once per call);
    where the backend allows dynamic shapes (TensorFlow graph mode), an unknown size is read
    at run time as a 0-d integer tensor. Static sizes that passed are kept (one look-up)."""
    key = known = None
    if not backend.tracing():  # a tracer would trace the look-up (dynamo hashes no dtype)
        try:
            key = (backend, x.dtype, tuple(x.shape), data_format, rank)
            known = _CHECKED.get(key)
        except (TypeError, ValueError):  # a symbolic size or rank: checked below
            key = None
    if known is not None:
        return known
    if not backend.namespace().isdtype(x.dtype, "real floating"):
        raise TypeError(f"x must have a real floating dtype; received dtype={x.dtype}")
    shape = tuple(x.shape)
    sizes = check_spatial_sizes(shape, data_format, allow_unknown=backend.dynamic_shapes, rank=rank)
    if key is not None and None not in sizes:
        if len(_CHECKED) >= 256:
            _CHECKED.clear()
        _CHECKED[key] = sizes
        return sizes
    axes = spatial_axes(data_format, len(shape))
    return tuple(
        backend.size(x, axis) if size is None else size
        for size, axis in zip(sizes, axes, strict=True)
    )


#: The spatial sizes of inputs that passed :func:`check_input`, by backend, dtype, shape,
#: layout and rank.
_CHECKED: dict[tuple[Any, ...], tuple[int, ...]] = {}
