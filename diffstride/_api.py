"""The functional API: one call path from the arguments to the agnostic core.

Delegation layer in the array-api-extra sense. A call goes down once: the input's shape and
dtype are checked (``_validation.check_input``), the strides become one array, the agnostic core
computes the effective strides and the thresholds (once), ``_crop`` decides the crop,
``_paths`` runs the chosen computation. Every front-end (``diffstride.torch`` ...) binds these
functions to its backend (:func:`bind`); the layers call :func:`diffstride_on` with the
:class:`~diffstride._options.Options` they hold.

A call that takes the host plan (``_plan``: eager, stride values readable) keeps what it
built, a runner, under everything that decided it (``_runner_key``: the input's type, shape,
dtype and device, the options, the strides' kind and values...). A repeat call, as in
inference or a frozen layer, finds it with one look-up and runs the framework's ops: on a
tiny input the checks and decisions of the long way cost several times the FFTs themselves.
Only calls that passed every check are kept, so an equal key proves them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from diffstride import _agnostic, _crop, _paths, _plan, _sizes, _tracing
from diffstride._backend import Backend
from diffstride._options import Options, with_options
from diffstride._recent import Recent
from diffstride._registry import backend_for, get_backend
from diffstride._validation import (
    check_data_format,
    check_input,
    check_method,
    check_stride_values,
    spatial_axes,
)

__all__ = [
    "bind",
    "diffstride",
    "diffstride_on",
    "prepare",
    "spectral_pooling",
    "spectral_pooling_on",
]


_DEFAULT_OPTIONS = Options()
#: The host plan's runners of recent calls (``_runner_key``): a repeat call looks one up.
_RUNNERS = Recent(64)


def _as_strides(strides: Any, x: Any, rank: int, backend: Backend, xp: Any, name: str) -> Any:
    """``strides`` as a length-1 or -k array of ``x``'s dtype on ``x``'s device."""
    if not backend.owns(strides):
        values = check_stride_values(strides, rank=rank, name=name)
        return xp.asarray(values, dtype=x.dtype, device=_agnostic.device_of(x))
    if tuple(strides.shape) not in ((1,), (rank,)):
        raise ValueError(
            f"{name} must have shape ({rank},), or (1,) for a shared stride; received an array "
            f"of shape {tuple(strides.shape)}"
        )
    if not xp.isdtype(strides.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype; received dtype={strides.dtype}")
    return strides if strides.dtype == x.dtype else xp.astype(strides, x.dtype)


@dataclass(frozen=True)
class Prepared:
    """What a DiffStride call has decided before it computes anything large."""

    sizes: tuple[Any, ...]
    axes: tuple[int, ...]
    strides: Any
    thresholds: tuple[Any, ...]
    window: _agnostic.Window


def prepare(
    backend: Backend,
    x: Any,
    strides: Any,
    options: Options,
    *,
    output_size: Sequence[int] | None = None,
    sizes: tuple[Any, ...] | None = None,
    check_values: bool | str = True,
    name: str = "strides",
) -> Prepared:
    """Check the input (unless the caller passes the ``sizes`` it checked), compute the
    thresholds once, and decide the crop."""
    xp = backend.namespace()
    if sizes is None:
        sizes = check_input(x, options.data_format, backend)
    axes = options.axes(len(x.shape))
    stride_array = _as_strides(strides, x, len(sizes), backend, xp, name)
    thresholds = _agnostic.stride_thresholds(
        stride_array, sizes, stop_gradient=backend.stop_gradient, xp=xp, **options.mask_keywords
    )
    window = _crop.decide(
        backend,
        sizes,
        thresholds,
        stride_array,
        options,
        output_size,
        check_values=check_values,
        name=name,
    )
    return Prepared(sizes, axes, stride_array, thresholds, window)


def diffstride_on(
    backend: Backend,
    x: Any,
    strides: Any,
    options: Options | None = None,
    *,
    output_size: Sequence[int] | None = None,
    sizes: tuple[Any, ...] | None = None,
    check_values: bool | str = True,
    name: str = "strides",
    host_strides: Sequence[float] | None = None,
    host_plan: bool = True,
) -> Any:
    """DiffStride on an explicit backend with validated ``options``; see :func:`diffstride`.
    A layer passes the ``sizes`` it has checked, ``name`` for its errors, how its stored
    strides are checked where they can be read (``_crop.check_read_strides``), and their
    values where it holds a host copy that is known to be current (nothing is read then).
    ``host_plan=False`` keeps the device path, whose graph follows the strides: what an
    exporter must record (the host plan's arrays would be constants of the graph)."""
    options = _DEFAULT_OPTIONS if options is None else options
    values = _plan_values(backend, x, strides, host_strides) if host_plan else None
    key = None
    if values is not None:
        settings = (options, _typed(output_size), sizes, check_values)
        key = _runner_key(backend, x, strides, values, *settings)
        planned = _RUNNERS.get(key)
        if planned is not None:
            return planned(x, strides)
    if sizes is None:
        sizes = check_input(x, options.data_format, backend)
    if values is not None:
        args = (options, output_size, sizes, check_values, name)
        planned = _planned(backend, x, strides, values, *args)
        _RUNNERS.put(key, planned)
        return planned(x, strides)

    def run(full: Any) -> Any:
        prepared = prepare(
            backend,
            full,
            strides,
            options,
            output_size=output_size,
            sizes=sizes,
            check_values=check_values,
            name=name,
        )
        return _paths.compute(
            backend,
            full,
            prepared.thresholds,
            prepared.window,
            sizes=prepared.sizes,
            axes=prepared.axes,
            method=options.method,
            smoothness_factor=options.smoothness_factor,
            inside=options.inside,
        )

    return _at_full_precision(backend, x, run)


def _plan_values(
    backend: Backend, x: Any, strides: Any, host_strides: Sequence[float] | None
) -> Any | None:
    """The stride values for the host plan (``_plan``), as given or read, not yet checked
    (strides given as numbers: as they are); ``None`` where the call cannot take the plan:
    a tracer, a backend without a ``custom_vjp`` that takes a ``reference``, symbolic sizes,
    an empty input, or strides whose values cannot be read."""
    if not _takes_plan(backend, x):
        return None
    if not backend.owns(strides):
        return strides
    if host_strides is not None:
        return tuple(host_strides)
    values = backend.concrete(strides)
    return None if values is None else tuple(np.asarray(values).reshape(-1).tolist())


def _takes_plan(backend: Backend, x: Any) -> bool:
    """Whether a call on ``x`` can take the host plan (``_plan``) and keep its constants on
    the device: not tracing, a backend that supports it, a non-empty input of static shape."""
    return not backend.tracing() and _plan.supports(backend) and _positive_ints(tuple(x.shape))


def _positive_ints(shape: tuple[Any, ...]) -> bool:
    """Whether ``shape`` is static and not empty (a shape seen before: one look-up)."""
    try:
        return _positive_shape(shape)
    except TypeError:  # a symbolic size that cannot be hashed
        return False


@lru_cache(maxsize=256)
def _positive_shape(shape: tuple[Any, ...]) -> bool:
    return all(isinstance(n, int) and n > 0 for n in shape)


def _runner_key(
    backend: Backend, x: Any, strides: Any, values: Any, *settings: Any
) -> tuple[Any, ...] | None:
    """What decides a host plan's runner and its checks, with the call's other ``settings``
    (hashable: numbers given as Python values keyed by :func:`_typed`). A call with an equal
    key passed every check of the first (only runners of calls that passed are kept), so it
    skips them. ``None`` where a value cannot be hashed (the call goes the long way)."""
    if backend.owns(strides):
        described = (type(strides), tuple(strides.shape), strides.dtype, values)
    else:
        described = _typed(strides)
    device = getattr(x, "device", None)
    if callable(device):  # not a value (a method): no key, rather than one that keeps x
        return None
    key = (backend, type(x), tuple(x.shape), x.dtype, device, described, *settings)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _typed(value: Any) -> tuple[Any, ...]:
    """A number or a sequence of them (or ``None``) as a key that tells ``2``, ``2.0`` and
    ``True`` apart (``True`` is refused where ``1.0`` is not)."""
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(map(type, value)), tuple(value))
    return (type(value), value)


def _planned(
    backend: Backend,
    x: Any,
    strides: Any,
    values: Any,
    options: Options,
    output_size: Sequence[int] | None,
    sizes: tuple[Any, ...],
    check_values: bool | str,
    name: str,
) -> Any:
    """``run(x, strides)`` by the host plan (``_plan``) of the stride ``values``
    (:func:`_plan_values`), after the checks of a first call: the strides' shape and dtype,
    then their values. Runs at full precision, as :func:`_at_full_precision` does."""
    xp = backend.namespace()
    full = _full_precision(xp, x)
    learnable = backend.owns(strides)
    if learnable:
        _as_strides(strides, full, len(sizes), backend, xp, name)
        if check_values:
            _crop.check_read_strides(values, len(sizes), check_values, name)
    else:
        values = check_stride_values(strides, rank=len(sizes), name=name)
    with backend.full_precision():
        run = _paths.planned(
            backend,
            full,
            learnable,
            tuple(float(v) for v in values),
            options,
            output_size=output_size,
            sizes=sizes,
            axes=options.axes(len(x.shape)),
        )
    dtype = full.dtype  # not ``full``: a kept runner must not keep an input alive

    def planned(x: Any, strides: Any) -> Any:
        if learnable and strides.dtype != dtype:
            strides = xp.astype(strides, dtype)
        if x.dtype != dtype:
            return _at_full_precision(backend, x, lambda full: run(full, strides))
        with backend.full_precision():  # as _at_full_precision, with nothing to cast
            return run(x, strides)

    return planned


def _at_full_precision(backend: Backend, x: Any, run: Any) -> Any:
    """``run(x)`` with a half-precision ``x`` (float16, bfloat16) in float32 and the
    framework's automatic mixed precision off: the FFTs and GEMMs, the crop decision and the
    strides all run in float32; the result comes back in ``x``'s dtype."""
    xp = backend.namespace()
    full = _full_precision(xp, x)
    with backend.full_precision():
        y = run(full)
    return y if y.dtype == x.dtype else xp.astype(y, x.dtype)


def _full_precision(xp: Any, x: Any) -> Any:
    """``x``, or in float32 where it is in half precision."""
    full_dtypes = (xp.float32, getattr(xp, "float64", xp.float32))  # float64 is optional
    return x if x.dtype in full_dtypes else xp.astype(x, xp.float32)


def spectral_pooling_on(
    backend: Backend,
    x: Any,
    strides: Any,
    *,
    data_format: str = "channels_first",
    method: str = "auto",
    sizes: tuple[int, ...] | None = None,
) -> Any:
    """Fixed spectral pooling on an explicit backend; see :func:`spectral_pooling`."""
    method = check_method(method)
    data_format = check_data_format(data_format)
    if sizes is None:
        sizes = check_input(x, data_format, backend)
    if backend.owns(strides):
        strides = [float(v) for v in backend.concrete(strides)]
    strides = check_stride_values(strides, rank=len(sizes))
    if all(isinstance(n, int) for n in sizes):
        window = _sizes.spectral_window(sizes, strides)
    elif backend.dynamic_shapes:
        # Sizes known at run time only (after a DiffStride in a TensorFlow graph).
        window = _agnostic.spectral_window(sizes, strides, xp=backend.namespace())
    else:
        raise ValueError(
            f"spectral pooling needs static spatial sizes; received an input of shape "
            f"{tuple(x.shape)} whose spatial sizes are only known at run time"
        )
    axes = spatial_axes(data_format, len(x.shape))
    kept = _takes_plan(backend, x)

    def run(full: Any) -> Any:
        return _paths.compute(
            backend, full, None, window, sizes=sizes, axes=axes, method=method, kept=kept
        )

    return _at_full_precision(backend, x, run)


@with_options
def diffstride(
    x: Any,
    strides: Any,
    *,
    output_size: Sequence[int] | None = None,
    backend: str | Backend | None = None,
    **options: Any,
) -> Any:
    """Spectral pooling with learnable strides (Riad et al., ICLR 2022), over 1, 2 or 3
    spatial axes.

    Dispatches on ``x``'s library (numpy, torch, tensorflow, jax, array_api_strict or a
    registered plugin); gradients with respect to ``x`` and ``strides`` come from that
    framework's autodiff.

    Parameters
    ----------
    x
        Real floating array ``(N, C, *spatial)`` (channels_first) or ``(N, *spatial, C)``
        (channels_last), with 1, 2 or 3 spatial axes of size >= 2.
    strides
        One stride per spatial axis or one shared stride, each >= 1: a sequence of numbers
        or an array of ``x``'s library (differentiable).
    {options}
    output_size
        Static output sizes (one per spatial axis) that fix the crop (needed under
        ``jax.jit``); by default it is computed from the concrete stride values.
    backend
        Force a backend (a registered name, or a ``diffstride.Backend`` instance) instead of
        dispatching on ``x``.

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
    >>> diffstride.diffstride(np.zeros((1, 1, 64), np.float32), 4.0).shape
    (1, 1, 24)
    """
    config = Options.from_kwargs(options, where="diffstride()")
    return diffstride_on(_chosen(x, backend), x, strides, config, output_size=output_size)


def spectral_pooling(
    x: Any,
    strides: Any,
    *,
    data_format: str = "channels_first",
    method: str = "auto",
    backend: str | Backend | None = None,
) -> Any:
    """Fixed spectral pooling: the crop of the original ``FixedSpectralPooling``, no mask,
    over 1, 2 or 3 spatial axes.

    >>> import numpy as np, diffstride
    >>> x = np.zeros((2, 3, 33, 17), dtype=np.float32)
    >>> diffstride.spectral_pooling(x, (2, 3)).shape
    (2, 3, 16, 5)
    """
    chosen = _chosen(x, backend)
    return spectral_pooling_on(chosen, x, strides, data_format=data_format, method=method)


def _chosen(x: Any, backend: str | Backend | None) -> Backend:
    if backend is None:
        return backend_for(x)
    return backend if isinstance(backend, Backend) else get_backend(backend)


def bind(backend_name: str) -> tuple[Any, Any]:
    """``diffstride`` and ``spectral_pooling`` fixed to one backend, for a front-end module.

    The adapter is loaded here, when the front-end is imported, not at the first call: a
    first call under ``torch.compile`` could not trace the entry-point lookup. The untraced
    crop decision is made here too, so that a tracer does not make it."""
    backend = get_backend(backend_name)
    _tracing.prepare(backend, [_crop.read_window])

    def bound_diffstride(
        x: Any, strides: Any, *, output_size: Sequence[int] | None = None, **options: Any
    ) -> Any:
        config = Options.from_kwargs(options, where="diffstride()")
        return diffstride_on(backend, x, strides, config, output_size=output_size)

    def bound_spectral_pooling(
        x: Any, strides: Any, *, data_format: str = "channels_first", method: str = "auto"
    ) -> Any:
        return spectral_pooling_on(backend, x, strides, data_format=data_format, method=method)

    for bound, generic in (
        (bound_diffstride, diffstride),
        (bound_spectral_pooling, spectral_pooling),
    ):
        bound.__name__ = bound.__qualname__ = generic.__name__
        bound.__module__ = f"diffstride.{backend_name}"
        bound.__doc__ = (
            f"{generic.__name__} for {backend_name} arrays; the same arguments as "
            f"``diffstride.{generic.__name__}`` (without ``backend``)."
        )
    with_options(bound_diffstride)
    return bound_diffstride, bound_spectral_pooling
