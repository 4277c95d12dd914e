"""The GEMM formulation of a fixed crop: DiffStride as ``y = A1 x B1 - A2 x B2``.

For a fixed window the layer is a real linear map, separable per spatial axis. Along the
height it is the complex matrix ``P = IF_kh diag(m_h) F_rows`` (the DFT restricted to the
kept rows, the mask, the inverse DFT of the cropped length); along the width it is
``B = F_cols diag(m_w) G`` (the rfft restricted to the kept columns, the mask, and ``G``, the
inverse real DFT written as ``Re(z G)`` with weights 1 on the DC and Nyquist bins and 2
elsewhere). As ``x`` is real, ``y = Re(P x B) = Re(P) x Re(B) - Im(P) x Im(B)``, computed as
two real GEMMs over the whole batch (see :func:`apply_separable`), with no complex numbers in
the backward pass.

The DFT factors depend only on the sizes and the window, so they are built once in float64
numpy (cached) and cast per call; the masks come from the core's ramp, so the stride gradient
flows through the mask exactly as in the FFT path.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from array_api_compat import device as _device

from diffstride._agnostic import Window

__all__ = ["apply_separable", "height_factors", "width_factors"]


@lru_cache(maxsize=256)
def height_factors(height: int, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """``(U, V)`` complex with ``P = U diag(m_h) V``: ``V`` (kh, H) the DFT at the kept rows,
    ``U`` (h_out, kh) the inverse DFT of length ``h_out``."""
    rows = np.r_[np.arange(window.top), np.arange(height - window.bottom, height)]
    v = np.exp(-2j * np.pi * np.outer(rows, np.arange(height)) / height)
    kept = len(rows)
    u = np.exp(2j * np.pi * np.outer(np.arange(window.height), np.arange(kept)) / kept) / kept
    return u, v


@lru_cache(maxsize=256)
def width_factors(width: int, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """``(E, G)`` complex with ``B = E diag(m_w) G``: ``E`` (W, kw) the rfft at the kept
    columns, ``G`` (kw, w_out) the inverse real DFT as ``Re(z G)``."""
    cols = np.arange(window.cols)
    e = np.exp(-2j * np.pi * np.outer(np.arange(width), cols) / width)
    n = window.width
    weight = np.where((cols == 0) | ((n % 2 == 0) & (cols == n // 2)), 1.0, 2.0)
    g = weight[:, None] * np.exp(2j * np.pi * np.outer(cols, np.arange(n)) / n) / n
    return e, g


def _masked_product(
    left: np.ndarray, mask: Any, right: np.ndarray, like: Any, xp: Any
) -> tuple[Any, Any]:
    """Real and imaginary parts of ``left diag(mask) right`` (``mask`` may carry gradient;
    ``None`` means all ones)."""

    def constant(array: np.ndarray) -> Any:
        # Contiguous copies: ``.real``/``.imag`` are strided views, which not every
        # framework's conversion reads correctly (TensorFlow's did not, here).
        return xp.asarray(np.ascontiguousarray(array), dtype=like.dtype, device=_device(like))

    if mask is None:
        product = left @ right  # numpy
        return constant(product.real), constant(product.imag)
    l_re, l_im = constant(left.real), constant(left.imag)
    r_re, r_im = constant(right.real), constant(right.imag)
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
    xp: Any,
) -> Any:
    """``y = Re(P x B)`` over the spatial ``axes`` (NCHW: (2, 3); NHWC: (1, 2)), as two
    plain 2-D GEMMs: ``T = x B_cat`` with ``B_cat = [Re B | Im B]`` (width), then
    ``Y = A_cat [T_re; T_im]`` with ``A_cat = [Re P | -Im P]`` (height).

    Each GEMM is one matrix product over the whole batch, so the backward pass reduces the
    weights' gradients (the masks') inside one GEMM too, instead of per-sample products
    summed afterwards, which broadcast matmuls do. The price is a permute of the intermediate
    (and, for channels_last, of the input) to bring each contracted axis to its place.
    """
    u, v = height_factors(sizes[0], window)
    e, g = width_factors(sizes[1], window)
    a_re, a_im = _masked_product(u, mask_h, v, x, xp)  # (h_out, H)
    b_re, b_im = _masked_product(e, mask_w, g, x, xp)  # (W, w_out)
    a_cat = xp.concat([a_re, -a_im], axis=1)  # (h_out, 2H)
    b_cat = xp.concat([b_re, b_im], axis=1)  # (W, 2 w_out)
    height, width = sizes
    h_out, w_out = window.height, window.width
    channels_first = axes[1] % len(x.shape) == len(x.shape) - 1
    if channels_first:  # (N, C, H, W): rows of x are (N, C, H)
        n, c = x.shape[0], x.shape[1]
        rows = x
    else:  # (N, H, W, C) -> (N, H, C, W): rows (N, H, C)
        n, c = x.shape[0], x.shape[3]
        rows = xp.permute_dims(x, (0, 1, 3, 2))
    t = xp.matmul(xp.reshape(rows, (-1, width)), b_cat)  # (rows, 2 w_out)
    if channels_first:  # (N, C, H, 2, w) -> (2, H, N, C, w)
        t = xp.permute_dims(xp.reshape(t, (n, c, height, 2, w_out)), (3, 2, 0, 1, 4))
    else:  # (N, H, C, 2, w) -> (2, H, N, C, w)
        t = xp.permute_dims(xp.reshape(t, (n, height, c, 2, w_out)), (3, 1, 0, 2, 4))
    y = xp.matmul(a_cat, xp.reshape(t, (2 * height, -1)))  # (h_out, N * C * w_out)
    y = xp.reshape(y, (h_out, n, c, w_out))
    return xp.permute_dims(y, (1, 2, 0, 3) if channels_first else (1, 0, 3, 2))
