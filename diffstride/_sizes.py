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
    check_limits,
    check_ramp,
    check_smoothness_factor,
    check_stride_values,
)

__all__ = ["output_size", "spectral_pooling_output_size"]

_FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


def _pair(input_size: Any) -> tuple[int, int]:
    if (
        not isinstance(input_size, Sequence)
        or len(input_size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in input_size)
    ):
        raise TypeError(
            f"input_size must be a pair of ints (H, W); received input_size={input_size!r}"
        )
    height, width = (int(v) for v in input_size)
    if height < 2 or width < 2:
        raise ValueError(f"input_size must be >= 2 per axis; received input_size={input_size!r}")
    return height, width


def window_for_counts(top: int, bottom: int, cols: int) -> _agnostic.Window:
    """The DiffStride window: the inverse has ``top + bottom`` rows, ``2 * (cols - 1)`` columns."""
    return _agnostic.Window(top, bottom, cols, top + bottom, 2 * (cols - 1))


def window_for_size(
    sizes: tuple[int, int], size: Any, *, name: str = "output_size"
) -> _agnostic.Window:
    """The DiffStride window that produces ``size = (h, w)`` from an ``(H, W)`` input.

    As the threshold grows, the original's layout adds bottom rows first, then top rows, so
    ``bottom = min((h + 1) // 2, H // 2)`` and ``top = h - bottom``; ``w`` must be even (the
    inverse real FFT has length ``2 * (cols - 1)``) and ``h`` must have the parity of ``H``.
    """
    height, width = sizes
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
    ):
        raise TypeError(f"{name} must be None or a pair of ints (h, w); received {name}={size!r}")
    h, w = (int(v) for v in size)
    if not (1 <= h <= height and h % 2 == height % 2 and 2 <= w <= 2 * (width // 2) and w % 2 == 0):
        raise ValueError(
            f"{name} must be reachable from an input of size {(height, width)}: h in "
            f"[1, {height}] with the parity of H, w even in [2, {2 * (width // 2)}]; "
            f"received {name}={size!r}"
        )
    bottom = min((h + 1) // 2, height // 2)
    return window_for_counts(h - bottom, bottom, w // 2 + 1)


def full_window(sizes: tuple[int, int]) -> _agnostic.Window:
    """``cropping=False``: every bin is kept (the inverse width is still even)."""
    height, width = sizes
    return window_for_counts(height - height // 2, height // 2, width // 2 + 1)


def concrete_window(
    stride_values: np.ndarray,
    sizes: tuple[int, int],
    *,
    smoothness_factor: float,
    cropping: bool,
    lower_limit_stride: float | None,
    upper_limit_stride: float | None,
    inside: bool = False,
) -> _agnostic.Window:
    """The window from concrete strides (a float32 or float64 numpy array of length 1 or 2)."""
    if not cropping:
        return full_window(sizes)
    strides = np.asarray(stride_values)
    s_h, s_w = _agnostic.effective_strides(
        strides,
        sizes,
        smoothness_factor=smoothness_factor,
        lower_limit_stride=lower_limit_stride,
        upper_limit_stride=upper_limit_stride,
        stop_gradient=lambda v: v,
        inside=inside,
        xp=np_xp,
    )
    t_h, t_w = _agnostic.thresholds(s_h, s_w, sizes, xp=np_xp)
    top, bottom, cols = _agnostic.kept_counts(
        t_h, t_w, sizes, smoothness_factor, inside=inside, xp=np_xp
    )
    return window_for_counts(int(top), int(bottom), int(cols))


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
) -> tuple[int, int]:
    """The ``(h, w)`` DiffStride returns for an ``(H, W)`` input, without running it.

    Parameters
    ----------
    input_size
        ``(H, W)``, each at least 2.
    strides
        One number (shared stride) or two, each >= 1.
    smoothness_factor, cropping, lower_limit_stride, upper_limit_stride
        As for :func:`diffstride.diffstride`.
    dtype
        The input's precision, ``"float32"`` (default) or ``"float64"``; the crop is decided
        in it, as the original does.
    ramp
        ``"outside"`` (the original's mask) or ``"inside"``, as for
        :func:`diffstride.diffstride`.

    Examples
    --------
    >>> import diffstride
    >>> diffstride.output_size((32, 32), (2.0, 2.0))
    (24, 24)
    >>> diffstride.output_size((32, 32), 2.0, smoothness_factor=0.0)
    (18, 18)
    >>> diffstride.output_size((32, 32), (2.0, 2.0), ramp="inside")
    (16, 16)
    """
    sizes = _pair(input_size)
    values = check_stride_values(strides)
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


def spectral_window(sizes: tuple[int, int], strides: tuple[float, ...]) -> _agnostic.Window:
    """Fixed spectral pooling, as the original ``FixedSpectralPooling``.

    ``h = H // S_h`` rounded down to even and ``w = W // S_w``, each at least 2 (floor division
    in float32, as the original's float32 stride variable does); rows ``[:h/2]`` and
    ``[H - h/2:]``, columns ``[:w//2 + 1]``, inverse of length ``(h, w)`` (``w`` may be odd).
    """
    height, width = sizes
    s_h, s_w = (strides[0], strides[0]) if len(strides) == 1 else strides
    h = math.floor(_float32(_float32(height) / _float32(s_h)))
    h -= h % 2
    w = math.floor(_float32(_float32(width) / _float32(s_w)))
    h, w = max(h, 2), max(w, 2)
    return _agnostic.Window(h // 2, h // 2, w // 2 + 1, h, w)


def spectral_pooling_output_size(input_size: Sequence[int], strides: Any) -> tuple[int, int]:
    """The ``(h, w)`` of fixed spectral pooling for an ``(H, W)`` input.

    >>> import diffstride
    >>> diffstride.spectral_pooling_output_size((33, 17), (2, 3))
    (16, 5)
    """
    return spectral_window(_pair(input_size), check_stride_values(strides)).output_size
