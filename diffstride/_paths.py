"""The choice of compute path: FFTs (with the core's VJP where the backend registers one) or
one GEMM per spatial axis, for a crop already decided.

Both compute the same map (``_agnostic.masked_crop`` and ``_matmul.apply_separable``); which
is faster depends on the framework and the size, so ``method="auto"`` asks the backend
(``Tuning.auto_matmul_max_sizes``). Where sizes are symbolic (TensorFlow graph mode) the backend's
``cond`` chooses at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from diffstride import _agnostic, _matmul
from diffstride._backend import Backend

__all__ = ["chooses_gemms", "compute"]


def compute(
    backend: Backend,
    x: Any,
    thresholds: Sequence[Any] | None,
    window: _agnostic.Window,
    *,
    sizes: tuple[Any, ...],
    axes: tuple[int, ...],
    method: str,
    smoothness_factor: float = 0.0,
    inside: bool = False,
) -> Any:
    """The output for ``x``: masked by the ramps at ``thresholds`` (``None``: fixed spectral
    pooling, no mask) on the kept bins of ``window``."""
    xp = backend.namespace()
    if any(size == 0 for size in x.shape):  # some FFT libraries (MKL) reject empty batches
        shape = list(x.shape)
        for axis, size in zip(axes, window.output_size, strict=True):
            shape[axis] = size
        empty = xp.zeros(tuple(shape), dtype=x.dtype, device=_agnostic.device_of(x))
        # Still a function of x and of the strides (zero gradients), so that autograd reaches
        # the layers upstream and an empty shard joins a data-parallel step like the others.
        inputs = [x, *(t for t in thresholds or () if not isinstance(t, (int, float)))]
        return empty + sum(xp.astype(xp.sum(t), x.dtype) * 0 for t in inputs)
    masks = None
    if thresholds is not None:
        masks = _agnostic.window_masks(
            thresholds, window, sizes, smoothness_factor, inside=inside, xp=xp
        )

    def gemms() -> Any:
        return _matmul.apply_separable(
            x, window, masks, sizes=sizes, axes=axes, layouts=backend.tuning.matmul_layouts, xp=xp
        )

    def ffts() -> Any:
        return _fft(backend, x, masks, window, sizes=sizes, axes=axes)

    choice = chooses_gemms(
        backend, method, sizes, learnable=masks is not None, shape=x.shape, axes=axes
    )
    if choice is not None:
        return gemms() if choice else ffts()
    limit = backend.tuning.auto_matmul_max_sizes[0 if masks is not None else 1]
    symbolic = [n <= limit for n in sizes if not isinstance(n, int)]
    predicate = symbolic[0]
    for small in symbolic[1:]:
        predicate = predicate & small
    return backend.cond(predicate, gemms, ffts)


def chooses_gemms(
    backend: Backend,
    method: str,
    sizes: Sequence[Any],
    *,
    learnable: bool,
    shape: Sequence[Any] | None = None,
    axes: Sequence[int] | None = None,
) -> bool | None:
    """Whether the GEMMs run: ``method`` says so, or (``"auto"``) every spatial size is
    within the backend's limit and, for DiffStride with the input's ``shape`` and spatial
    ``axes`` given, its sample within the layout's bounds (``Tuning.gemms_fit``); ``None``
    where that depends on symbolic sizes."""
    if method != "auto":
        return method == "matmul"
    limit = backend.tuning.auto_matmul_max_sizes[0 if learnable else 1]
    if any(isinstance(n, int) and n > limit for n in sizes):
        return False
    if (
        learnable
        and shape is not None
        and axes is not None
        and not backend.tuning.gemms_fit(tuple(shape), tuple(axes))
    ):
        return False
    return True if all(isinstance(n, int) for n in sizes) else None


def _fft(
    backend: Backend,
    x: Any,
    masks: Sequence[Any] | None,
    window: _agnostic.Window,
    *,
    sizes: tuple[Any, ...],
    axes: tuple[int, ...],
) -> Any:
    """The FFT formulation, with the core's hand-written VJP where the backend can register
    one and the sizes are static; else through the framework's autodiff."""
    ndim = len(x.shape)
    if backend.tuning.fft_channels_first and axes[-1] % ndim != ndim - 1:
        xp = backend.namespace()
        order = (*(a for a in range(ndim) if a not in axes), *axes)
        inner = tuple(range(ndim - len(axes), ndim))
        y = _fft(backend, xp.permute_dims(x, order), masks, window, sizes=sizes, axes=inner)
        return xp.permute_dims(y, tuple(order.index(a) for a in range(ndim)))
    fused = None
    if window.is_static(sizes):
        fused = _fused(backend, window, tuple(sizes), tuple(axes), masks is not None)
    if fused is None:
        xp = backend.namespace()
        return _agnostic.masked_crop(x, masks, window, sizes=sizes, axes=axes, xp=xp)[0]
    return fused(x) if masks is None else fused(x, *masks)


@lru_cache(maxsize=512)
def _fused(
    backend: Backend,
    window: _agnostic.Window,
    sizes: tuple[int, ...],
    axes: tuple[int, ...],
    masked: bool,
) -> Any:
    """``f(x, *masks)`` with the core's VJP, built once per configuration (a framework that
    traces functions caches on the function's identity); ``None`` where the backend has no
    custom VJP."""
    xp = backend.namespace()

    def forward(x: Any, *masks: Any) -> tuple[Any, Any]:
        return _agnostic.masked_crop(
            x, masks if masked else None, window, sizes=sizes, axes=axes, xp=xp
        )

    def backward(
        spectrum: Any, primals: tuple[Any, ...], cotangent: Any, needs: tuple[bool, ...]
    ) -> tuple[Any, ...]:
        _, *masks = primals
        grads = _agnostic.masked_crop_vjp(
            cotangent,
            spectrum,
            masks if masked else None,
            window,
            sizes=sizes,
            axes=axes,
            needs=tuple(needs) + (False,) * (len(sizes) + 1 - len(needs)),
            xp=xp,
        )
        return grads[: len(primals)]

    return backend.custom_vjp(forward, backward)
