"""The choice of compute path: FFTs (with the core's VJP where the backend registers one) or
one GEMM per spatial axis, for a crop already decided.

Both compute the same map (``_agnostic.masked_crop`` and ``_matmul.apply_separable``); which
is faster depends on the framework and the size, so ``method="auto"`` asks the backend
(``Tuning.auto_matmul_max_sizes``). Where sizes are symbolic (TensorFlow graph mode) the backend's
``cond`` chooses at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from diffstride import _agnostic, _matmul, _plan
from diffstride._backend import Backend
from diffstride._options import Options

__all__ = ["chooses_gemms", "compute", "planned"]


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
    kept: bool = False,
) -> Any:
    """The output for ``x``: masked by the ramps at ``thresholds`` (``None``: fixed spectral
    pooling, no mask) on the kept bins of ``window``. ``kept``: the caller may keep constants
    on the device across calls (it could take the host plan), so fixed pooling's GEMM
    matrices are uploaded once (``_plan.fixed_matrices``), not at every call."""
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
        layouts = backend.tuning.matmul_layouts
        if masks is None and kept and window.is_static(sizes):
            matrices = _plan.fixed_matrices(backend, x, window, tuple(sizes), tuple(axes))
            return _matmul.apply_matrices(
                x, matrices, window, sizes=sizes, axes=axes, layouts=layouts, xp=xp
            )
        return _matmul.apply_separable(
            x, window, masks, sizes=sizes, axes=axes, layouts=layouts, xp=xp
        )

    def ffts() -> Any:
        return _fft(backend, x, masks, window, sizes=sizes, axes=axes)

    choice = chooses_gemms(backend, method, sizes, learnable=masks is not None, axes=axes, x=x)
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
    x: Any = None,
) -> bool | None:
    """Whether the GEMMs run: ``method`` says so, or (``"auto"``) every spatial size is
    within the backend's limit and, for DiffStride with the input's ``shape`` and spatial
    ``axes`` given (or the input ``x``, whose shape it is), its sample within the layout's
    bounds (``Tuning.gemms_fit``), and the backend computes GEMMs on ``x`` (where given) at
    its precision (``Backend.exact_gemms``); ``None`` where that depends on symbolic sizes."""
    if shape is None and x is not None:
        shape = x.shape
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
    if x is not None and not backend.exact_gemms(x):
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
    permuted = _on_channels_first_view(
        backend, x, axes, lambda v, inner: _fft(backend, v, masks, window, sizes=sizes, axes=inner)
    )
    if permuted is not None:
        return permuted
    fused = None
    if window.is_static(sizes):
        fused = _fused(backend, window, tuple(sizes), tuple(axes), masks is not None)
    if fused is None:
        xp = backend.namespace()
        return _agnostic.masked_crop(x, masks, window, sizes=sizes, axes=axes, xp=xp)[0]
    return fused(x) if masks is None else fused(x, *masks)


def _on_channels_first_view(
    backend: Backend, x: Any, axes: tuple[int, ...], run: Any
) -> Any | None:
    """``run(view, inner_axes)`` on a view with the spatial axes innermost, permuted back,
    where the backend wants its transforms there (``Tuning.fft_channels_first``) and they
    are not; else ``None``."""
    order = _channels_first_order(backend, x, axes)
    if order is None:
        return None
    xp = backend.namespace()
    ndim = len(order)
    y = run(xp.permute_dims(x, order), tuple(range(ndim - len(axes), ndim)))
    return xp.permute_dims(y, tuple(order.index(a) for a in range(ndim)))


def _channels_first_order(
    backend: Backend, x: Any, axes: tuple[int, ...]
) -> tuple[int, ...] | None:
    """The axes' order of that view, or ``None`` where the FFTs run on ``x`` as it lies."""
    ndim = len(x.shape)
    if not backend.tuning.fft_channels_first or axes[-1] % ndim == ndim - 1:
        return None
    return (*(a for a in range(ndim) if a not in axes), *axes)


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


def planned(
    backend: Backend,
    x: Any,
    learnable: bool,
    values: tuple[float, ...],
    options: Options,
    *,
    output_size: Sequence[int] | None,
    sizes: tuple[int, ...],
    axes: tuple[int, ...],
) -> Callable[[Any, Any], Any]:
    """``run(x, strides)``: the computation by the host plan of the stride ``values`` for
    inputs laid out as ``x`` (``learnable``: ``strides`` is the array they carry the gradient
    to; else it is ignored and they are constants): the transforms, the crop and one
    multiply, or the GEMMs of matrices built off the device; either way with
    :func:`_agnostic.fused_vjp` as the gradient (the same map, so the same VJP). Everything
    that does not depend on ``x``'s values is decided here, so a caller may keep ``run``."""
    gemms = bool(chooses_gemms(backend, options.method, sizes, learnable=True, axes=axes, x=x))
    xp = backend.namespace()
    order = None if gemms else _channels_first_order(backend, x, axes)
    if order is not None:
        x, axes = xp.permute_dims(x, order), tuple(range(len(order) - len(axes), len(order)))
    window, constants = _plan.device_arrays(
        backend, x, values, options, output_size, sizes, axes, gemms=gemms
    )
    ndim = len(x.shape)
    fused = _fused_planned(backend, window, sizes, axes, ndim, options, learnable, gemms)

    def run(x: Any, strides: Any) -> Any:
        return fused(x, strides, *constants) if learnable else fused(x, *constants)

    if order is None:
        return run
    back = tuple(order.index(a) for a in range(len(order)))
    return lambda x, strides: xp.permute_dims(run(xp.permute_dims(x, order), strides), back)


@lru_cache(maxsize=512)
def _fused_planned(
    backend: Backend,
    window: _agnostic.Window,
    sizes: tuple[int, ...],
    axes: tuple[int, ...],
    ndim: int,
    options: Options,
    learnable: bool,
    gemms: bool,
) -> Any:
    """``f(x, [strides,] *constants)`` with :func:`_agnostic.fused_vjp` as its VJP, built
    once per configuration (the crop's slices too, for ``ndim`` inputs); the constants are
    ``(mask, input_scale, stride_weights)``, or on the GEMM path ``(input_scale,
    stride_weights, *matrices)``. The FFT forward keeps the cropped spectrum for the
    backward; the GEMM forward keeps ``x``, whose spectrum the backward computes only where
    the strides want a gradient. Its ``reference`` (for a framework that differentiates the
    backward again) computes the mask from the strides on the device."""
    xp = backend.namespace()
    first = 1 if learnable else 0  # where the constants start after x
    scale_at = first + (0 if gemms else 1)
    keys = _agnostic.crop_keys(ndim, window, axes, sizes)

    layouts = backend.tuning.matmul_layouts
    programs: dict[tuple[int, ...], tuple] = {}  # the GEMMs', by the sizes but the batch

    def forward(x: Any, *rest: Any) -> tuple[Any, Any]:
        if gemms:
            program = programs.get(tuple(x.shape[1:]))
            if program is None:
                program = _matmul.gemm_program(
                    tuple(x.shape), window, sizes=sizes, axes=axes, layouts=layouts
                )
                if len(programs) >= 64:
                    programs.clear()
                programs[tuple(x.shape[1:])] = program
            matrices = rest[scale_at + 2 :]
            y = _matmul.apply_matrices(
                x, matrices, window, sizes=sizes, axes=axes, layouts=layouts, xp=xp, program=program
            )
            return y, x
        mask = rest[first]
        return _agnostic.crop_and_mask(x, mask, window, sizes=sizes, axes=axes, xp=xp, keys=keys)

    def backward(
        residual: Any, primals: tuple[Any, ...], cotangent: Any, needs: tuple[bool, ...]
    ) -> tuple[Any, ...]:
        input_scale, stride_weights = primals[1 + scale_at : 3 + scale_at]
        wants_strides = learnable and needs[1]
        spectrum = residual
        if gemms and wants_strides:
            full = xp.fft.rfftn(residual, axes=axes)
            spectrum = _agnostic.crop(full, window, axes, sizes, xp=xp, keys=keys)
        grad_x, grad_strides = _agnostic.fused_vjp(
            cotangent,
            spectrum,
            input_scale,
            stride_weights if wants_strides else None,
            window,
            sizes=sizes,
            axes=axes,
            need_x=needs[0],
            xp=xp,
        )
        grads = (grad_x, grad_strides) if learnable else (grad_x,)
        return grads + (None,) * (len(primals) - len(grads))

    def reference(x: Any, *rest: Any) -> Any:
        if not learnable:
            return forward(x, *rest)[0]  # linear in x: differentiable as it is
        thresholds = _agnostic.stride_thresholds(
            rest[0], sizes, stop_gradient=backend.stop_gradient, xp=xp, **options.mask_keywords
        )
        masks = _agnostic.window_masks(
            thresholds, window, sizes, options.smoothness_factor, inside=options.inside, xp=xp
        )
        return _agnostic.masked_crop(x, masks, window, sizes=sizes, axes=axes, xp=xp)[0]

    return backend.custom_vjp(forward, backward, reference=reference)
