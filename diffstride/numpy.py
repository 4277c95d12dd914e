"""numpy front-end: the cross-framework reference, with analytic gradients.

numpy has no autodiff, so the vector-Jacobian products are derived by hand here, on top of the
same agnostic forward pieces (strides, thresholds, ramp, window) the other frameworks use. They
are accumulated in float64 whatever the input's dtype (the crop is still decided in the
input's precision), which makes them a sharp reference for every backend's autodiff, and they
are themselves checked against float64 central finite differences by the conformance suite.

Conventions of the derivation: a real loss ``L`` of a complex ``z`` has the gradient
``dL/dRe z + i dL/dIm z``. With it, the VJP of a complex-linear map ``A`` is ``A^H``, the VJP
of a real mask is the mask, and the VJP of ``irfft`` weighs each bin by ``c / n`` with ``c = 1``
for the DC (and even-length Nyquist) bin and ``2`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat.numpy as np_xp
import numpy as np

from diffstride import _agnostic, _api, _sizes
from diffstride._layers import DiffStrideMixin
from diffstride._registry import get_backend
from diffstride._validation import (
    check_limits,
    check_ramp,
    check_smoothness_factor,
    check_stride_values,
)

__all__ = [
    "DiffStride",
    "diffstride",
    "diffstride_vjp",
    "spectral_pooling",
    "spectral_pooling_vjp",
]


diffstride, spectral_pooling = _api.bind("numpy")


def _to_nchw(array: np.ndarray, data_format: str) -> np.ndarray:
    return array if data_format == "channels_first" else np.moveaxis(array, 3, 1)


def _from_nchw(array: np.ndarray, data_format: str) -> np.ndarray:
    return array if data_format == "channels_first" else np.moveaxis(array, 1, 3)


def _check_cotangent(
    cotangent: Any, expected_nchw: tuple[int, ...], data_format: str
) -> np.ndarray:
    """The cotangent in NCHW, float64, after checking it has the output's shape."""
    expected = expected_nchw
    if data_format == "channels_last":
        expected = (expected[0], expected[2], expected[3], expected[1])
    cotangent = np.asarray(cotangent)
    if cotangent.shape != expected:
        raise ValueError(
            f"cotangent must have the output's shape {expected}; received shape {cotangent.shape}"
        )
    return _to_nchw(cotangent.astype(np.float64), data_format)


def _irfft2_vjp(g: np.ndarray, window: _agnostic.Window) -> np.ndarray:
    """VJP of ``irfftn(z, s=(h, w))`` over the last two axes: a complex ``(h, cols)`` array."""
    h, w = window.height, window.width
    spectrum = np.fft.rfft(g, n=w, axis=-1)[..., : window.cols]
    weight = np.full(window.cols, 2.0)
    weight[0] = 1.0
    if w % 2 == 0 and w // 2 < window.cols:
        weight[w // 2] = 1.0
    return np.fft.fft(spectrum * (weight / w), axis=-2) / h


def _rfft2_vjp(grad_spectrum: np.ndarray, sizes: tuple[int, int]) -> np.ndarray:
    """VJP of ``rfftn`` over the last two axes, from the gradient of the whole spectrum."""
    height, width = sizes
    rows = np.fft.ifft(grad_spectrum, axis=-2) * height
    return np.real(np.fft.ifft(rows, n=width, axis=-1)) * width


def _uncrop(grad: np.ndarray, window: _agnostic.Window, sizes: tuple[int, int]) -> np.ndarray:
    height, width = sizes
    full = np.zeros((*grad.shape[:-2], height, width // 2 + 1), dtype=grad.dtype)
    full[..., : window.top, : window.cols] = grad[..., : window.top, :]
    full[..., height - window.bottom :, : window.cols] = grad[..., window.top :, :]
    return full


def _crop(spectrum: np.ndarray, window: _agnostic.Window) -> np.ndarray:
    return _agnostic.crop(spectrum, window, (-2, -1), spectrum.shape[-2], xp=np_xp)


def diffstride_vjp(
    x: np.ndarray,
    strides: Any,
    cotangent: np.ndarray,
    *,
    smoothness_factor: float = 4.0,
    cropping: bool = True,
    data_format: str = "channels_first",
    lower_limit_stride: float | None = None,
    upper_limit_stride: float | None = None,
    output_size: Sequence[int] | None = None,
    ramp: str = "outside",
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic gradients of ``sum(diffstride(x, strides, ...) * cotangent)``.

    Returns ``(grad_x, grad_strides)`` with the dtypes of ``x`` and ``strides``
    (``grad_strides`` has ``strides``' length: 2, or 1 for a shared stride).

    >>> import numpy as np
    >>> from diffstride.numpy import diffstride, diffstride_vjp
    >>> x = np.random.default_rng(0).normal(size=(1, 2, 16, 16))
    >>> y = diffstride(x, (2.0, 2.0))
    >>> grad_x, grad_strides = diffstride_vjp(x, (2.0, 2.0), np.ones_like(y))
    >>> grad_x.shape, grad_strides.shape
    ((1, 2, 16, 16), (2,))
    """
    backend = get_backend("numpy")
    smoothness = check_smoothness_factor(smoothness_factor)
    limits = check_limits(lower_limit_stride, upper_limit_stride)
    inside = check_ramp(ramp) == "inside"
    _api._check_input(x, data_format, np_xp)
    x_nchw = _to_nchw(np.asarray(x), data_format)
    stride_array, _ = _api._as_strides(
        strides, x, backend, np_xp, check_values=True, want_values=False
    )
    sizes = tuple(x_nchw.shape[2:])

    def strides_for(lower: float | None, upper: float | None) -> tuple[Any, Any]:
        return _agnostic.effective_strides(
            stride_array,
            sizes,
            smoothness_factor=smoothness,
            lower_limit_stride=lower,
            upper_limit_stride=upper,
            stop_gradient=lambda v: v,
            inside=inside,
            xp=np_xp,
        )

    effective = strides_for(*limits)
    projected = strides_for(None, None)  # before the limits' clip
    t_h, t_w = _agnostic.thresholds(*effective, sizes, xp=np_xp)
    window = _api.window_for(
        sizes,
        (t_h, t_w),
        backend=backend,
        output_size=output_size,
        cropping=bool(cropping),
        smoothness_factor=smoothness,
        xp=np_xp,
        inside=inside,
    )
    g = _check_cotangent(cotangent, (*x_nchw.shape[:2], *window.output_size), data_format)
    d_rows, d_cols = _agnostic.window_distances(sizes, window, like=t_h, xp=np_xp)
    ramps = [
        _agnostic.ramp(t, d, smoothness, inside=inside, xp=np_xp).astype(np.float64)
        for t, d in ((t_h, d_rows), (t_w, d_cols))
    ]
    spectrum = _crop(np.fft.rfft2(x_nchw.astype(np.float64)), window)
    grad_masked = _irfft2_vjp(g, window)
    mask = ramps[0][:, None] * ramps[1][None, :]
    grad_x = _rfft2_vjp(_uncrop(grad_masked * mask, window, sizes), sizes)
    grad_mask = np.real(np.conj(spectrum) * grad_masked).sum(axis=(0, 1))
    grad_ramps = (grad_mask @ ramps[1], ramps[0] @ grad_mask)

    grad_axes = []
    axes_data = zip((t_h, t_w), (d_rows, d_cols), grad_ramps, strict=True)
    for axis, (t, d, grad_ramp) in enumerate(axes_data):
        if smoothness == 0:
            grad_axes.append(0.0)
            continue
        value = ((0.0 if inside else smoothness) + float(t) - d) / smoothness
        in_ramp = (value >= 0) & (value <= 1)
        grad_t = float(np.sum(grad_ramp * in_ramp)) / smoothness
        stride = float(effective[axis])
        ratio_active = sizes[axis] / effective[axis] >= 2
        grad_stride = -sizes[axis] / stride**2 / 2 if ratio_active else 0.0
        unclipped = effective[axis] == projected[axis]
        grad_axes.append(grad_t * grad_stride * float(unclipped))
    grad_strides = np.asarray(
        [sum(grad_axes)] if stride_array.shape[0] == 1 else grad_axes,
        dtype=np.asarray(strides).dtype if isinstance(strides, np.ndarray) else x.dtype,
    )
    return _from_nchw(grad_x, data_format).astype(x.dtype), grad_strides


def spectral_pooling_vjp(
    x: np.ndarray, strides: Any, cotangent: np.ndarray, *, data_format: str = "channels_first"
) -> np.ndarray:
    """Analytic gradient of ``sum(spectral_pooling(x, strides) * cotangent)`` w.r.t. ``x``.

    >>> import numpy as np
    >>> from diffstride.numpy import spectral_pooling_vjp
    >>> spectral_pooling_vjp(np.ones((1, 1, 8, 8)), 2, np.ones((1, 1, 4, 4))).shape
    (1, 1, 8, 8)
    """
    _api._check_input(x, data_format, np_xp)
    x_nchw = _to_nchw(np.asarray(x), data_format)
    sizes = tuple(x_nchw.shape[2:])
    window = _sizes.spectral_window(sizes, check_stride_values(strides))
    g = _check_cotangent(cotangent, (*x_nchw.shape[:2], *window.output_size), data_format)
    grad_x = _rfft2_vjp(_uncrop(_irfft2_vjp(g, window), window, sizes), sizes)
    return _from_nchw(grad_x, data_format).astype(x.dtype)


class DiffStride(DiffStrideMixin):
    """The reference layer: ``layer(x)`` and ``layer.vjp(x, cotangent)`` on numpy arrays.

    ``self.strides`` is a float32 array; calls do not project it (``layer.project((H, W))``
    does, as the other frameworks' training calls; with ``ramp="inside"`` it only clips).

    >>> import numpy as np
    >>> from diffstride.numpy import DiffStride
    >>> layer = DiffStride((2.0, 2.0))
    >>> y = layer(np.ones((1, 2, 16, 16), np.float32))
    >>> grad_x, grad_strides = layer.vjp(np.ones((1, 2, 16, 16), np.float32), np.ones(y.shape))
    >>> y.shape, grad_strides.shape
    ((1, 2, 12, 12), (2,))
    """

    def __init__(
        self,
        strides: Any = (2.0, 2.0),
        smoothness_factor: float = 4.0,
        cropping: bool = True,
        shared_stride: bool = False,
        lower_limit_stride: float | None = None,
        upper_limit_stride: float | None = None,
        data_format: str = "channels_first",
        method: str = "auto",
        ramp: str = "outside",
    ) -> None:
        self._init_diffstride(
            strides,
            smoothness_factor,
            cropping,
            shared_stride,
            lower_limit_stride,
            upper_limit_stride,
            data_format,
            method,
            ramp,
        )
        self.strides = np.asarray(self.initial_value, dtype=np.float32)

    def _stride_values(self) -> np.ndarray:
        return self.strides

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._check_input_shape(x.shape)
        return diffstride(x, self.strides.astype(x.dtype), **self._functional_kwargs())

    def project(self, input_size: Sequence[int]) -> np.ndarray:
        """``S <- clip(max(S, N / (N - R)), lower, upper)`` in place; returns the new value."""
        self.strides = self._projected(self.strides, input_size, clip=True, xp=np_xp)
        return self.strides

    def vjp(self, x: np.ndarray, cotangent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(grad_x, grad_strides)`` of ``sum(self(x) * cotangent)``."""
        kwargs = self._functional_kwargs()
        del kwargs["method"]  # the VJP is analytic, whatever path the forward takes
        grad_x, grad_strides = diffstride_vjp(x, self.strides.astype(x.dtype), cotangent, **kwargs)
        return grad_x, grad_strides.astype(np.float32)

    def __repr__(self) -> str:
        return f"DiffStride({self._extra_repr()})"
