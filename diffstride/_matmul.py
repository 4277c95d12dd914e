"""The GEMM formulation of a fixed crop: DiffStride as one real GEMM per spatial axis.

For a fixed window the layer is a real linear map, separable per spatial axis. Along a height
axis it is the complex matrix ``P = IF diag(m) F_rows`` (the DFT restricted to the kept rows,
the mask, the inverse DFT of the cropped length); along the last axis it is
``Q = G^T diag(m) F_cols^T`` (the rfft restricted to the kept columns, the mask, and ``G``,
the inverse real DFT written as ``Re(z G)`` with weights 1 on the DC and Nyquist bins and 2
elsewhere). As ``x`` is real, ``y = Re(P_0 .. P_{k-2} Q x)`` (each factor acting on its own
axis): the first product makes real and imaginary parts, each further one is the real block
matrix ``[[Re P, -Im P], [Im P, Re P]]``, and the last keeps its real rows only. No complex
numbers, no FFTs, and no complex arithmetic in the backward pass.

The DFT factors depend only on the sizes and the window, so they are built once in float64
numpy (cached) and cast per call; where the window is only known at run time (TensorFlow graph
mode, where the crop follows the stride variable, as in Keras ``fit``) they are built in the
graph from integer indices instead. The masks come from the core's ramp, so the stride
gradient flows through the mask exactly as in the FFT path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import array_api_compat.numpy as np_xp
import numpy as np

from diffstride._agnostic import Window, device_of, window_distances
from diffstride._backend import check_matmul_layouts

__all__ = [
    "apply_matrices",
    "apply_separable",
    "gemm_program",
    "planned_matrices",
    "unmasked_matrices",
]

Pair = tuple[Any, Any]  # real and imaginary parts


def _dft(rows: Any, cols: Any, length: Any, sign: float, dtype: Any, xp: Any) -> Pair:
    """Real and imaginary parts of ``exp(sign 2 pi i r c / length)`` for integer index arrays,
    in ``dtype``. The product is reduced modulo ``length`` in integers first, so the
    angles stay small and exact in float32 whatever the sizes."""
    turns = xp.remainder(xp.reshape(rows, (-1, 1)) * xp.reshape(cols, (1, -1)), length)
    n = xp.astype(xp.asarray(length), dtype)
    theta = xp.astype(turns, dtype) * (2.0 * np.pi) / n
    return xp.cos(theta), sign * xp.sin(theta)


def _index(stop: Any, xp: Any) -> Any:
    return xp.arange(stop, dtype=xp.int32)


def _height_factors(size: Any, block: tuple[Any, Any], dtype: Any, xp: Any) -> tuple[Pair, Pair]:
    """``(U, V)`` with ``P = U diag(m) V``: ``V`` (kept, N) the DFT at the kept rows, ``U``
    (kept, kept) the inverse DFT of the cropped length."""
    top, bottom = block
    kept = top + bottom
    rows = xp.concat([_index(top, xp), _index(bottom, xp) + (size - bottom)], axis=0)
    v = _dft(rows, _index(size, xp), size, -1.0, dtype, xp)
    u_re, u_im = _dft(_index(kept, xp), _index(kept, xp), kept, 1.0, dtype, xp)
    scale = xp.astype(xp.asarray(kept), dtype)
    return (u_re / scale, u_im / scale), v


def _last_factors(
    size: Any, cols: Any, length: Any, dtype: Any, xp: Any, transposed: bool
) -> tuple[Pair, Pair]:
    """``(G^T, F^T)`` with ``Q = G^T diag(m) F^T``: ``F^T`` (cols, W) the rfft at the kept
    columns, ``G^T`` (w, cols) the inverse real DFT of length ``w`` as ``Re(G^T z)``; with
    ``transposed``, ``(F, G)``, the factors of ``Q^T`` (built as such: no transpose op)."""
    columns = _index(cols, xp)
    edge = (columns == 0) | (2 * columns == length)
    one, two = xp.asarray(1.0, dtype=dtype), xp.asarray(2.0, dtype=dtype)
    weight = xp.where(edge, one, two) / xp.astype(xp.asarray(length), dtype)
    if transposed:
        f = _dft(_index(size, xp), columns, size, -1.0, dtype, xp)
        g_re, g_im = _dft(columns, _index(length, xp), length, 1.0, dtype, xp)
        weight = xp.reshape(weight, (-1, 1))
        return f, (g_re * weight, g_im * weight)
    f = _dft(columns, _index(size, xp), size, -1.0, dtype, xp)
    g_re, g_im = _dft(_index(length, xp), columns, length, 1.0, dtype, xp)
    weight = xp.reshape(weight, (1, -1))
    return (g_re * weight, g_im * weight), f


def _factors(
    sizes: Sequence[Any], window: Window, dtype: Any, xp: Any, transposed_last: bool = False
) -> list[tuple[Pair, Pair]]:
    """``(left, right)`` per spatial axis, the axis' map being ``left diag(m) right`` (on the
    last axis its transpose, with ``transposed_last``)."""
    heights = [
        _height_factors(size, block, dtype, xp)
        for size, block in zip(sizes, window.blocks, strict=False)
    ]
    last = _last_factors(sizes[-1], window.cols, window.output_size[-1], dtype, xp, transposed_last)
    return [*heights, last]


@lru_cache(maxsize=256)
def _cached_factors(
    sizes: tuple[int, ...], window: Window, transposed_last: bool
) -> list[tuple[Pair, Pair]]:
    """:func:`_factors` in float64 numpy, built once per sizes, window and orientation."""
    return _factors(sizes, window, np.float64, np_xp, transposed_last)


def _masked_product(left: Pair, mask: Any, right: Pair, xp: Any) -> Pair:
    """Real and imaginary parts of ``left diag(mask) right`` (``mask`` may carry gradient;
    ``None`` means all ones)."""
    (l_re, l_im), (r_re, r_im) = left, right
    if mask is not None:
        l_re, l_im = l_re * mask, l_im * mask  # scale the kept columns of the left factor
    mm = xp.matmul
    return mm(l_re, r_re) - mm(l_im, r_im), mm(l_re, r_im) + mm(l_im, r_re)


@dataclass(frozen=True)
class _Step:
    """One GEMM: which axis' map, whether its input and output carry imaginary parts, how
    the (real, imaginary) pair is laid out on each side (``interleaved``: ``(n, 2)``, else
    ``(2, n)``), and whether the matrix multiplies from the right."""

    axis: int
    complex_in: bool
    complex_out: bool
    interleaved_in: bool = False
    interleaved_out: bool = False
    from_right: bool = False


def _steps(rank: int, channels_first: bool, stacked: bool) -> tuple[_Step, ...]:
    """The order of the GEMMs. The last axis goes first from the right (its rows lie
    contiguous), then the height axes from the last to the first; the stacked layout of a
    channels_last input goes the other way, the height axes first, so that no activation is
    transposed."""
    if stacked and not channels_first:
        heights = tuple(
            _Step(axis, complex_in=axis > 0, complex_out=True, interleaved_out=True)
            for axis in range(rank - 1)
        )
        return (*heights, _Step(rank - 1, complex_in=rank > 1, complex_out=False))
    first = _Step(rank - 1, complex_in=False, complex_out=rank > 1, from_right=True)
    heights = tuple(
        _Step(axis, complex_in=True, complex_out=axis > 0, interleaved_in=stacked)
        for axis in reversed(range(rank - 1))
    )
    return (first, *heights)


def _matrix(q: Pair, step: _Step, n_out: Any, n_in: Any, xp: Any) -> Any:
    """The real matrix of one step: blocks ``[[Re, -Im], [Im, Re]]`` of the axis' complex map
    ``q`` (out, in), cut to the parts the step carries and laid out as it needs; a step from
    the right gets ``q`` transposed (in, out) and returns the transposed matrix. Stacks lay
    the pairs out, so that no transpose runs (a oneDNN transpose is a fixed cost per call in
    a TensorFlow graph, and its gradient another)."""
    re, im = q
    blocks = [[re, -im], [im, re]] if step.complex_out else [[re, -im]]
    if not step.complex_in:
        blocks = [row[:1] for row in blocks]
    pairs_out, pairs_in = len(blocks), len(blocks[0])
    if step.from_right:  # the block transpose of ``blocks``, each block already transposed
        blocks = [[row[i] for row in blocks] for i in range(pairs_in)]
        rows = (step.interleaved_in, pairs_in * n_in)
        cols = (step.interleaved_out, pairs_out * n_out)
    else:
        rows = (step.interleaved_out, pairs_out * n_out)
        cols = (step.interleaved_in, pairs_in * n_in)
    # (row pair, row, col pair, col), each pair beside its index where interleaved
    m = xp.stack(
        [xp.stack(row, axis=2 if cols[0] else 1) for row in blocks], axis=1 if rows[0] else 0
    )
    return xp.reshape(m, (rows[1], cols[1]))


def _transposes_last(steps: tuple[_Step, ...]) -> bool:
    """Whether the last axis' map is wanted transposed: its step multiplies from the right
    (only the last axis' step ever does)."""
    return any(step.from_right for step in steps)


@lru_cache(maxsize=256)
def _fixed_matrices(
    sizes: tuple[int, ...], window: Window, steps: tuple[_Step, ...]
) -> tuple[np.ndarray, ...]:
    """Fixed pooling: the steps' matrices without a mask, once, in float64 numpy."""
    factors = _cached_factors(sizes, window, _transposes_last(steps))
    return tuple(_step_matrices(factors, [None] * len(factors), steps, window, sizes, np_xp))


def _step_matrices(
    factors: Sequence[tuple[Pair, Pair]],
    masks: Sequence[Any],
    steps: tuple[_Step, ...],
    window: Window,
    sizes: Sequence[Any],
    xp: Any,
) -> list[Any]:
    """Each step's real matrix from the axes' factors (the last axis' transposed where
    :func:`_transposes_last`) and masks (``None``: no mask)."""
    maps = [
        _masked_product(left, mask, right, xp)
        for (left, right), mask in zip(factors, masks, strict=True)
    ]
    return [_matrix(maps[s.axis], s, window.output_size[s.axis], sizes[s.axis], xp) for s in steps]


def apply_separable(
    x: Any,
    window: Window,
    masks: Sequence[Any] | None,
    *,
    sizes: Sequence[Any],
    axes: Sequence[int],
    layouts: tuple[str, str] = ("permuted", "permuted"),
    xp: Any,
) -> Any:
    """``y = Re(P_0 .. Q x)`` over the spatial ``axes``, one real GEMM per axis.

    Two layouts of the same products, because frameworks differ in what a GEMM costs;
    ``layouts`` names the one for a channels_first and for a channels_last input:

    * ``"stacked"`` (TensorFlow; jax in channels_last): a small matrix times a stack of
      matrices, with the real and imaginary parts interleaved into the contracted dimension,
      so that no activation is ever transposed: a batched matmul that broadcasts the matrix
      reads such operands as they lie.
    * ``"permuted"`` (torch; jax in channels_first; the default): each product is one plain
      2-D GEMM over the whole batch, at the price of permuting the intermediate (and a
      channels_last input): torch folds a matrix-times-stack product through transposed
      copies of the stack.
    """
    steps, _ = _layout(len(x.shape), axes, layouts)
    if masks is None and not window.is_static(sizes):
        # Symbolic sizes (TensorFlow graph) have no cached matrices: a unit mask instead.
        masks = [d * 0 + 1 for d in window_distances(sizes, window, like=x, xp=xp)]
    if masks is None:
        matrices = [_constant(m, x, xp) for m in _fixed_matrices(tuple(sizes), window, steps)]
    else:
        if window.is_static(sizes):
            factors = [
                tuple((_constant(re, x, xp), _constant(im, x, xp)) for re, im in pair)
                for pair in _cached_factors(tuple(sizes), window, _transposes_last(steps))
            ]
        else:
            factors = _factors(sizes, window, x.dtype, xp, _transposes_last(steps))
        matrices = _step_matrices(factors, masks, steps, window, sizes, xp)
    return apply_matrices(x, matrices, window, sizes=sizes, axes=axes, layouts=layouts, xp=xp)


def _layout(
    ndim: int, axes: Sequence[int], layouts: tuple[str, str]
) -> tuple[tuple[_Step, ...], bool]:
    """The GEMM steps for an ``ndim`` input's layout, and whether they use the stacked
    layout."""
    check_matmul_layouts(layouts, "apply_separable's caller", "layouts")
    return _layout_of(ndim, tuple(axes), tuple(layouts))


@lru_cache(maxsize=64)
def _layout_of(
    ndim: int, axes: tuple[int, ...], layouts: tuple[str, str]
) -> tuple[tuple[_Step, ...], bool]:
    channels_first = axes[-1] % ndim == ndim - 1
    stacked = layouts[0 if channels_first else 1] == "stacked"
    return _steps(len(axes), channels_first, stacked), stacked


def apply_matrices(
    x: Any,
    matrices: Sequence[Any],
    window: Window,
    *,
    sizes: Sequence[Any],
    axes: Sequence[int],
    layouts: tuple[str, str],
    xp: Any,
    program: tuple | None = None,
) -> Any:
    """The GEMMs with the steps' real matrices already built (:func:`planned_matrices`);
    ``program``: :func:`gemm_program`'s for ``x``'s shape, where the caller made it."""
    if program is None:
        program = gemm_program(tuple(x.shape), window, sizes=sizes, axes=axes, layouts=layouts)
    stacked, *rest = program
    if stacked:
        steps, axes = rest
        output_size = tuple(window.output_size)
        return _stacked_gemms(x, list(matrices), steps, axes, sizes, output_size, xp)
    return _permuted_gemms(x, matrices, *rest, xp)


def gemm_program(
    shape: tuple[Any, ...],
    window: Window,
    *,
    sizes: Sequence[Any],
    axes: Sequence[int],
    layouts: tuple[str, str],
) -> tuple:
    """What :func:`apply_matrices` does to an input of ``shape``, decided in plain Python (a
    caller whose shapes are static may keep it): ``(True, steps, axes)`` for the stacked
    layout; for the permuted one ``False``, the input's permutation (or ``None``), each
    step's ``(from_right, permutation or None, shape in, shape out)``, the output's
    permutation."""
    ndim = len(shape)
    steps, stacked = _layout(ndim, axes, layouts)
    axes = [a % ndim for a in axes]
    if stacked:
        return True, steps, axes
    output_size = tuple(window.output_size)
    last = axes[-1]
    labels: list[Any] = [a for a in range(ndim) if a != last] + [last]
    first = None if last == ndim - 1 else tuple(labels)
    current: dict[Any, Any] = {a: shape[a] for a in range(ndim)}
    current[0] = -1  # the batch, which may be unknown (a Keras graph)
    current.update(zip(axes, sizes, strict=True))
    ops = []
    for step in steps:
        axis = axes[step.axis]
        if step.from_right:
            shape_in = (-1, current[axis])
            current[axis] = output_size[step.axis]
            if step.complex_out:
                labels = [*labels[:-1], "pair", axis]
                current["pair"] = 2
            ops.append((True, None, shape_in, tuple(current[a] for a in labels)))
            continue
        front = ["pair", axis] if step.complex_in else [axis]
        rest = [a for a in labels if a not in front]
        order = tuple(labels.index(a) for a in (*front, *rest))
        pairs = 2 if step.complex_in else 1
        shape_in = (pairs * current[axis], -1)
        current[axis] = output_size[step.axis]
        labels = (["pair", axis] if step.complex_out else [axis]) + rest
        ops.append((False, order, shape_in, tuple(current[a] for a in labels)))
    return False, first, tuple(ops), tuple(labels.index(a) for a in range(ndim))


def planned_matrices(
    x: Any,
    window: Window,
    masks: Sequence[np.ndarray],
    *,
    sizes: tuple[int, ...],
    axes: Sequence[int],
    layouts: tuple[str, str],
) -> list[np.ndarray]:
    """Each step's real matrix for concrete masks, built in float64 numpy."""
    steps, _ = _layout(len(x.shape), axes, layouts)
    masks64 = [np.asarray(mask, dtype=np.float64) for mask in masks]
    factors = _cached_factors(sizes, window, _transposes_last(steps))
    return _step_matrices(factors, masks64, steps, window, sizes, np_xp)


def unmasked_matrices(
    x: Any, window: Window, *, sizes: tuple[int, ...], axes: Sequence[int], layouts: tuple[str, str]
) -> tuple[np.ndarray, ...]:
    """Fixed pooling's step matrices for inputs laid out as ``x``, in float64 numpy."""
    steps, _ = _layout(len(x.shape), axes, layouts)
    return _fixed_matrices(sizes, window, steps)


def _constant(array: np.ndarray, like: Any, xp: Any) -> Any:
    return xp.asarray(array, dtype=like.dtype, device=device_of(like))


def _stacked_gemms(
    x: Any,
    matrices: list[Any],
    steps: tuple[_Step, ...],
    axes: list[int],
    sizes: Sequence[Any],
    output_size: tuple[Any, ...],
    xp: Any,
) -> Any:
    """Every GEMM reads its operand as it lies: channels_first, ``x`` rows times the last
    axis' matrix, then each height axis contracted with the interleaved pair beside it;
    channels_last, each height axis (with the pair before it) and then the last axis. A
    step is a matrix times the stack of ``(axis, everything after it)`` slices; sizes may be
    symbolic (TensorFlow graph mode), the batch is left to ``-1``."""
    shape: list[Any] = [-1, *x.shape[1:]]
    for axis, size in zip(axes, sizes, strict=True):
        shape[axis] = size
    t = x
    for step, matrix in zip(steps, matrices, strict=True):
        axis = axes[step.axis]
        if step.from_right:
            t = xp.matmul(xp.reshape(t, (-1, shape[axis])), matrix)
        else:
            inner = 1
            for size in shape[axis + 1 :]:
                inner = inner * size
            pairs = 2 if step.complex_in else 1
            t = xp.matmul(matrix, xp.reshape(t, (-1, pairs * shape[axis], inner)))
        shape[axis] = output_size[step.axis]
    return xp.reshape(t, tuple(shape))


def _permuted_gemms(
    x: Any, matrices: Sequence[Any], first: Any, ops: tuple, last: tuple[int, ...], xp: Any
) -> Any:
    """Each GEMM is a plain 2-D one: the last axis from the right over all rows (a
    channels_last input is first permuted so that it lies innermost), then per height axis
    the intermediate is permuted to ``(pair, axis, rest)`` and multiplied from the left
    (the shapes and permutations: :func:`gemm_program`)."""
    t = x if first is None else xp.permute_dims(x, first)
    for (from_right, order, shape_in, shape_out), matrix in zip(ops, matrices, strict=True):
        if from_right:
            t = xp.matmul(xp.reshape(t, shape_in), matrix)
        else:
            t = xp.matmul(matrix, xp.reshape(xp.permute_dims(t, order), shape_in))
        t = xp.reshape(t, shape_out)
    return xp.permute_dims(t, last)
