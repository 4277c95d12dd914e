"""An independent derivation of DiffStride's 2-D VJP, as an oracle for the reference.

``diffstride.numpy.diffstride_vjp`` is built on the core's own VJP. This module derives the
same gradients separately, in plain numpy, from the layer's definition (the original's
distance layout, ramp, crop and the projection of the strides), with its own conventions: a
real loss ``L`` of a complex ``z`` has the gradient ``dL/dRe z + i dL/dIm z``; with it, the
VJP of a complex-linear map ``A`` is ``A^H``, the VJP of a real mask is the mask, and the VJP
of ``irfft`` weighs each bin by ``c / n`` with ``c = 1`` for the DC (and even-length Nyquist)
bin and ``2`` elsewhere. Two derivations that agree are unlikely to share a mistake.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import diffstride

__all__ = ["diffstride_vjp_2d"]


def _height_distances(height: int) -> np.ndarray:
    """Every row's distance, in spectrum order (the original's fftshift-ed layout)."""
    top = np.minimum(np.arange(height - height // 2) + height % 2, height // 2)
    bottom = np.arange(height // 2)[::-1]
    return np.concatenate([top, bottom]).astype(np.float64)


def _ramp(threshold: float, distances: np.ndarray, smoothness: float, inside: bool) -> Any:
    if smoothness == 0:
        return (distances <= threshold).astype(np.float64), np.zeros_like(distances)
    value = ((0.0 if inside else smoothness) + threshold - distances) / smoothness
    slope = ((value >= 0) & (value <= 1)) / smoothness  # d ramp / d threshold, ties inclusive
    return np.clip(value, 0.0, 1.0), slope


def diffstride_vjp_2d(
    x: np.ndarray,
    strides: np.ndarray,
    cotangent: np.ndarray,
    *,
    smoothness_factor: float = 4.0,
    lower_limit_stride: float | None = None,
    upper_limit_stride: float | None = None,
    ramp: str = "outside",
) -> tuple[np.ndarray, np.ndarray]:
    """``(grad_x, grad_strides)`` for a channels_first ``(N, C, H, W)`` input with cropping.

    Thresholds are computed in ``x``'s precision, as the layer decides its crop in it; the
    rest runs in float64."""
    inside = ramp == "inside"
    height, width = x.shape[2:]
    dtype = x.dtype.type
    s = np.asarray(strides, dtype=x.dtype)
    per_axis = np.array([s[0], s[0]] if s.shape[0] == 1 else [s[0], s[1]], dtype=x.dtype)
    unclipped = per_axis.copy()
    if not inside:
        minima = np.array(
            [
                dtype(n) / dtype(n - smoothness_factor) if n != smoothness_factor else np.inf
                for n in (height, width)
            ],
            dtype=x.dtype,
        )
        if s.shape[0] == 1:
            minima[:] = minima.max()
        unclipped = np.maximum(per_axis, minima)
    low = 1.0 if lower_limit_stride is None else lower_limit_stride
    high = np.inf if upper_limit_stride is None else upper_limit_stride
    effective = np.clip(unclipped, low, high).astype(x.dtype)
    ratios = np.array([dtype(height) / effective[0], dtype(width) / effective[1]], x.dtype)
    t_h = float(np.maximum(ratios[0], dtype(2)) / dtype(2))
    t_w = float(np.maximum(ratios[1], dtype(2)) / dtype(2) + dtype(1))
    mask_h, slope_h = _ramp(t_h, _height_distances(height), smoothness_factor, inside)
    mask_w, slope_w = _ramp(t_w, np.arange(width // 2 + 1.0), smoothness_factor, inside)
    h, w = diffstride.output_size(
        (height, width),
        tuple(float(v) for v in s),
        smoothness_factor=smoothness_factor,
        lower_limit_stride=lower_limit_stride,
        upper_limit_stride=upper_limit_stride,
        dtype=str(x.dtype),
        ramp=ramp,
    )
    rows = np.flatnonzero(mask_h > 0)
    cols = np.arange(w // 2 + 1)
    g = np.asarray(cotangent, dtype=np.float64)
    # VJP of irfft2(z, s=(h, w)) on the kept (rows, cols) block.
    weight = np.full(cols.size, 2.0)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[w // 2] = 1.0
    grad_z = np.fft.fft(np.fft.rfft(g, n=w, axis=-1)[..., : cols.size] * weight / w, axis=-2) / h
    spectrum = np.fft.rfft2(x.astype(np.float64))[..., rows[:, None], cols[None, :]]
    mask = mask_h[rows][:, None] * mask_w[cols][None, :]
    full = np.zeros((*x.shape[:2], height, width // 2 + 1), dtype=complex)
    full[..., rows[:, None], cols[None, :]] = grad_z * mask
    # VJP of rfft2: H * ifft over rows, W * irfft-like adjoint over columns.
    inner = np.full(width // 2 + 1, 0.5)
    inner[0] = 1.0
    if width % 2 == 0:
        inner[-1] = 1.0
    grad_x = (
        np.real(np.fft.irfft(np.fft.ifft(full, axis=-2) * height * inner * 2, n=width, axis=-1))
        * width
        / 2
    )
    grad_mask = np.real(np.conj(spectrum) * grad_z).sum(axis=(0, 1))
    grad_t = (
        float(np.sum((grad_mask @ mask_w[cols]) * slope_h[rows])),
        float(np.sum((mask_h[rows] @ grad_mask) * slope_w[cols])),
    )
    grads = []
    for axis, size in enumerate((height, width)):
        active = float(ratios[axis]) >= 2 and low <= float(unclipped[axis]) <= high
        stride = float(effective[axis])
        grads.append(grad_t[axis] * (-size / stride**2 / 2) if active else 0.0)
    grad_strides = [sum(grads)] if s.shape[0] == 1 else grads
    return grad_x.astype(x.dtype), np.asarray(grad_strides, dtype=x.dtype)
