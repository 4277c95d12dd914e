"""The DiffStride math, written once against the Python Array API standard.

Every function here takes the array namespace ``xp`` as a required keyword and uses nothing
outside the standard (``xp.fft`` included), so the same lines run on numpy, torch, jax,
array_api_strict and the small TensorFlow namespace of ``diffstride_backends.tensorflow``.
Framework-specific needs (stop-gradient, concrete values) arrive as arguments, never imports.

Numerics follow the authors' Keras layer (google-research/diffstride ``pooling.py``) so that
results and trained strides carry over:

* Height distances use the original's layout (see :func:`top_row_distances`), asymmetric
  for even heights and off by one for odd heights.
* Clips and maxima are written with ``where`` so that the gradient at ties goes where
  TensorFlow sends it (``clip_by_value`` is inclusive, ``maximum(a, b)`` favours ``a``).
  A framework's own ``clip``/``maximum`` splits ties differently and would move the stride
  gradients by tens of percent on integer thresholds.
* The spectrum is cropped *before* it is masked: the cropped-away bins carry a mask of exactly
  zero, so the result and every gradient are the same, and the multiply is smaller.
* The crop is two contiguous slices per spatial axis (never a gather) and is described by a
  :class:`Window`, which is a function of the output size alone.
* Spatial sizes are ints, except in TensorFlow graph mode after another DiffStride, where they
  are symbolic 0-d integer tensors; every size expression here works for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import device as _device

Array = Any
Namespace = Any
#: A spatial size: an int, or a 0-d integer array where it is symbolic (TF graph mode).
Size = Any

__all__ = [
    "Window",
    "bottom_row_distances",
    "crop",
    "effective_strides",
    "kept_counts",
    "masked_crop",
    "projected_parameter",
    "ramp",
    "spectral_crop",
    "thresholds",
    "top_row_distances",
    "window_distances",
    "window_masks",
]


@dataclass(frozen=True)
class Window:
    """Which part of a ``(H, W // 2 + 1)`` rfft spectrum is kept, and the inverse's size.

    Rows ``[:top]`` and ``[H - bottom:]``, columns ``[:cols]``; the inverse transform has
    length ``(height, width)``. Sizes are ints, or scalar tensors in TensorFlow graph mode.
    """

    top: Any
    bottom: Any
    cols: Any
    height: Any
    width: Any

    @property
    def output_size(self) -> tuple[Any, Any]:
        return (self.height, self.width)


def _scalar(value: float, like: Array, *, xp: Namespace) -> Array:
    """A 0-d array of ``like``'s dtype and device (scalars in ``where`` are not portable)."""
    return xp.asarray(value, dtype=like.dtype, device=_device(like))


def _as_float(value: Size, like: Array, *, xp: Namespace) -> Array:
    """An int, or a 0-d integer array (a symbolic size), as a 0-d array like ``like``."""
    if isinstance(value, (int, float)):
        return _scalar(value, like, xp=xp)
    return xp.astype(value, like.dtype)


def _arange(stop: Size, like: Array, *, xp: Namespace) -> Array:
    return xp.arange(stop, dtype=like.dtype, device=_device(like))


def top_row_distances(height: Size, like: Array, *, xp: Namespace) -> Array:
    """Frequency distances of the top block of rows, as the original lays them out.

    The original builds ``p = arange(H//2 + H%2)``, ``d = concat(reverse(p[H%2:]), p)`` and
    ``fftshift``-s the mask computed on ``d``. Read in spectrum order, that is a top block of
    ``H - H//2`` rows with distances ``min(i + H%2, H//2)`` (``0, 1, ..`` for even H; ``1, 2,
    .., m, m`` for odd H) and a bottom block of ``H//2`` rows whose distances, read from the
    *last* row up, are ``0, 1, ..`` (see :func:`bottom_row_distances`).
    """
    steps = _arange(height - height // 2, like, xp=xp) + _as_float(height % 2, like, xp=xp)
    return xp.minimum(steps, _as_float(height // 2, like, xp=xp))


def bottom_row_distances(count: Size, like: Array, *, xp: Namespace) -> Array:
    """Distances of the last ``count`` rows, in spectrum order: ``count - 1, .., 1, 0``."""
    return _as_float(count - 1, like, xp=xp) - _arange(count, like, xp=xp)


def _where_max(a: Array, b: Array, *, xp: Namespace) -> Array:
    """``maximum(a, b)`` whose gradient goes to ``a`` on ties, as ``tf.maximum`` does."""
    return xp.where(a >= b, a, b)


def _where_clip(v: Array, low: Any, high: Any, *, xp: Namespace) -> Array:
    """``clip(v, low, high)`` passing the gradient on both bounds, as ``tf.clip_by_value``."""
    low, high = _scalar(low, v, xp=xp), _scalar(high, v, xp=xp)
    return xp.where(v < low, low, xp.where(v > high, high, v))


def effective_strides(
    strides: Array,
    sizes: tuple[Size, Size],
    *,
    smoothness_factor: float,
    lower_limit_stride: float | None,
    upper_limit_stride: float | None,
    stop_gradient: Callable[[Array], Array],
    xp: Namespace,
) -> tuple[Array, Array]:
    """The strides the layer acts with, one 0-d array per axis.

    Per axis ``S' = max(S, N / (N - R))`` as a straight-through projection (the forward pass
    uses ``S'``, the gradient reaches ``S`` unchanged, exactly as the original's in-place
    ``assign`` does), then a clip to ``[lower or 1, upper or float max]`` that stops the
    gradient outside the bounds. A shared stride (length 1) is projected against both minima
    and used on both axes, so its gradient is the sum of both.
    """
    dtype = strides.dtype
    minima = _stride_minima(strides, sizes, smoothness_factor, xp=xp)
    if strides.shape[0] == 1:
        shared = strides[0]
        floor = _where_max(minima[0], minima[1], xp=xp)
        per_axis = [shared, shared]
        floors = [floor, floor]
    else:
        per_axis = [strides[0], strides[1]]
        floors = minima
    low = 1.0 if lower_limit_stride is None else float(lower_limit_stride)
    high = float(xp.finfo(dtype).max) if upper_limit_stride is None else float(upper_limit_stride)
    result = []
    for stride, floor in zip(per_axis, floors, strict=False):
        projected = stride + stop_gradient(_where_max(stride, floor, xp=xp) - stride)
        result.append(_where_clip(projected, low, high, xp=xp))
    return result[0], result[1]


def _stride_minima(
    strides: Array, sizes: tuple[Size, Size], smoothness_factor: float, *, xp: Namespace
) -> list[Array]:
    """``N / (N - R)`` per axis in the strides' precision, as the original; ``+inf`` at
    ``N == R`` (the original divides by zero there)."""
    minima = []
    for size in sizes:
        n = _as_float(size, strides, xp=xp)
        denominator = n - smoothness_factor
        at_zero = denominator == 0
        safe = xp.where(at_zero, _scalar(1.0, strides, xp=xp), denominator)
        minima.append(xp.where(at_zero, _scalar(float("inf"), strides, xp=xp), n / safe))
    return minima


def projected_parameter(
    strides: Array,
    sizes: tuple[Size, Size],
    *,
    smoothness_factor: float,
    bounds: tuple[float, float] | None,
    xp: Namespace,
) -> Array:
    """What a layer stores after a training call: ``max(S, N / (N - R))`` per axis (a shared
    stride against both minima), as the original's in-place ``assign``; a minimum that is not
    finite (``N == R``) is skipped rather than stored. With ``bounds``, also clipped to them,
    as a Keras constraint does after an optimizer step. No gradient is meant to flow here."""
    minima = _stride_minima(strides, sizes, smoothness_factor, xp=xp)
    if strides.shape[0] == 1:
        floors = xp.reshape(_where_max(minima[0], minima[1], xp=xp), (1,))
    else:
        floors = xp.stack(minima)
    projected = xp.where(xp.isfinite(floors) & (floors > strides), floors, strides)
    return projected if bounds is None else _where_clip(projected, *bounds, xp=xp)


def thresholds(
    stride_h: Array, stride_w: Array, sizes: tuple[Size, Size], *, xp: Namespace
) -> tuple[Array, Array]:
    """Mask thresholds ``T_h = max(H / S_h, 2) / 2`` and ``T_w = max(W / S_w, 2) / 2 + 1``."""
    height, width = (_as_float(n, stride_h, xp=xp) for n in sizes)
    two = _scalar(2.0, stride_h, xp=xp)
    t_h = _where_max(height / stride_h, two, xp=xp) / 2.0
    t_w = _where_max(width / stride_w, two, xp=xp) / 2.0 + 1.0
    return t_h, t_w


def ramp(threshold: Array, distances: Array, smoothness_factor: float, *, xp: Namespace) -> Array:
    """The adaptive-span mask ``clip((R + T - d) / R, 0, 1)``; ``R = 0`` is the hard limit.

    The expression keeps the original's order, ``(1 / R) * (R + T - d)``, so that the
    decision "mask > 0" is bit-identical to it in float32. As ``R -> 0`` the ramp becomes
    ``d <= T``, with a zero gradient: that is what ``R = 0`` computes here (the original
    divides by zero).
    """
    if smoothness_factor == 0:
        return xp.astype(distances <= threshold, threshold.dtype)
    value = (1.0 / smoothness_factor) * (smoothness_factor + threshold - distances)
    return _where_clip(value, 0.0, 1.0, xp=xp)


def kept_counts(
    t_h: Array, t_w: Array, sizes: tuple[Size, Size], smoothness_factor: float, *, xp: Namespace
) -> tuple[Array, Array, Array]:
    """How many top rows, bottom rows and columns have a mask > 0: ``(top, bottom, cols)``.

    Decided with the ramp itself, in the thresholds' precision, as the original does. Returns
    0-d integer arrays; the caller makes ints of them where the values are concrete.
    """
    height, width = sizes
    blocks = (
        (t_h, top_row_distances(height, t_h, xp=xp)),
        (t_h, _arange(height // 2, t_h, xp=xp)),  # bottom block, from the last row up
        (t_w, _arange(width // 2 + 1, t_w, xp=xp)),
    )
    counts = []
    for threshold, distances in blocks:
        positive = ramp(threshold, distances, smoothness_factor, xp=xp) > 0
        counts.append(xp.sum(xp.astype(positive, xp.int32)))
    return counts[0], counts[1], counts[2]


def window_distances(
    sizes: tuple[Size, Size], window: Window, *, like: Array, xp: Namespace
) -> tuple[Array, Array]:
    """Distances of the kept rows (top block, then bottom block) and kept columns, as
    arrays of ``like``'s dtype and device; the window's sizes may be symbolic (TF graph)."""
    rows = xp.concat(
        [
            top_row_distances(sizes[0], like, xp=xp)[: window.top],
            bottom_row_distances(window.bottom, like, xp=xp),
        ],
        axis=0,
    )
    return rows, _arange(window.cols, like, xp=xp)


def crop(
    spectrum: Array, window: Window, axes: tuple[int, int], height: Size, *, xp: Namespace
) -> Array:
    """Rows ``[:top]`` and ``[H - bottom:]``, columns ``[:cols]`` as two slices and a concat."""
    ndim = len(spectrum.shape)
    row_axis, col_axis = (a % ndim for a in axes)

    def index(rows: slice) -> tuple[slice, ...]:
        key = [slice(None)] * ndim
        key[row_axis] = rows
        key[col_axis] = slice(None, window.cols)
        return tuple(key)

    upper = spectrum[index(slice(None, window.top))]
    lower = spectrum[index(slice(height - window.bottom, None))]
    return xp.concat([upper, lower], axis=row_axis)


def _complex_dtype(real_dtype: Any, *, xp: Namespace) -> Any:
    return xp.complex64 if real_dtype == xp.float32 else xp.complex128


def masked_crop(
    x: Array,
    t_h: Array,
    t_w: Array,
    window: Window,
    *,
    sizes: tuple[Size, Size],
    smoothness_factor: float,
    axes: tuple[int, int],
    xp: Namespace,
) -> Array:
    """The DiffStride forward pass given thresholds and a crop window.

    ``rfftn`` over the spatial ``axes``, crop to ``window``, multiply by the separable ramp
    mask evaluated on the kept bins only, ``irfftn`` to ``window.output_size``.
    """
    spectrum = crop(xp.fft.rfftn(x, axes=axes), window, axes, sizes[0], xp=xp)
    mask_h, mask_w = window_masks(t_h, t_w, window, sizes, smoothness_factor, xp=xp)
    mask = _outer(mask_h, mask_w, axes=axes, ndim=len(x.shape), xp=xp)
    masked = spectrum * xp.astype(mask, _complex_dtype(t_h.dtype, xp=xp))
    return xp.fft.irfftn(masked, s=window.output_size, axes=axes)


def window_masks(
    t_h: Array,
    t_w: Array,
    window: Window,
    sizes: tuple[Size, Size],
    smoothness_factor: float,
    *,
    xp: Namespace,
) -> tuple[Array, Array]:
    """The ramp on the kept rows (top block, then bottom block) and on the kept columns."""
    d_rows, d_cols = window_distances(sizes, window, like=t_h, xp=xp)
    return (
        ramp(t_h, d_rows, smoothness_factor, xp=xp),
        ramp(t_w, d_cols, smoothness_factor, xp=xp),
    )


def _outer(rows: Array, cols: Array, *, axes: tuple[int, int], ndim: int, xp: Namespace) -> Array:
    """Outer product shaped to broadcast against the spectrum (trailing channel axis or not)."""
    ones = (1,) * (ndim - 1 - (axes[1] % ndim))
    return xp.reshape(rows, (-1, 1, *ones)) * xp.reshape(cols, (1, -1, *ones))


def spectral_crop(x: Array, window: Window, *, axes: tuple[int, int], xp: Namespace) -> Array:
    """Fixed spectral pooling: the same crop with no mask and no parameter."""
    spectrum = crop(xp.fft.rfftn(x, axes=axes), window, axes, x.shape[axes[0]], xp=xp)
    return xp.fft.irfftn(spectrum, s=window.output_size, axes=axes)
