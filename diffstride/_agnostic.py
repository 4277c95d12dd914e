"""The DiffStride math, written once against the Python Array API standard, for k spatial axes.

Every function here takes the array namespace ``xp`` as a required keyword and uses nothing
outside the standard (``xp.fft`` included), so the same lines run on numpy, torch, jax,
array_api_strict and the small TensorFlow namespace of ``diffstride_backends.tensorflow``.
Framework-specific needs (stop-gradient, concrete values) arrive as arguments, never imports.

One rule covers 1, 2 and 3 spatial axes and leaves every 2-D result of the original unchanged:
every spatial axis but the last follows the 2-D layer's *height* rule (a full FFT, the
original's distance layout, threshold ``max(N / S, 2) / 2``, kept rows from a top and a bottom
block); the last follows its *width* rule (an rfft, threshold ``max(N / S, 2) / 2 + 1``,
inverse length ``2 * (kept - 1)``).

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
* The crop is two contiguous slices per height axis and one on the last axis (never a
  gather), described by a :class:`Window`, which is a function of the output size alone.
* Spatial sizes are ints, except in TensorFlow graph mode after another DiffStride, where they
  are symbolic 0-d integer tensors; every size expression here works for both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from array_api_compat import device as _compat_device

Array = Any
Namespace = Any
#: A spatial size: an int, or a 0-d integer array where it is symbolic (TF graph mode).
Size = Any
Sizes = Sequence[Size]

__all__ = [
    "Window",
    "bottom_row_distances",
    "crop",
    "crop_and_mask",
    "crop_keys",
    "device_of",
    "effective_strides",
    "fused_constants",
    "fused_vjp",
    "kept_counts",
    "mask_jacobians",
    "masked_crop",
    "masked_crop_vjp",
    "projected_parameter",
    "ramp",
    "spectral_window",
    "stride_thresholds",
    "stride_vjp",
    "thresholds",
    "top_row_distances",
    "window_distances",
    "window_masks",
]


@dataclass(frozen=True)
class Window:
    """Which part of an rfft spectrum over k spatial axes is kept, and the inverse's size.

    On each axis but the last, rows ``[:top]`` and ``[N - bottom:]`` (``blocks`` holds one
    ``(top, bottom)`` pair per such axis); on the last axis, columns ``[:cols]``. The inverse
    transform has the lengths ``output_size``. Sizes are ints, or scalar tensors in TensorFlow
    graph mode.
    """

    blocks: tuple[tuple[Any, Any], ...]
    cols: Any
    output_size: tuple[Any, ...]

    def is_static(self, sizes: Sizes) -> bool:
        """Whether this window and the input ``sizes`` are ints (not symbolic sizes)."""
        values = (*sizes, *(n for block in self.blocks for n in block), self.cols)
        return all(isinstance(n, int) for n in (*values, *self.output_size))


def device_of(x: Array) -> Any:
    """The device of ``x``, for the arrays the core creates beside it; ``None`` (the
    namespace's default device) for an array type without a ``device`` attribute."""
    try:
        return _compat_device(x)
    except AttributeError:
        return None


def _scalar(value: float, like: Array, *, xp: Namespace) -> Array:
    """A 0-d array of ``like``'s dtype and device (scalars in ``where`` are not portable)."""
    return xp.asarray(value, dtype=like.dtype, device=device_of(like))


def _as_float(value: Size, like: Array, *, xp: Namespace) -> Array:
    """An int, or a 0-d integer array (a symbolic size), as a 0-d array like ``like``."""
    if isinstance(value, (int, float)):
        return _scalar(value, like, xp=xp)
    return xp.astype(value, like.dtype)


def _arange(stop: Size, like: Array, *, xp: Namespace) -> Array:
    return xp.arange(stop, dtype=like.dtype, device=device_of(like))


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


def _bounds(
    lower_limit_stride: float | None, upper_limit_stride: float | None, dtype: Any, *, xp: Any
) -> tuple[float, float]:
    low = 1.0 if lower_limit_stride is None else float(lower_limit_stride)
    high = float(xp.finfo(dtype).max) if upper_limit_stride is None else float(upper_limit_stride)
    return low, high


def _per_axis(strides: Array, rank: int) -> list[Array]:
    """One 0-d array per spatial axis: a shared stride (length 1) is used on every axis."""
    return [strides[0] if strides.shape[0] == 1 else strides[i] for i in range(rank)]


def _shared_floor(minima: list[Array], *, xp: Namespace) -> Array:
    """The largest minimum, for a shared stride (ties go to the first axis, as the original)."""
    floor = minima[0]
    for minimum in minima[1:]:
        floor = _where_max(floor, minimum, xp=xp)
    return floor


def _unclipped_strides(
    strides: Array,
    sizes: Sizes,
    *,
    smoothness_factor: float,
    stop_gradient: Callable[[Array], Array],
    inside: bool,
    xp: Namespace,
) -> list[Array]:
    """The strides after the straight-through projection, before the limits' clip."""
    per_axis = _per_axis(strides, len(sizes))
    if inside:
        return per_axis
    minima = _stride_minima(strides, sizes, smoothness_factor, xp=xp)
    if strides.shape[0] == 1:
        minima = [_shared_floor(minima, xp=xp)] * len(sizes)
    return [
        stride + stop_gradient(_where_max(stride, floor, xp=xp) - stride)
        for stride, floor in zip(per_axis, minima, strict=True)
    ]


def effective_strides(
    strides: Array,
    sizes: Sizes,
    *,
    smoothness_factor: float,
    lower_limit_stride: float | None,
    upper_limit_stride: float | None,
    stop_gradient: Callable[[Array], Array],
    inside: bool = False,
    xp: Namespace,
) -> tuple[Array, ...]:
    """The strides the layer acts with, one 0-d array per spatial axis.

    Per axis ``S' = max(S, N / (N - R))`` as a straight-through projection (the forward pass
    uses ``S'``, the gradient reaches ``S`` unchanged, exactly as the original's in-place
    ``assign`` does), then a clip to ``[lower or 1, upper or float max]`` that stops the
    gradient outside the bounds. A shared stride (length 1) is projected against every
    axis' minimum and used on every axis, so its gradient is the sum over the axes. The
    ``inside`` ramp fits in the spectrum at any ``S >= 1``, so it skips the projection.
    """
    low, high = _bounds(lower_limit_stride, upper_limit_stride, strides.dtype, xp=xp)
    unclipped = _unclipped_strides(
        strides,
        sizes,
        smoothness_factor=smoothness_factor,
        stop_gradient=stop_gradient,
        inside=inside,
        xp=xp,
    )
    return tuple(_where_clip(stride, low, high, xp=xp) for stride in unclipped)


def _stride_minima(
    strides: Array, sizes: Sizes, smoothness_factor: float, *, xp: Namespace
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
    sizes: Sizes,
    *,
    smoothness_factor: float,
    bounds: tuple[float, float] | None,
    inside: bool = False,
    xp: Namespace,
) -> Array:
    """What a layer stores after a training call: ``max(S, N / (N - R))`` per axis (a shared
    stride against every axis' minimum), as the original's in-place ``assign``; a minimum
    that is not finite (``N == R``) is skipped rather than stored. With ``bounds``, also
    clipped to them, as a Keras constraint does after an optimizer step. The ``inside`` ramp
    has no minimum: only the clip applies. No gradient is meant to flow here."""
    if inside:
        return strides if bounds is None else _where_clip(strides, *bounds, xp=xp)
    minima = _stride_minima(strides, sizes, smoothness_factor, xp=xp)
    if strides.shape[0] == 1:
        floors = xp.reshape(_shared_floor(minima, xp=xp), (1,))
    else:
        floors = xp.stack(minima)
    projected = xp.where(xp.isfinite(floors) & (floors > strides), floors, strides)
    return projected if bounds is None else _where_clip(projected, *bounds, xp=xp)


def stride_thresholds(
    strides: Array,
    sizes: Sizes,
    *,
    stop_gradient: Callable[[Array], Array],
    xp: Namespace,
    **rule: Any,
) -> tuple[Array, ...]:
    """The masks' thresholds from the strides as given: :func:`thresholds` of
    :func:`effective_strides` (``rule``: its smoothness factor, limits and ramp)."""
    effective = effective_strides(strides, sizes, stop_gradient=stop_gradient, xp=xp, **rule)
    return thresholds(effective, sizes, xp=xp)


def thresholds(strides: Sequence[Array], sizes: Sizes, *, xp: Namespace) -> tuple[Array, ...]:
    """Mask thresholds per axis: ``max(N / S, 2) / 2``, plus 1 on the last axis."""
    two = _scalar(2.0, strides[0], xp=xp)
    result = [
        _where_max(_as_float(n, s, xp=xp) / s, two, xp=xp) / 2.0
        for n, s in zip(sizes, strides, strict=True)
    ]
    result[-1] = result[-1] + 1.0
    return tuple(result)


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
    runs *beyond* ``T``, so its crop keeps about ``2R`` more bins per axis than the stride
    implies; the inside ramp ends at the stride's Nyquist edge, so the output is within one
    pixel of ``N / S`` (the size of the strided layer it replaces). ``R = 0`` is the same hard
    crop for both.
    """
    if smoothness_factor == 0:
        return xp.astype(distances <= threshold, threshold.dtype)
    return _where_clip(
        _ramp_value(threshold, distances, smoothness_factor, inside), 0.0, 1.0, xp=xp
    )


def _ramp_value(threshold: Array, distances: Array, smoothness_factor: float, inside: bool) -> Any:
    offset = threshold if inside else smoothness_factor + threshold
    return (1.0 / smoothness_factor) * (offset - distances)


def _axis_distances(size: Size, like: Array, *, last: bool, xp: Namespace) -> tuple[Array, ...]:
    """Every bin's distance on one axis: ``(top block, bottom block from the last row up)``
    for a height axis, ``(columns,)`` for the last (rfft) axis."""
    if last:
        return (_arange(size // 2 + 1, like, xp=xp),)
    return top_row_distances(size, like, xp=xp), _arange(size // 2, like, xp=xp)


def kept_counts(
    thresholds: Sequence[Array],
    sizes: Sizes,
    smoothness_factor: float,
    *,
    inside: bool = False,
    xp: Namespace,
) -> tuple[Array, ...]:
    """How many bins have a mask > 0: ``(top, bottom)`` per height axis, then the columns.

    Decided with the ramp itself, in the thresholds' precision, as the original does. Returns
    0-d integer arrays; the caller makes ints of them where the values are concrete.
    """
    counts = []
    for axis, (threshold, size) in enumerate(zip(thresholds, sizes, strict=True)):
        last = axis == len(sizes) - 1
        for distances in _axis_distances(size, threshold, last=last, xp=xp):
            positive = ramp(threshold, distances, smoothness_factor, inside=inside, xp=xp) > 0
            counts.append(xp.sum(xp.astype(positive, xp.int32)))
    return tuple(counts)


def spectral_window(sizes: Sizes, strides: Sequence[float], *, xp: Namespace) -> Window:
    """Fixed spectral pooling's window where spatial sizes are symbolic (TF graph mode): the
    rule of ``_sizes.spectral_window`` (lengths ``floor(N / S)`` in float32, at least 2, even
    on the height axes), written on 0-d integer arrays."""
    per_axis = [strides[0]] * len(sizes) if len(strides) == 1 else list(strides)
    two = xp.asarray(2, dtype=xp.int32)

    def at_least_two(length: Array) -> Array:
        return xp.where(length >= two, length, two)

    lengths = []
    for size, stride in zip(sizes, per_axis, strict=True):
        quotient = xp.astype(size, xp.float32) / xp.asarray(stride, dtype=xp.float32)
        lengths.append(at_least_two(xp.astype(quotient // 1, xp.int32)))
    heights = [at_least_two(h - h % 2) for h in lengths[:-1]]
    width = lengths[-1]
    return Window(tuple((h // 2, h // 2) for h in heights), width // 2 + 1, (*heights, width))


def window_distances(
    sizes: Sizes, window: Window, *, like: Array, xp: Namespace
) -> tuple[Array, ...]:
    """Distances of the kept bins per axis (top block, then bottom block; the columns last),
    as arrays of ``like``'s dtype and device; the window's sizes may be symbolic (TF graph)."""
    rows = [
        xp.concat(
            [
                top_row_distances(size, like, xp=xp)[:top],
                bottom_row_distances(bottom, like, xp=xp),
            ],
            axis=0,
        )
        for size, (top, bottom) in zip(sizes, window.blocks, strict=False)
    ]
    return (*rows, _arange(window.cols, like, xp=xp))


def window_masks(
    thresholds: Sequence[Array],
    window: Window,
    sizes: Sizes,
    smoothness_factor: float,
    *,
    inside: bool = False,
    xp: Namespace,
) -> tuple[Array, ...]:
    """The ramp on the kept bins of each axis (see :func:`window_distances`)."""
    distances = window_distances(sizes, window, like=thresholds[0], xp=xp)
    return tuple(
        ramp(t, d, smoothness_factor, inside=inside, xp=xp)
        for t, d in zip(thresholds, distances, strict=True)
    )


def _key(ndim: int, axis: int, part: slice, extra: dict[int, slice] | None = None) -> tuple:
    key = [slice(None)] * ndim
    for other, other_part in (extra or {}).items():
        key[other] = other_part
    key[axis] = part
    return tuple(key)


def crop_keys(ndim: int, window: Window, axes: Sequence[int], sizes: Sizes) -> tuple:
    """The slices of :func:`crop` on an ``ndim`` spectrum: per height axis ``(axis, top
    block, bottom block)``; one axis, ``(axis, columns, None)``. Plain Python: a caller whose
    sizes are static may make them once."""
    axes = [a % ndim for a in axes]
    columns = {axes[-1]: slice(None, window.cols)}
    if len(axes) == 1:
        return ((axes[0], _key(ndim, axes[0], slice(None, window.cols)), None),)
    keys = []
    for axis, size, (top, bottom) in zip(axes, sizes, window.blocks, strict=False):
        upper = _key(ndim, axis, slice(None, top), columns)
        keys.append((axis, upper, _key(ndim, axis, slice(size - bottom, None), columns)))
        columns = {}
    return tuple(keys)


def crop(
    spectrum: Array,
    window: Window,
    axes: Sequence[int],
    sizes: Sizes,
    *,
    xp: Any,
    keys: tuple | None = None,
) -> Array:
    """Rows ``[:top]`` and ``[N - bottom:]`` per height axis and columns ``[:cols]``: two
    slices and a concat per height axis (the column slice rides on the first one);
    ``keys``: :func:`crop_keys`, where the caller made them."""
    if keys is None:
        keys = crop_keys(len(spectrum.shape), window, axes, sizes)
    for axis, upper, lower in keys:
        if lower is None:
            return spectrum[upper]
        spectrum = xp.concat([spectrum[upper], spectrum[lower]], axis=axis)
    return spectrum


def _complex_dtype(real_dtype: Any, *, xp: Namespace) -> Any:
    return xp.complex64 if real_dtype == xp.float32 else xp.complex128


def _outer(masks: Sequence[Array], *, axes: Sequence[int], ndim: int, xp: Namespace) -> Array:
    """The separable mask shaped to broadcast against the spectrum (channels after the
    spatial axes or not)."""
    rank = len(masks)
    ones = (1,) * (ndim - 1 - (axes[-1] % ndim))
    product = None
    for axis, mask in enumerate(masks):
        shape = [1] * rank
        shape[axis] = -1
        factor = xp.reshape(mask, (*shape, *ones))
        product = factor if product is None else product * factor
    return product


def masked_crop(
    x: Array,
    masks: Sequence[Array] | None,
    window: Window,
    *,
    sizes: Sizes,
    axes: Sequence[int],
    xp: Namespace,
) -> tuple[Array, Array]:
    """The DiffStride forward pass given the masks on the kept bins and the crop window.

    ``rfftn`` over the spatial ``axes``, crop to ``window``, multiply by the separable mask
    (``None``: fixed spectral pooling, no mask), ``irfftn`` to ``window.output_size``.
    Returns the output and the cropped spectrum, which the VJP needs for the masks.
    """
    mask = None
    if masks is not None:
        mask = _outer(masks, axes=axes, ndim=len(x.shape), xp=xp)
        mask = xp.astype(mask, _complex_dtype(mask.dtype, xp=xp))
    return crop_and_mask(x, mask, window, sizes=sizes, axes=axes, xp=xp)


def crop_and_mask(
    x: Array,
    mask: Array | None,
    window: Window,
    *,
    sizes: Sizes,
    axes: Sequence[int],
    xp: Namespace,
    keys: tuple | None = None,
) -> tuple[Array, Array]:
    """:func:`masked_crop` given the whole mask on the kept bins, complex and shaped to
    broadcast against the spectrum (``None``: no mask); ``keys`` as for :func:`crop`."""
    axes = tuple(axes)
    spectrum = crop(xp.fft.rfftn(x, axes=axes), window, axes, sizes, xp=xp, keys=keys)
    masked = spectrum if mask is None else spectrum * mask
    return xp.fft.irfftn(masked, s=tuple(window.output_size), axes=axes), spectrum


def _product(values: Sequence[int]) -> int:
    result = 1
    for value in values:
        result *= int(value)
    return result


def _column_weights(
    window: Window, sizes: Sequence[int], *, like: Array, xp: Namespace
) -> tuple[Array, Array]:
    """Per kept column: the adjoint of ``irfftn`` to the output size (``c / prod(output)``,
    ``c = 1`` on the DC and Nyquist columns, 2 elsewhere), and that times the adjoint of
    ``rfftn`` of the input (``prod(sizes)``, the interior columns halved)."""
    columns = _arange(window.cols, like, xp=xp)
    one, two, half = (_scalar(v, like, xp=xp) for v in (1.0, 2.0, 0.5))
    dc = columns == 0
    out_weight = xp.where(dc | (2 * columns == window.output_size[-1]), one, two) / float(
        _product(window.output_size)
    )
    in_weight = xp.where(dc | (2 * columns == sizes[-1]), one, half) * float(_product(sizes))
    return out_weight, out_weight * in_weight


def _per_bin(spectrum: Array, grad_masked: Array, axes: Sequence[int], *, xp: Namespace) -> Array:
    """``Re(conj(spectrum) * grad_masked)`` summed over the batch axes: one value per kept
    bin, the spatial axes in order."""
    ndim = len(spectrum.shape)
    batch_axes = tuple(a for a in range(ndim) if a not in axes)
    return xp.sum(xp.real(xp.conj(spectrum) * grad_masked), axis=batch_axes)


def _adjoint_crop_transform(
    grad_masked: Array, window: Window, sizes: Sequence[int], axes: Sequence[int], *, xp: Namespace
) -> Array:
    """The adjoint of the crop and the ``rfftn`` applied to a scaled spectrum gradient: one
    ``ifft`` per height axis (each on the kept bins of the axes not yet restored, after
    padding that axis with zeros) and one ``irfft``, which pads the columns itself.
    Rebinding one name frees each stage early."""
    for axis, size, block in zip(axes, sizes, window.blocks, strict=False):
        grad_masked = _uncrop(grad_masked, block, size, axis, xp=xp)
        grad_masked = xp.fft.ifft(grad_masked, axis=axis)
    return xp.fft.irfft(grad_masked, n=sizes[-1], axis=axes[-1])


def masked_crop_vjp(
    cotangent: Array,
    spectrum: Array,
    masks: Sequence[Array] | None,
    window: Window,
    *,
    sizes: Sequence[int],
    axes: Sequence[int],
    needs: Sequence[bool] | None = None,
    xp: Namespace,
) -> tuple[Array | None, ...]:
    """Hand-written VJP of :func:`masked_crop`: ``(grad_x, grad_mask_0, .., grad_mask_last)``.

    Autodiff of the forward pass zero-fills a full spectrum for each crop slice, runs the
    ``rfftn`` backward as a complex FFT of the zero-padded full width, and stores every
    intermediate. This VJP makes one ``rfftn`` of the output's size, one ``ifft`` per height
    axis (each on the kept bins of the axes not yet restored) and one ``irfft``:

    * the adjoint of ``irfftn`` to the output size is ``rfftn`` scaled per column by
      ``c / prod(output_size)`` (``c = 1`` on the DC and Nyquist columns, 2 elsewhere);
    * a mask's gradient is ``Re(conj(spectrum) * that)``, summed over the batch and reduced
      against the other axes' masks;
    * the adjoint of the crop pads each height axis with zeros (the columns are padded by
      ``irfft`` itself), and the adjoint of ``rfftn`` is ``prod(sizes) irfftn`` with the
      interior columns halved.

    ``needs`` says which of ``(x, *masks)`` want a gradient (``None`` is returned for the
    others; default: all). The sizes must be static (this runs where the shapes are known).
    """
    ndim = len(cotangent.shape)
    axes = [a % ndim for a in axes]
    rank = len(axes)
    needs = tuple(needs) if needs is not None else (True,) * (rank + 1)
    grad_masked = xp.fft.rfftn(cotangent, axes=tuple(axes))
    real = masks[0] if masks is not None else xp.real(spectrum[(0,) * ndim])
    out_weight, col_scale = _column_weights(window, sizes, like=real, xp=xp)
    grads: list[Array | None] = [None] * (rank + 1)
    if masks is not None and any(needs[1:]):
        per_bin = _per_bin(spectrum, grad_masked, axes, xp=xp) * out_weight
        for axis in range(rank):
            if needs[axis + 1]:
                others = [m if i != axis else _scalar(1.0, m, xp=xp) for i, m in enumerate(masks)]
                weighted = per_bin * _outer(others, axes=list(range(rank)), ndim=rank, xp=xp)
                reduced = tuple(i for i in range(rank) if i != axis)
                grads[axis + 1] = xp.sum(weighted, axis=reduced) if reduced else weighted
    if needs[0]:
        if masks is None:
            ones = (1,) * (ndim - 1 - axes[-1])
            scale = xp.reshape(col_scale, (-1, *ones))
        else:
            scale = _outer([*masks[:-1], masks[-1] * col_scale], axes=axes, ndim=ndim, xp=xp)
        grad_masked *= xp.astype(scale, spectrum.dtype)  # in place where arrays allow it
        grads[0] = _adjoint_crop_transform(grad_masked, window, sizes, axes, xp=xp)
    return tuple(grads)


def fused_constants(
    masks: Sequence[Array],
    jacobians: Sequence[Array],
    window: Window,
    sizes: Sequence[int],
    *,
    axes: Sequence[int],
    ndim: int,
    shared: bool,
    xp: Namespace,
) -> tuple[Array, Array, Array]:
    """What :func:`fused_vjp` needs besides the spectrum, from the masks and their
    :func:`mask_jacobians` (arrays that depend on the strides' values only, so a caller
    that knows those values builds them once, off the accelerator):

    * the complex mask on the kept bins, shaped for the spectrum (:func:`crop_and_mask`);
    * the complex scale of the input gradient: the mask times the column weights of the
      adjoint transforms;
    * the strides' weights, shape ``(1 or k, *kept bins)``: the gradient of stride ``p`` is
      the sum over the kept bins of these weights times ``Re(conj(spectrum) * rfftn(dy))``
      summed over the batch. For axis ``a``, the product of the other axes' masks and
      ``a``'s Jacobian, with the output's column weights; a shared stride sums its axes.
    """
    ndim_axes = [a % ndim for a in axes]
    rank = len(masks)
    out_weight, col_scale = _column_weights(window, sizes, like=masks[0], xp=xp)
    complex_dtype = _complex_dtype(masks[0].dtype, xp=xp)
    mask = xp.astype(_outer(masks, axes=ndim_axes, ndim=ndim, xp=xp), complex_dtype)
    scaled = [*masks[:-1], masks[-1] * col_scale]
    input_scale = xp.astype(_outer(scaled, axes=ndim_axes, ndim=ndim, xp=xp), complex_dtype)
    weights = []
    for axis in range(rank):
        factors = [jacobians[i] if i == axis else masks[i] for i in range(rank)]
        factors[-1] = factors[-1] * out_weight
        weights.append(_outer(factors, axes=list(range(rank)), ndim=rank, xp=xp))
    if shared:
        total = weights[0]
        for weight in weights[1:]:
            total = total + weight
        weights = [total]
    return mask, input_scale, xp.stack(weights)


def fused_vjp(
    cotangent: Array,
    spectrum: Array,
    input_scale: Array,
    stride_weights: Array | None,
    window: Window,
    *,
    sizes: Sequence[int],
    axes: Sequence[int],
    need_x: bool = True,
    xp: Namespace,
) -> tuple[Array | None, Array | None]:
    """``(grad_x, grad_strides)`` of :func:`crop_and_mask` with the mask of
    :func:`fused_constants`: the strides' gradient is one contraction of the spectrum's
    gradient with ``stride_weights`` (``None``: not wanted), the input's the adjoint
    transforms of it scaled by ``input_scale`` (see :func:`masked_crop_vjp`)."""
    ndim = len(cotangent.shape)
    axes = [a % ndim for a in axes]
    grad_masked = xp.fft.rfftn(cotangent, axes=tuple(axes))
    grad_strides = None
    if stride_weights is not None:
        per_bin = _per_bin(spectrum, grad_masked, axes, xp=xp)
        count = stride_weights.shape[0]
        grad_strides = xp.matmul(
            xp.reshape(stride_weights, (count, -1)), xp.reshape(per_bin, (-1,))
        )
    grad_x = None
    if need_x:
        grad_x = _adjoint_crop_transform(grad_masked * input_scale, window, sizes, axes, xp=xp)
    return grad_x, grad_strides


def _uncrop(
    spectrum: Array, block: tuple[int, int], size: int, axis: int, *, xp: Namespace
) -> Array:
    """Zero rows between the top and bottom blocks of ``axis``, back to ``size`` rows."""
    top, bottom = block
    ndim = len(spectrum.shape)
    shape = list(spectrum.shape)
    shape[axis] = size - top - bottom
    zeros = xp.zeros(tuple(shape), dtype=spectrum.dtype, device=device_of(spectrum))
    return xp.concat(
        [
            spectrum[_key(ndim, axis, slice(None, top))],
            zeros,
            spectrum[_key(ndim, axis, slice(top, None))],
        ],
        axis=axis,
    )


def mask_jacobians(
    strides: Array,
    thresholds: Sequence[Array],
    window: Window,
    sizes: Sizes,
    *,
    smoothness_factor: float,
    lower_limit_stride: float | None,
    upper_limit_stride: float | None,
    inside: bool = False,
    dtype: Any = None,
    xp: Namespace,
) -> tuple[Array, ...]:
    """Per axis, the derivative of the mask on the kept bins by the stride that axis uses:
    a vector ``J`` such that that stride's gradient is ``sum(grad_mask * J)``.

    The ramp passes ``1 / R`` where its value lies in ``[0, 1]`` (both bounds included, as
    ``clip_by_value``); the threshold ``max(N / S, 2) / 2`` passes ``-N / (2 S^2)`` where
    ``N / S >= 2`` (ties to ``N / S``, as ``tf.maximum``); the limits' clip passes where the
    projected stride lies within them; the straight-through projection passes unchanged.
    ``R = 0`` has no stride gradient. Computed in ``dtype`` (default: the thresholds')."""
    dtype = thresholds[0].dtype if dtype is None else dtype
    unclipped = _unclipped_strides(
        strides,
        sizes,
        smoothness_factor=smoothness_factor,
        stop_gradient=lambda v: v,
        inside=inside,
        xp=xp,
    )
    low, high = _bounds(lower_limit_stride, upper_limit_stride, strides.dtype, xp=xp)
    distances = window_distances(sizes, window, like=thresholds[0], xp=xp)
    jacobians = []
    for axis, stride in enumerate(unclipped):
        if smoothness_factor == 0:
            jacobians.append(xp.zeros(distances[axis].shape, dtype=dtype))
            continue
        value = _ramp_value(thresholds[axis], distances[axis], smoothness_factor, inside)
        in_ramp = xp.astype((value >= 0) & (value <= 1), dtype)
        effective = xp.astype(_where_clip(stride, low, high, xp=xp), dtype)
        n = _as_float(sizes[axis], effective, xp=xp)
        slope = xp.where(n / effective >= 2.0, -n / (effective * effective) / 2.0, 0.0 * n)
        within = (stride >= low) & (stride <= high)
        factor = xp.where(within, slope / smoothness_factor, _scalar(0.0, effective, xp=xp))
        jacobians.append(in_ramp * factor)
    return tuple(jacobians)


def stride_vjp(
    grad_masks: Sequence[Array],
    strides: Array,
    thresholds: Sequence[Array],
    window: Window,
    sizes: Sequence[int],
    *,
    smoothness_factor: float,
    lower_limit_stride: float | None,
    upper_limit_stride: float | None,
    inside: bool = False,
    xp: Namespace,
) -> Array:
    """The chain rule from the masks' gradients to the strides' (same shape as ``strides``),
    through :func:`mask_jacobians`; a shared stride sums its axes."""
    jacobians = mask_jacobians(
        strides,
        thresholds,
        window,
        sizes,
        smoothness_factor=smoothness_factor,
        lower_limit_stride=lower_limit_stride,
        upper_limit_stride=upper_limit_stride,
        inside=inside,
        dtype=grad_masks[0].dtype,
        xp=xp,
    )
    per_axis = [xp.sum(g * j) for g, j in zip(grad_masks, jacobians, strict=True)]
    if strides.shape[0] == 1:
        total = per_axis[0]
        for grad in per_axis[1:]:
            total = total + grad
        return xp.reshape(total, (1,))
    return xp.stack(per_axis)
