"""The GEMM formulation of a fixed crop: DiffStride as ``y = A1 x B1 - A2 x B2``.

For a fixed window the layer is a real linear map, separable per spatial axis. Along the
height it is the complex matrix ``P = IF_kh diag(m_h) F_rows`` (the DFT restricted to the
kept rows, the mask, the inverse DFT of the cropped length); along the width it is
``B = F_cols diag(m_w) G`` (the rfft restricted to the kept columns, the mask, and ``G``, the
inverse real DFT written as ``Re(z G)`` with weights 1 on the DC and Nyquist bins and 2
elsewhere). As ``x`` is real, ``y = Re(P x B) = Re(P) x Re(B) - Im(P) x Im(B)``, computed as
two real GEMMs (see :func:`apply_separable`), with no complex numbers in the backward pass.

The DFT factors depend only on the sizes and the window, so they are built once in float64
numpy (cached) and cast per call; where the window is only known at run time (TensorFlow graph
mode, where the crop follows the stride variable, as in Keras ``fit``) they are built in the
graph from integer indices instead. The masks come from the core's ramp, so the stride
gradient flows through the mask exactly as in the FFT path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import array_api_compat.numpy as np_xp
import numpy as np
from array_api_compat import device as _device

from diffstride._agnostic import Window

__all__ = ["apply_separable"]


def _dft(rows: Any, cols: Any, length: Any, sign: float, dtype: Any, xp: Any) -> tuple[Any, Any]:
    """Real and imaginary parts of ``exp(sign 2 pi i r c / length)`` for integer index arrays,
    in ``dtype``. The product is reduced modulo ``length`` in integers first, so the
    angles stay small and exact in float32 whatever the sizes."""
    turns = xp.remainder(xp.reshape(rows, (-1, 1)) * xp.reshape(cols, (1, -1)), length)
    n = xp.astype(xp.asarray(length), dtype)
    theta = xp.astype(turns, dtype) * (2.0 * np.pi) / n
    return xp.cos(theta), sign * xp.sin(theta)


def _dft_factors(
    sizes: tuple[Any, Any], window: Window, dtype: Any, xp: Any
) -> tuple[tuple[Any, Any], tuple[Any, Any], tuple[Any, Any], tuple[Any, Any]]:
    """``U, V, E, G`` as real/imaginary pairs of ``dtype``: ``P = U diag(m_h) V`` with
    ``V`` (kh, H) the DFT at the kept rows and ``U`` (h_out, kh) the inverse DFT of length
    ``h_out``; ``B = E diag(m_w) G`` with ``E`` (W, kw) the rfft at the kept columns and ``G``
    (kw, w_out) the inverse real DFT as ``Re(z G)``. Written once: in float64 numpy for static
    sizes (cached), in the framework's graph where the window is only known at run time."""
    height, width = sizes

    def index(stop: Any) -> Any:
        return xp.arange(stop, dtype=xp.int32)

    kept = window.top + window.bottom
    rows = xp.concat([index(window.top), index(window.bottom) + (height - window.bottom)], axis=0)
    v = _dft(rows, index(height), height, -1.0, dtype, xp)
    u_re, u_im = _dft(index(window.height), index(kept), kept, 1.0, dtype, xp)
    scale = xp.astype(xp.asarray(kept), dtype)
    e = _dft(index(width), index(window.cols), width, -1.0, dtype, xp)
    cols = index(window.cols)
    edge = (cols == 0) | (2 * cols == window.width)
    one, two = xp.asarray(1.0, dtype=dtype), xp.asarray(2.0, dtype=dtype)
    weight = xp.reshape(xp.where(edge, one, two), (-1, 1)) / xp.astype(
        xp.asarray(window.width), dtype
    )
    g_re, g_im = _dft(cols, index(window.width), window.width, 1.0, dtype, xp)
    return (u_re / scale, u_im / scale), v, e, (g_re * weight, g_im * weight)


def _factors(
    sizes: tuple[Any, Any], window: Window, like: Any, xp: Any
) -> tuple[tuple[Any, Any], tuple[Any, Any], tuple[Any, Any], tuple[Any, Any]]:
    """``U, V, E, G`` as real/imaginary pairs of ``like``'s dtype and device: from the
    float64 cache for static sizes, else built in the graph."""
    if not window.is_static(sizes):
        return _dft_factors(sizes, window, like.dtype, xp)
    u, v, e, g = (
        (_constant(re, like, xp), _constant(im, like, xp))
        for re, im in _cached_factors(tuple(sizes), window)
    )
    return u, v, e, g


@lru_cache(maxsize=256)
def _cached_factors(
    sizes: tuple[int, int], window: Window
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """:func:`_dft_factors` in float64 numpy, built once per sizes and window."""
    return _dft_factors(sizes, window, np.float64, np_xp)


@lru_cache(maxsize=256)
def _fixed_factors(
    sizes: tuple[int, int], window: Window
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``P = U V`` and ``B = E G`` without a mask, as real/imaginary numpy pairs."""
    u, v, e, g = _cached_factors(sizes, window)
    return _masked_product(u, None, v, np_xp), _masked_product(e, None, g, np_xp)


def _constant(array: np.ndarray, like: Any, xp: Any) -> Any:
    return xp.asarray(array, dtype=like.dtype, device=_device(like))


def _masked_product(
    left: tuple[Any, Any], mask: Any, right: tuple[Any, Any], xp: Any
) -> tuple[Any, Any]:
    """Real and imaginary parts of ``left diag(mask) right`` (``mask`` may carry gradient;
    ``None`` means all ones)."""
    (l_re, l_im), (r_re, r_im) = left, right
    if mask is not None:
        l_re, l_im = l_re * mask, l_im * mask  # scale the kept columns of the left factor
    mm = xp.matmul
    return mm(l_re, r_re) - mm(l_im, r_im), mm(l_re, r_im) + mm(l_im, r_re)


def apply_separable(
    x: Any,
    window: Window,
    mask_h: Any,
    mask_w: Any,
    *,
    sizes: tuple[int, int],
    axes: tuple[int, int],
    broadcast: bool = False,
    xp: Any,
) -> Any:
    """``y = Re(P x B)`` over the spatial ``axes`` (NCHW: (2, 3); NHWC: (1, 2)) as two GEMMs.

    Two layouts of the same products, because frameworks differ in what a GEMM costs:

    * ``broadcast=True`` (TensorFlow): a small matrix times a stack of matrices, with the
      real and imaginary parts interleaved into the contracted dimension, so that no
      activation is ever transposed. TensorFlow's batched matmul reads such operands as they
      lie; under tf.function NHWC this took DiffStride from 7.9x to 5.1x the average pool.
    * ``broadcast=False`` (torch, jax, default): each product is one plain 2-D GEMM over the
      whole batch, at the price of permuting the intermediate (and NHWC input). torch folds a
      matrix-times-stack product through transposed copies of the stack, which cost more.
    """
    if mask_h is None:  # fixed pooling: the whole factors, multiplied once in float64
        a, b = _fixed_factors(tuple(sizes), window)
        a_re, a_im, b_re, b_im = (_constant(part, x, xp) for part in (*a, *b))
    else:
        u, v, e, g = _factors(sizes, window, x, xp)
        a_re, a_im = _masked_product(u, mask_h, v, xp)  # (h, H)
        b_re, b_im = _masked_product(e, mask_w, g, xp)  # (W, w)
    channels_first = axes[1] % len(x.shape) == len(x.shape) - 1
    apply = _broadcast_gemms if broadcast else _permuted_gemms
    return apply(x, (a_re, a_im), (b_re, b_im), sizes, window.output_size, channels_first, xp)


def _broadcast_gemms(
    x: Any,
    a: tuple[Any, Any],
    b: tuple[Any, Any],
    sizes: tuple[int, int],
    output_size: tuple[int, int],
    channels_first: bool,
    xp: Any,
) -> Any:
    """NCHW: ``T = x [Re B | Im B]`` lies as ``(N C, H, 2, w)``; ``y[n, c] = A' T[n, c]`` with
    the columns of ``Re P`` and ``-Im P`` interleaved. NHWC: ``U[n] = A'' x[n]`` with the rows
    of ``Re P`` and ``Im P`` interleaved lies as ``(N h, 2, W, C)``; ``y[n, i] = [Re B^T |
    -Im B^T] U[n, i]``."""
    (a_re, a_im), (b_re, b_im) = a, b
    (height, width), (h_out, w_out) = sizes, output_size
    if channels_first:
        c = x.shape[1]
        a_interleaved = xp.reshape(xp.stack([a_re, -a_im], axis=2), (h_out, 2 * height))
        t = xp.matmul(xp.reshape(x, (-1, width)), xp.concat([b_re, b_im], axis=1))
        y = xp.matmul(a_interleaved, xp.reshape(t, (-1, 2 * height, w_out)))
        return xp.reshape(y, (-1, c, h_out, w_out))
    c = x.shape[3]
    a_interleaved = xp.reshape(xp.stack([a_re, a_im], axis=1), (2 * h_out, height))
    b_cat = xp.concat([xp.matrix_transpose(b_re), -xp.matrix_transpose(b_im)], axis=1)
    u_rows = xp.matmul(a_interleaved, xp.reshape(x, (-1, height, width * c)))
    y = xp.matmul(b_cat, xp.reshape(u_rows, (-1, 2 * width, c)))
    return xp.reshape(y, (-1, h_out, w_out, c))


def _permuted_gemms(
    x: Any,
    a: tuple[Any, Any],
    b: tuple[Any, Any],
    sizes: tuple[int, int],
    output_size: tuple[int, int],
    channels_first: bool,
    xp: Any,
) -> Any:
    """``T = x [Re B | Im B]`` over the rows ``(N, C, H)`` (NHWC: ``(N, H, C)``), permuted to
    ``(2, H, N, C, w)``, then ``Y = [Re P | -Im P] T`` as one GEMM, permuted back."""
    (a_re, a_im), (b_re, b_im) = a, b
    (height, width), (h_out, w_out) = sizes, output_size
    a_cat = xp.concat([a_re, -a_im], axis=1)  # (h, 2H)
    b_cat = xp.concat([b_re, b_im], axis=1)  # (W, 2w)
    if channels_first:  # (N, C, H, W): rows of x are (N, C, H)
        n, c = x.shape[0], x.shape[1]
        rows = x
    else:  # (N, H, W, C) -> (N, H, C, W): rows (N, H, C)
        n, c = x.shape[0], x.shape[3]
        rows = xp.permute_dims(x, (0, 1, 3, 2))
    t = xp.matmul(xp.reshape(rows, (-1, width)), b_cat)  # (rows, 2w)
    if channels_first:  # (N, C, H, 2, w) -> (2, H, N, C, w)
        t = xp.permute_dims(xp.reshape(t, (n, c, height, 2, w_out)), (3, 2, 0, 1, 4))
    else:  # (N, H, C, 2, w) -> (2, H, N, C, w)
        t = xp.permute_dims(xp.reshape(t, (n, height, c, 2, w_out)), (3, 1, 0, 2, 4))
    y = xp.matmul(a_cat, xp.reshape(t, (2 * height, -1)))  # (h, N C w)
    y = xp.reshape(y, (h_out, n, c, w_out))
    return xp.permute_dims(y, (1, 2, 0, 3) if channels_first else (1, 0, 3, 2))
