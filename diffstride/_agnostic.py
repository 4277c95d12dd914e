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
    "masked_crop_vjp",
    "projected_parameter",
    "ramp",
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

    def is_static(self, sizes: tuple[Size, Size]) -> bool:
        """Whether this window and the input ``sizes`` are ints (not symbolic sizes)."""
        return all(isinstance(n, int) for n in (*sizes, *vars(self).values()))


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
    inside: bool = False,
    xp: Namespace,
) -> tuple[Array, Array]:
    """The strides the layer acts with, one 0-d array per axis.

    Per axis ``S' = max(S, N / (N - R))`` as a straight-through projection (the forward pass
    uses ``S'``, the gradient reaches ``S`` unchanged, exactly as the original's in-place
    ``assign`` does), then a clip to ``[lower or 1, upper or float max]`` that stops the
    gradient outside the bounds. A shared stride (length 1) is projected against both minima
    and used on both axes, so its gradient is the sum of both. The ``inside`` ramp fits in the
    spectrum at any ``S >= 1``, so it skips the projection and only clips.
    """
    dtype = strides.dtype
    per_axis = [strides[0], strides[0]] if strides.shape[0] == 1 else [strides[0], strides[1]]
    if not inside:
        minima = _stride_minima(strides, sizes, smoothness_factor, xp=xp)
        if strides.shape[0] == 1:
            floor = _where_max(minima[0], minima[1], xp=xp)
            minima = [floor, floor]
        per_axis = [
            stride + stop_gradient(_where_max(stride, floor, xp=xp) - stride)
            for stride, floor in zip(per_axis, minima, strict=True)
        ]
    low = 1.0 if lower_limit_stride is None else float(lower_limit_stride)
    high = float(xp.finfo(dtype).max) if upper_limit_stride is None else float(upper_limit_stride)
    clipped = [_where_clip(stride, low, high, xp=xp) for stride in per_axis]
    return clipped[0], clipped[1]


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
    inside: bool = False,
    xp: Namespace,
) -> Array:
    """What a layer stores after a training call: ``max(S, N / (N - R))`` per axis (a shared
    stride against both minima), as the original's in-place ``assign``; a minimum that is not
    finite (``N == R``) is skipped rather than stored. With ``bounds``, also clipped to them,
    as a Keras constraint does after an optimizer step. The ``inside`` ramp has no minimum:
    only the clip applies. No gradient is meant to flow here."""
    if inside:
        return strides if bounds is None else _where_clip(strides, *bounds, xp=xp)
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


def ramp(
    threshold: Array,
    distances: Array,
    smoothness_factor: float,
    *,
    inside: bool = False,
    xp: Namespace,
) -> Array:
    """The adaptive-span mask ``clip((R + T - d) / R, 0, 1)``; ``R = 0`` is the hard limit.

    The expression keeps the original's order, ``(1 / R) * (R + T - d)``, so that the
    decision "mask > 0" is bit-identical to it in float32. As ``R -> 0`` the ramp becomes
    ``d <= T``, with a zero gradient: that is what ``R = 0`` computes here (the original
    divides by zero).

    ``inside`` lowers the threshold by ``R``: ``clip((T - d) / R, 0, 1)``. The original's ramp
    runs *beyond* ``T``, so its crop keeps about ``2R`` more rows and columns than the stride
    implies; the inside ramp ends at the stride's Nyquist edge, so the output is within one
    pixel of ``N / S`` (the size of the strided layer it replaces). ``R = 0`` is the same hard
    crop for both.
    """
    if smoothness_factor == 0:
        return xp.astype(distances <= threshold, threshold.dtype)
    if inside:
        value = (1.0 / smoothness_factor) * (threshold - distances)
    else:
        value = (1.0 / smoothness_factor) * (smoothness_factor + threshold - distances)
    return _where_clip(value, 0.0, 1.0, xp=xp)


def kept_counts(
    t_h: Array,
    t_w: Array,
    sizes: tuple[Size, Size],
    smoothness_factor: float,
    *,
    inside: bool = False,
    xp: Namespace,
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
        positive = ramp(threshold, distances, smoothness_factor, inside=inside, xp=xp) > 0
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
    mask_h: Array | None,
    mask_w: Array | None,
    window: Window,
    *,
    sizes: tuple[Size, Size],
    axes: tuple[int, int],
    xp: Namespace,
) -> tuple[Array, Array]:
    """The DiffStride forward pass given the masks on the kept bins and the crop window.

    ``rfftn`` over the spatial ``axes``, crop to ``window``, multiply by the separable mask
    (``None``: fixed spectral pooling, no mask), ``irfftn`` to ``window.output_size``.
    Returns the output and the cropped spectrum, which the VJP needs for the masks.
    """
    spectrum = crop(xp.fft.rfftn(x, axes=axes), window, axes, sizes[0], xp=xp)
    masked = spectrum
    if mask_h is not None:
        mask = _outer(mask_h, mask_w, axes=axes, ndim=len(x.shape), xp=xp)
        masked = spectrum * xp.astype(mask, _complex_dtype(mask.dtype, xp=xp))
    return xp.fft.irfftn(masked, s=window.output_size, axes=axes), spectrum


def masked_crop_vjp(
    cotangent: Array,
    spectrum: Array,
    mask_h: Array | None,
    mask_w: Array | None,
    window: Window,
    *,
    sizes: tuple[int, int],
    axes: tuple[int, int],
    needs: tuple[bool, ...] = (True, True, True),
    xp: Namespace,
) -> tuple[Array | None, Array | None, Array | None]:
    """Hand-written VJP of :func:`masked_crop`: ``(grad_x, grad_mask_h, grad_mask_w)``.

    Autodiff of the forward pass zero-fills a full spectrum for each crop slice, runs the
    ``rfftn`` backward as a complex FFT of the zero-padded full width, and stores every
    intermediate. This VJP makes one ``rfftn`` of the output's size, one row ``ifft`` on the
    kept columns and one ``irfft``, with a single zero-padded array:

    * the adjoint of ``irfftn`` to ``(h, w)`` is ``rfftn`` scaled per column by
      ``c / (h w)`` (``c = 1`` on the DC and Nyquist columns, 2 elsewhere);
    * the mask's gradient is ``Re(conj(spectrum) * that)``, summed over the batch and reduced
      against the other axis' mask;
    * the adjoint of the crop pads the rows with zeros (the columns are padded by
      ``irfftn`` itself), and the adjoint of ``rfftn`` is ``H W irfftn`` with the interior
      columns halved.

    ``needs`` says which gradients are wanted (``None`` is returned for the others). The
    sizes must be static (this runs where the backend's own shapes are known).
    """
    ndim = len(cotangent.shape)
    row_axis, col_axis = (a % ndim for a in axes)
    height, width = sizes
    h, w = window.output_size
    grad_masked = xp.fft.rfftn(cotangent, axes=axes)
    real = mask_h if mask_h is not None else xp.real(spectrum[(0,) * ndim])
    columns = _arange(window.cols, real, xp=xp)
    one, two, half = (_scalar(v, real, xp=xp) for v in (1.0, 2.0, 0.5))
    dc = columns == 0
    out_weight = xp.where(dc | (2 * columns == w), one, two) / float(h * w)
    grad_x = grad_mask_h = grad_mask_w = None
    if mask_h is not None and (needs[1] or needs[2]):
        batch_axes = tuple(a for a in range(ndim) if a not in (row_axis, col_axis))
        # Re(conj(a) b) as two real products: no conjugated copy of the spectrum.
        per_bin = xp.sum(xp.real(spectrum) * xp.real(grad_masked), axis=batch_axes)
        per_bin += xp.sum(xp.imag(spectrum) * xp.imag(grad_masked), axis=batch_axes)
        per_bin *= out_weight
        grad_mask_h = xp.sum(per_bin * mask_w, axis=1) if needs[1] else None
        grad_mask_w = xp.sum(per_bin * xp.reshape(mask_h, (-1, 1)), axis=0) if needs[2] else None
    if needs[0]:
        in_weight = xp.where(dc | (2 * columns == width), one, half) * float(height * width)
        col_scale = out_weight * in_weight
        if mask_h is None:
            ones = (1,) * (ndim - 1 - col_axis)
            scale = xp.reshape(col_scale, (-1, *ones))
        else:
            scale = _outer(mask_h, mask_w * col_scale, axes=axes, ndim=ndim, xp=xp)
        grad_masked *= xp.astype(scale, spectrum.dtype)  # in place where arrays allow it
        # Two 1-D inverses: the row transform runs on the kept columns only, and irfft pads
        # the columns itself (a 2-D irfftn of the padded spectrum took 1.6x as long in torch).
        # Rebinding one name frees each stage as the next is made: torch's peak fell 12%.
        grad_masked = _uncrop_rows(grad_masked, window, height, row_axis, xp=xp)
        grad_masked = xp.fft.ifft(grad_masked, axis=row_axis)
        grad_x = xp.fft.irfft(grad_masked, n=width, axis=col_axis)
    return grad_x, grad_mask_h, grad_mask_w


def _uncrop_rows(
    spectrum: Array, window: Window, height: int, axis: int, *, xp: Namespace
) -> Array:
    """Zero rows between the top and bottom blocks, back to ``height`` rows."""
    ndim = len(spectrum.shape)

    def rows(part: slice) -> Array:
        key = [slice(None)] * ndim
        key[axis] = part
        return spectrum[tuple(key)]

    shape = list(spectrum.shape)
    shape[axis] = height - window.top - window.bottom
    zeros = xp.zeros(tuple(shape), dtype=spectrum.dtype, device=_device(spectrum))
    return xp.concat(
        [rows(slice(None, window.top)), zeros, rows(slice(window.top, None))], axis=axis
    )


def window_masks(
    t_h: Array,
    t_w: Array,
    window: Window,
    sizes: tuple[Size, Size],
    smoothness_factor: float,
    *,
    inside: bool = False,
    xp: Namespace,
) -> tuple[Array, Array]:
    """The ramp on the kept rows (top block, then bottom block) and on the kept columns."""
    d_rows, d_cols = window_distances(sizes, window, like=t_h, xp=xp)
    return (
        ramp(t_h, d_rows, smoothness_factor, inside=inside, xp=xp),
        ramp(t_w, d_cols, smoothness_factor, inside=inside, xp=xp),
    )


def _outer(rows: Array, cols: Array, *, axes: tuple[int, int], ndim: int, xp: Namespace) -> Array:
    """Outer product shaped to broadcast against the spectrum (trailing channel axis or not)."""
    ones = (1,) * (ndim - 1 - (axes[1] % ndim))
    return xp.reshape(rows, (-1, 1, *ones)) * xp.reshape(cols, (1, -1, *ones))
