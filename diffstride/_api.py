"""The functional API: argument checks, then the agnostic core on the chosen backend.

Delegation layer in the array-api-extra sense: every front-end (``diffstride.torch`` ...) and
the dispatching ``diffstride.diffstride`` call :func:`diffstride_on` with a backend; the math
itself lives in ``_agnostic`` and is never repeated here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from array_api_compat import device as _device

from diffstride import _agnostic, _matmul, _sizes
from diffstride._registry import Backend, backend_for, get_backend
from diffstride._validation import (
    check_limits,
    check_method,
    check_ramp,
    check_smoothness_factor,
    check_spatial_sizes,
    check_stride_values,
    spatial_axes,
)

__all__ = [
    "bind",
    "diffstride",
    "diffstride_on",
    "spectral_pooling",
    "spectral_pooling_on",
]


def _check_input(x: Any, data_format: str, xp: Any) -> tuple[int, int]:
    sizes = check_spatial_sizes(tuple(x.shape), data_format)
    _check_dtype(x, xp)
    return sizes


def _check_dtype(x: Any, xp: Any) -> None:
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"x must have a real floating dtype (float32 or float64); received dtype={x.dtype}"
        )


def spatial_sizes(x: Any, data_format: str, backend: Backend) -> tuple[Any, Any]:
    """``(H, W)`` as ints; where the backend allows dynamic shapes (TensorFlow graph mode),
    an unknown size is read at run time as a 0-d integer tensor."""
    if not backend.dynamic_shapes:
        return check_spatial_sizes(tuple(x.shape), data_format)
    sizes = check_spatial_sizes(tuple(x.shape), data_format, allow_unknown=True)
    axes = spatial_axes(data_format)
    return tuple(  # type: ignore[return-value]
        backend.size(x, axis) if size is None else int(size)
        for size, axis in zip(sizes, axes, strict=True)
    )


#: Up to which spatial size ``method="auto"`` takes the GEMM formulation, as
#: ``(DiffStride, fixed spectral pooling)``, unless the adapter says otherwise
#: (``auto_matmul_max_sizes``). Measured on 2 CPU cores (see the README): in torch and jax
#: the FFTs win for DiffStride (torch's with the core's VJP), the GEMMs for fixed pooling of
#: 32x32 maps; TensorFlow's GEMMs won everywhere up to 128x128.
AUTO_MATMUL_MAX_SIZES = (0, 32)


def _use_matmul(
    method: str,
    window: _agnostic.Window,
    sizes: tuple[Any, Any],
    *,
    learnable: bool,
    backend: Backend | None = None,
) -> bool:
    """``auto`` takes the GEMMs for inputs up to the backend's sizes (known statically; where
    they are symbolic and the adapter has ``cond``, :func:`diffstride_on` decides at run time).

    The window itself may be symbolic (TensorFlow graph mode, where the crop follows a stride
    variable): the GEMM path then builds its DFT factors in the graph.
    """
    if method != "auto":
        return method == "matmul"
    return _known(sizes) and max(sizes) <= _auto_limits(backend)[0 if learnable else 1]


def _auto_limits(backend: Backend | None) -> tuple[int, int]:
    return getattr(backend, "auto_matmul_max_sizes", AUTO_MATMUL_MAX_SIZES)


def _known(sizes: tuple[Any, Any]) -> bool:
    """Whether the spatial sizes are ints, not symbolic (TensorFlow graph mode)."""
    return all(isinstance(n, int) for n in sizes)


def _broadcasts(backend: Backend) -> bool:
    """Whether the backend multiplies a matrix by a stack of matrices without copying the
    stack (optional adapter attribute ``broadcast_matmul``; see ``_matmul.apply_separable``)."""
    return bool(getattr(backend, "broadcast_matmul", False))


def _is_empty(x: Any) -> bool:
    return any(size == 0 for size in x.shape)


def _empty_result(x: Any, window: _agnostic.Window, axes: tuple[int, int], xp: Any) -> Any:
    """Some FFT libraries (MKL under torch) reject zero-size batches: build the empty result."""
    shape = list(x.shape)
    shape[axes[0]], shape[axes[1]] = window.output_size
    return xp.zeros(tuple(shape), dtype=x.dtype, device=_device(x))


def _as_strides(
    strides: Any, x: Any, backend: Backend, xp: Any, check_values: bool, want_values: bool
) -> tuple[Any, Any]:
    """``strides`` as a length-1 or -2 array of ``x``'s dtype on ``x``'s device, and its
    values as numpy where they are checked or wanted (read from the device once; ``None``
    where they are symbolic or not wanted)."""
    if backend.owns(strides):
        if tuple(strides.shape) not in ((1,), (2,)):
            raise ValueError(
                "strides must have shape (2,), or (1,) for a shared stride; received an array "
                f"of shape {tuple(strides.shape)}"
            )
        if not xp.isdtype(strides.dtype, "real floating"):
            raise TypeError(
                f"strides must have a real floating dtype; received dtype={strides.dtype}"
            )
        array = strides if strides.dtype == x.dtype else xp.astype(strides, x.dtype)
        values = backend.concrete(array) if check_values or want_values else None
        if check_values and values is not None:
            given = values if array is strides else backend.concrete(strides)
            check_stride_values([float(v) for v in given])
        return array, values
    array = xp.asarray(check_stride_values(strides), dtype=x.dtype, device=_device(x))
    return array, backend.concrete(array) if want_values else None


def _tracing(backend: Backend) -> bool:
    """Does the framework record a graph that a value read would split (torch.compile)?"""
    tracing = getattr(backend, "tracing", None)
    return tracing is not None and bool(tracing())


def _untraced(backend: Backend, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, run outside the framework's tracer where the adapter can say so."""
    untraced = getattr(backend, "untraced", None)
    return fn if untraced is None else untraced(fn)


def _checked_window_for(*args: Any, stride_values: Any, **kwargs: Any) -> _agnostic.Window:
    """:func:`window_for` after the stride-value check, for one untraced call while tracing."""
    check_stride_values([float(v) for v in stride_values])
    return window_for(*args, stride_values=stride_values, **kwargs)


def window_for(
    sizes: tuple[int, int],
    thresholds: tuple[Any, Any],
    *,
    backend: Backend,
    output_size: Any,
    cropping: bool,
    smoothness_factor: float,
    xp: Any,
    stride_values: Any = None,
    limits: tuple[float | None, float | None] = (None, None),
    inside: bool = False,
) -> _agnostic.Window:
    """The crop: a static ``output_size``, the full spectrum, or the bins whose mask is > 0.

    Where the strides' values are known (``stride_values``, eager mode), the window is decided in
    numpy from them, with the same agnostic functions in the same precision (bit-identical,
    one device read instead of a dozen small framework ops); else it is counted from the
    ``thresholds`` the forward pass uses, as symbolic sizes where the backend slices with
    them, or it is an error asking for ``output_size``."""
    if output_size is not None:
        if not _known(sizes):
            raise ValueError(
                f"output_size needs static spatial sizes; received output_size={output_size!r} "
                "for an input whose spatial sizes are only known at run time"
            )
        return _sizes.window_for_size(sizes, output_size)
    if not cropping:
        return _sizes.full_window(sizes)
    if stride_values is not None and _known(sizes):
        return _sizes.concrete_window(
            stride_values,
            sizes,
            smoothness_factor=smoothness_factor,
            cropping=True,
            lower_limit_stride=limits[0],
            upper_limit_stride=limits[1],
            inside=inside,
        )
    counts = _agnostic.kept_counts(*thresholds, sizes, smoothness_factor, inside=inside, xp=xp)
    values = [backend.concrete(count) for count in counts]
    if all(value is not None for value in values):
        return _sizes.window_for_counts(*(int(value) for value in values))
    if backend.dynamic_shapes:
        top, bottom, cols = counts
        return _agnostic.Window(top, bottom, cols, top + bottom, 2 * (cols - 1))
    raise ValueError(
        "strides are traced (for instance under jax.jit), so the crop size is unknown: pass a "
        "static output_size=(h, w); diffstride.output_size(input_size, strides, ...) computes "
        "it. Received output_size=None"
    )


def diffstride_on(
    backend: Backend,
    x: Any,
    strides: Any,
    *,
    smoothness_factor: float = 4.0,
    cropping: bool = True,
    data_format: str = "channels_first",
    lower_limit_stride: float | None = None,
    upper_limit_stride: float | None = None,
    output_size: Sequence[int] | None = None,
    method: str = "auto",
    ramp: str = "outside",
    check_values: bool = True,
) -> Any:
    """DiffStride on an explicit backend; see :func:`diffstride` for the arguments."""
    method = check_method(method)
    inside = check_ramp(ramp) == "inside"
    xp = backend.namespace()
    axes = spatial_axes(data_format)
    sizes = spatial_sizes(x, data_format, backend)
    _check_dtype(x, xp)
    smoothness = check_smoothness_factor(smoothness_factor)
    limits = check_limits(lower_limit_stride, upper_limit_stride)
    want_values = output_size is None and bool(cropping)  # the window follows the values
    # Tracing (torch.compile), a value read splits the graph: the values are then checked
    # only where the window reads them anyway, in the same untraced call (as under jax.jit,
    # where nothing can be read, a static output_size means no check).
    tracing = _tracing(backend)
    stride_array, stride_values = _as_strides(
        strides, x, backend, xp, check_values and not tracing, want_values
    )
    s_h, s_w = _agnostic.effective_strides(
        stride_array,
        sizes,
        smoothness_factor=smoothness,
        lower_limit_stride=limits[0],
        upper_limit_stride=limits[1],
        stop_gradient=backend.stop_gradient,
        inside=inside,
        xp=xp,
    )
    t_h, t_w = _agnostic.thresholds(s_h, s_w, sizes, xp=xp)
    decide = window_for
    if tracing and stride_values is not None:
        decide = _untraced(backend, _checked_window_for if check_values else window_for)
    window = decide(
        sizes,
        (t_h, t_w),
        backend=backend,
        output_size=output_size,
        cropping=bool(cropping),
        smoothness_factor=smoothness,
        xp=xp,
        stride_values=stride_values,
        limits=limits,
        inside=inside,
    )
    if _is_empty(x):
        return _empty_result(x, window, axes, xp)
    masks = _agnostic.window_masks(t_h, t_w, window, sizes, smoothness, inside=inside, xp=xp)

    def gemms() -> Any:
        return _matmul.apply_separable(
            x, window, *masks, sizes=sizes, axes=axes, broadcast=_broadcasts(backend), xp=xp
        )

    def ffts() -> Any:
        return _fft_path(backend, x, masks, window, sizes=sizes, axes=axes, xp=xp)

    if method == "auto" and not _known(sizes) and getattr(backend, "cond", None) is not None:
        limit = _auto_limits(backend)[0]
        return backend.cond((sizes[0] <= limit) & (sizes[1] <= limit), gemms, ffts)
    return (
        gemms() if _use_matmul(method, window, sizes, learnable=True, backend=backend) else ffts()
    )


def _fft_path(
    backend: Backend,
    x: Any,
    masks: tuple[Any, Any] | None,
    window: _agnostic.Window,
    *,
    sizes: tuple[Any, Any],
    axes: tuple[int, int],
    xp: Any,
) -> Any:
    """The FFT formulation, with the core's hand-written VJP where the backend can register
    one (``custom_vjp``) and the sizes are static; else through the framework's autodiff."""
    mask_h, mask_w = (None, None) if masks is None else masks
    if getattr(backend, "custom_vjp", None) is None or not window.is_static(sizes):
        return _agnostic.masked_crop(x, mask_h, mask_w, window, sizes=sizes, axes=axes, xp=xp)[0]
    fused = _fused_fft(backend, window, sizes, axes, masks is not None)
    return fused(x) if masks is None else fused(x, mask_h, mask_w)


@lru_cache(maxsize=512)
def _fused_fft(
    backend: Backend,
    window: _agnostic.Window,
    sizes: tuple[int, int],
    axes: tuple[int, int],
    masked: bool,
) -> Any:
    """``f(x[, mask_h, mask_w])`` with the core's VJP, built once per configuration: a
    framework that traces functions (jax, tf.function) caches on the function's identity."""
    xp = backend.namespace()

    def unpack(primals: tuple[Any, ...]) -> tuple[Any, Any, Any]:
        return (*primals, None, None) if not masked else primals  # type: ignore[return-value]

    def forward(*primals: Any) -> tuple[Any, Any]:
        return _agnostic.masked_crop(*unpack(primals), window, sizes=sizes, axes=axes, xp=xp)

    def backward(
        spectrum: Any, primals: tuple[Any, ...], cotangent: Any, needs: tuple[bool, ...]
    ) -> tuple[Any, ...]:
        _, mask_h, mask_w = unpack(primals)
        grads = _agnostic.masked_crop_vjp(
            cotangent,
            spectrum,
            mask_h,
            mask_w,
            window,
            sizes=sizes,
            axes=axes,
            needs=(*needs, False, False)[:3],
            xp=xp,
        )
        return grads[: len(primals)]

    return backend.custom_vjp(forward, backward)  # type: ignore[attr-defined]


def spectral_pooling_on(
    backend: Backend,
    x: Any,
    strides: Any,
    *,
    data_format: str = "channels_first",
    method: str = "auto",
) -> Any:
    """Fixed spectral pooling on an explicit backend; see :func:`spectral_pooling`."""
    method = check_method(method)
    xp = backend.namespace()
    axes = spatial_axes(data_format)
    sizes = _check_input(x, data_format, xp)
    if backend.owns(strides):
        strides = [float(v) for v in backend.concrete(strides)]
    window = _sizes.spectral_window(sizes, check_stride_values(strides))
    if _is_empty(x):
        return _empty_result(x, window, axes, xp)
    if _use_matmul(method, window, sizes, learnable=False, backend=backend):
        return _matmul.apply_separable(
            x, window, None, None, sizes=sizes, axes=axes, broadcast=_broadcasts(backend), xp=xp
        )
    return _fft_path(backend, x, None, window, sizes=sizes, axes=axes, xp=xp)


def _backend(x: Any, backend: str | None) -> Backend:
    return backend_for(x) if backend is None else get_backend(backend)


def diffstride(
    x: Any,
    strides: Any,
    *,
    smoothness_factor: float = 4.0,
    cropping: bool = True,
    data_format: str = "channels_first",
    lower_limit_stride: float | None = None,
    upper_limit_stride: float | None = None,
    output_size: Sequence[int] | None = None,
    method: str = "auto",
    ramp: str = "outside",
    backend: str | None = None,
) -> Any:
    """Spectral pooling with learnable strides (Riad et al., ICLR 2022).

    Dispatches on ``x``'s library (numpy, torch, tensorflow, jax, array_api_strict or a
    registered plugin); gradients with respect to ``x`` and ``strides`` come from that
    framework's autodiff.

    Parameters
    ----------
    x
        Rank-4 real floating array, ``(N, C, H, W)`` or ``(N, H, W, C)``; H, W >= 2.
    strides
        Two strides (height, width) or one shared stride, each >= 1: a sequence of numbers
        or an array of ``x``'s library (differentiable).
    smoothness_factor
        Width ``R`` of the mask's ramp, >= 0; ``0`` is a hard crop with no stride gradient.
    cropping
        Drop the bins where the mask is zero (True), or keep the full masked spectrum.
    data_format
        ``"channels_first"`` or ``"channels_last"``.
    lower_limit_stride, upper_limit_stride
        Bounds of the effective strides; outside them the stride gradient is zero.
    output_size
        Static ``(h, w)`` that fixes the crop (needed under ``jax.jit``); by default it is
        computed from the concrete stride values.
    method
        ``"fft"`` (transforms), ``"matmul"`` (the same map as two real GEMMs) or ``"auto"``
        (by backend and input size; see ``AUTO_MATMUL_MAX_SIZES``).
    ramp
        Where the mask's ramp of width ``R`` lies: ``"outside"`` (default, the original)
        from the stride's threshold ``T`` outwards, ``clip((R + T - d) / R, 0, 1)``, which
        keeps about ``2R`` more rows and columns than the stride implies; or ``"inside"``,
        ``clip((T - d) / R, 0, 1)``, which ends at ``T``, so that the output is within one
        pixel of ``N / S``, like the strided layer it replaces (and costs what it costs).
        The inside ramp needs no minimum stride: any ``S >= 1`` is used as it is.
    backend
        Force a registered backend by name instead of dispatching on ``x``.

    Returns
    -------
    The pooled array, same library and dtype as ``x``.

    Examples
    --------
    >>> import numpy as np, diffstride
    >>> x = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    >>> diffstride.diffstride(x, (2.0, 2.0)).shape
    (1, 3, 24, 24)
    >>> diffstride.diffstride(x, (2.0, 2.0), ramp="inside").shape
    (1, 3, 16, 16)
    """
    return diffstride_on(
        _backend(x, backend),
        x,
        strides,
        smoothness_factor=smoothness_factor,
        cropping=cropping,
        data_format=data_format,
        lower_limit_stride=lower_limit_stride,
        upper_limit_stride=upper_limit_stride,
        output_size=output_size,
        method=method,
        ramp=ramp,
    )


def spectral_pooling(
    x: Any,
    strides: Any,
    *,
    data_format: str = "channels_first",
    method: str = "auto",
    backend: str | None = None,
) -> Any:
    """Fixed spectral pooling: the crop of the original ``FixedSpectralPooling``, no mask.

    >>> import numpy as np, diffstride
    >>> x = np.zeros((2, 3, 33, 17), dtype=np.float32)
    >>> diffstride.spectral_pooling(x, (2, 3)).shape
    (2, 3, 16, 5)
    """
    return spectral_pooling_on(
        _backend(x, backend), x, strides, data_format=data_format, method=method
    )


def bind(backend_name: str) -> tuple[Any, Any]:
    """``diffstride`` and ``spectral_pooling`` fixed to one backend, for a front-end module.

    The adapter is loaded here, when the front-end is imported, not at the first call: a
    first call under ``torch.compile`` could not trace the entry-point lookup. The untraced
    window decisions are built here too, so that a tracer does not build them."""
    backend = get_backend(backend_name)
    for decide in (window_for, _checked_window_for):
        _untraced(backend, decide)

    def bound_diffstride(
        x: Any,
        strides: Any,
        *,
        smoothness_factor: float = 4.0,
        cropping: bool = True,
        data_format: str = "channels_first",
        lower_limit_stride: float | None = None,
        upper_limit_stride: float | None = None,
        output_size: Sequence[int] | None = None,
        method: str = "auto",
        ramp: str = "outside",
    ) -> Any:
        return diffstride_on(
            backend,
            x,
            strides,
            smoothness_factor=smoothness_factor,
            cropping=cropping,
            data_format=data_format,
            lower_limit_stride=lower_limit_stride,
            upper_limit_stride=upper_limit_stride,
            output_size=output_size,
            method=method,
            ramp=ramp,
        )

    def bound_spectral_pooling(
        x: Any, strides: Any, *, data_format: str = "channels_first", method: str = "auto"
    ) -> Any:
        return spectral_pooling_on(backend, x, strides, data_format=data_format, method=method)

    for bound, generic in (
        (bound_diffstride, diffstride),
        (bound_spectral_pooling, spectral_pooling),
    ):
        bound.__name__ = bound.__qualname__ = generic.__name__
        bound.__doc__ = (
            f"{generic.__name__} for {backend_name} arrays; the same arguments as "
            f"``diffstride.{generic.__name__}`` (without ``backend``)."
        )
    return bound_diffstride, bound_spectral_pooling
