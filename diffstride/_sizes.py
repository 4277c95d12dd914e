"""Output sizes and crop windows from concrete values, in plain Python and numpy.

The crop of DiffStride is a function of the output size alone (see :func:`window_for_size`),
and the output size is a function of the concrete stride values. Computing it here, outside any
framework, lets jit users pass a static ``output_size`` and lets layers report their shapes.
The decision reuses the agnostic ramp with numpy as the namespace, in the input's precision,
so it is bit-identical to the mask > 0 test made inside any framework.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import array_api_compat.numpy as np_xp
import numpy as np

from diffstride import _agnostic
from diffstride._validation import (
    RANKS,
    check_limits,
    check_ramp,
    check_smoothness_factor,
    check_stride_values,
)

__all__ = ["output_size", "spectral_pooling_output_size"]

_FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_input_size(input_size: Any) -> tuple[int, ...]:
    """``input_size``: 1, 2 or 3 ints, each at least 2."""
    if (
        not isinstance(input_size, Sequence)
        or len(input_size) not in RANKS
        or not all(_is_int(v) for v in input_size)
    ):
        raise TypeError(
            "input_size must be a sequence of 1, 2 or 3 ints (one per spatial axis); received "
            f"input_size={input_size!r}"
        )
    sizes = tuple(int(v) for v in input_size)
    if any(n < 2 for n in sizes):
        raise ValueError(f"input_size must be >= 2 per axis; received input_size={input_size!r}")
    return sizes


def window_for_counts(counts: Sequence[int]) -> _agnostic.Window:
    """The window of kept counts ``(top, bottom)`` per height axis, then ``cols``: the
    inverse has ``top + bottom`` rows per height axis and ``2 * (cols - 1)`` columns. The
    counts are ints, or 0-d integer tensors where the crop is symbolic (TF graph mode)."""
    *rows, cols = counts
    blocks = tuple(zip(rows[::2], rows[1::2], strict=True))
    return _agnostic.Window(blocks, cols, (*(t + b for t, b in blocks), 2 * (cols - 1)))


def window_for_size(
    sizes: Sequence[int], size: Any, *, name: str = "output_size"
) -> _agnostic.Window:
    """The DiffStride window that produces ``size`` from an input of spatial ``sizes``.

    As the threshold grows, the original's layout adds bottom rows first, then top rows, so
    on a height axis ``bottom = min((h + 1) // 2, N // 2)`` and ``top = h - bottom``, and
    ``h`` must have the parity of ``N``; the last size must be even (the inverse real FFT
    has length ``2 * (cols - 1)``).
    """
    rank = len(sizes)
    if not isinstance(size, Sequence) or len(size) != rank or not all(_is_int(v) for v in size):
        raise TypeError(
            f"{name} must be None or a sequence of {rank} ints (one per spatial axis); "
            f"received {name}={size!r}"
        )
    wanted = [int(v) for v in size]
    *heights, width = sizes
    *h_out, w_out = wanted
    reachable = all(
        1 <= h <= n and h % 2 == n % 2 for h, n in zip(h_out, heights, strict=True)
    ) and (2 <= w_out <= 2 * (width // 2) and w_out % 2 == 0)
    if not reachable:
        rule = "".join(
            f"axis {i}: in [1, {n}] with the parity of {n}; " for i, n in enumerate(heights)
        )
        raise ValueError(
            f"{name} must be reachable from an input of size {tuple(sizes)} ({rule}last axis: "
            f"even in [2, {2 * (width // 2)}]); received {name}={size!r}"
        )
    counts: list[int] = []
    for h, n in zip(h_out, heights, strict=True):
        bottom = min((h + 1) // 2, n // 2)
        counts += [h - bottom, bottom]
    return window_for_counts([*counts, w_out // 2 + 1])


def full_window(sizes: Sequence[int]) -> _agnostic.Window:
    """``cropping=False``: every bin is kept (the inverse's last length is still even)."""
    *heights, width = sizes
    counts = [c for n in heights for c in (n - n // 2, n // 2)]
    return window_for_counts([*counts, width // 2 + 1])


def window_from_thresholds(
    thresholds: Sequence[Any], sizes: Sequence[int], smoothness_factor: float, *, inside: bool
) -> _agnostic.Window:
    """The crop from concrete thresholds (numpy 0-d arrays in the input's precision)."""
    counts = _agnostic.kept_counts(thresholds, sizes, smoothness_factor, inside=inside, xp=np_xp)
    return window_for_counts([int(c) for c in counts])


def concrete_window(
    stride_values: np.ndarray,
    sizes: Sequence[int],
    *,
    smoothness_factor: float,
    cropping: bool,
    lower_limit_stride: float | None,
    upper_limit_stride: float | None,
    inside: bool = False,
) -> _agnostic.Window:
    """The window from concrete strides (a float32 or float64 numpy array of length 1 or k)."""
    if not cropping:
        return full_window(sizes)
    thresholds = _agnostic.stride_thresholds(
        np.asarray(stride_values),
        sizes,
        stop_gradient=np.asarray,  # no gradient in numpy
        xp=np_xp,
        smoothness_factor=smoothness_factor,
        lower_limit_stride=lower_limit_stride,
        upper_limit_stride=upper_limit_stride,
        inside=inside,
    )
    return window_from_thresholds(thresholds, sizes, smoothness_factor, inside=inside)


def output_size(
    input_size: Sequence[int],
    strides: Any,
    *,
    smoothness_factor: float = 4.0,
    cropping: bool = True,
    lower_limit_stride: float | None = None,
    upper_limit_stride: float | None = None,
    dtype: str = "float32",
    ramp: str = "outside",
) -> tuple[int, ...]:
    """The spatial sizes DiffStride returns for an input of spatial sizes ``input_size``,
    without running it.

    Parameters
    ----------
    input_size
        One size per spatial axis (1, 2 or 3 of them), each at least 2.
    strides
        One number (shared stride) or one per spatial axis, each >= 1.
    smoothness_factor, cropping, lower_limit_stride, upper_limit_stride, ramp
        As for :func:`diffstride.diffstride`.
    dtype
        The input's precision, ``"float32"`` (default) or ``"float64"``; the crop is decided
        in it, as the original does.

    Examples
    --------
    >>> import diffstride
    >>> diffstride.output_size((32, 32), (2.0, 2.0))
    (24, 24)
    >>> diffstride.output_size((32, 32), 2.0, smoothness_factor=0.0)
    (18, 18)
    >>> diffstride.output_size((32, 32), (2.0, 2.0), ramp="inside")
    (16, 16)
    >>> diffstride.output_size((16000,), 4.0), diffstride.output_size((8, 32, 32), 2.0)
    ((4008,), (8, 24, 24))
    """
    sizes = check_input_size(input_size)
    values = check_stride_values(strides, rank=len(sizes))
    smoothness = check_smoothness_factor(smoothness_factor)
    low, high = check_limits(lower_limit_stride, upper_limit_stride)
    inside = check_ramp(ramp) == "inside"
    if dtype not in _FLOAT_DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64'; received dtype={dtype!r}")
    window = concrete_window(
        np.asarray(values, dtype=_FLOAT_DTYPES[dtype]),
        sizes,
        smoothness_factor=smoothness,
        cropping=bool(cropping),
        lower_limit_stride=low,
        upper_limit_stride=high,
        inside=inside,
    )
    return window.output_size


def _float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (ties to even), in plain Python arithmetic.

    The same number as ``float(np.float32(value))`` for the normal range, but it stays
    Python floats: ``torch.compile`` folds it into a constant, while it turns numpy scalars
    into tensors and cannot ``floor`` them. Rounding a correctly rounded float64 quotient of
    two float32 numbers to float32 gives the correctly rounded float32 quotient (53 >= 2 * 24
    + 2 bits), so ``_float32(a / b)`` is numpy's float32 division."""
    mantissa, exponent = math.frexp(value)
    return math.ldexp(round(mantissa * 2.0**24), exponent - 24)


def spectral_window(sizes: Sequence[int], strides: Sequence[float]) -> _agnostic.Window:
    """Fixed spectral pooling, as the original ``FixedSpectralPooling``.

    Per height axis ``h = N // S`` rounded down to even, on the last axis ``w = W // S``, each
    at least 2 (floor division in float32, as the original's float32 stride variable does);
    rows ``[:h/2]`` and ``[N - h/2:]``, columns ``[:w//2 + 1]``, inverse of length
    ``(.., h, w)`` (``w`` may be odd).
    """
    rank = len(sizes)
    per_axis = [strides[0]] * rank if len(strides) == 1 else list(strides)
    lengths = [
        max(math.floor(_float32(_float32(n) / _float32(s))), 2)
        for n, s in zip(sizes, per_axis, strict=True)
    ]
    heights = [max(h - h % 2, 2) for h in lengths[:-1]]
    width = lengths[-1]
    blocks = tuple((h // 2, h // 2) for h in heights)
    return _agnostic.Window(blocks, width // 2 + 1, (*heights, width))


def spectral_pooling_output_size(input_size: Sequence[int], strides: Any) -> tuple[int, ...]:
    """The spatial sizes of fixed spectral pooling for an input of spatial sizes
    ``input_size`` (1, 2 or 3 of them).

    >>> import diffstride
    >>> diffstride.spectral_pooling_output_size((33, 17), (2, 3))
    (16, 5)
    """
    sizes = check_input_size(input_size)
    return spectral_window(sizes, check_stride_values(strides, rank=len(sizes))).output_size
