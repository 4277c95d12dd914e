"""The host plan: a call whose stride values are known (eager) decides everything that depends
on them alone off the accelerator, once.

The effective strides, thresholds, crop, masks and the masks' derivatives by the strides are a
few dozen numbers, yet on the device each is a framework op: written elementwise, they were most
of a call's ops (each a kernel launch on a GPU) and their autodiff most of its backward. Here
the core's own functions compute them with numpy, in the input's precision (elementwise IEEE
arithmetic, so the values are those the framework would compute), and
``_agnostic.fused_constants`` folds them into three arrays: the mask, the input gradient's
scale and the strides' gradient weights (and, on the GEMM path, each step's matrix). The
device then runs the transforms, the crop and one multiply (or the GEMMs) forward, and the
transforms and one contraction backward (``_agnostic.crop_and_mask`` / ``fused_vjp``,
registered by the backend's ``custom_vjp``; both paths compute one map, so they share it).

Both caches are keyed on the stride values: a repeat call with unchanged strides (inference, a
frozen layer) uploads nothing; a training step, whose strides change, builds and uploads once.
Where values cannot be read (``jit``, graph mode, ``vmap`` over the strides) or the backend
has no ``custom_vjp``, the call takes the general path, which builds the mask on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import array_api_compat.numpy as np_xp
import numpy as np

from diffstride import _agnostic, _matmul, _sizes
from diffstride._backend import Backend
from diffstride._options import Options
from diffstride._recent import Recent

__all__ = ["Plan", "device_arrays", "fixed_matrices", "host_plan", "supports"]


@dataclass(frozen=True, eq=False)
class Plan:
    """What one set of stride values decides for inputs of one size and precision; ``key``
    is what it was built from (hashable, unlike the arrays)."""

    key: tuple[Any, ...]
    window: _agnostic.Window
    masks: tuple[np.ndarray, ...]
    jacobians: tuple[np.ndarray, ...]

    @property
    def shared(self) -> bool:
        return len(self.key[0]) == 1


@lru_cache(maxsize=256)
def _thresholds(
    values: tuple[float, ...], sizes: tuple[int, ...], options: Options, dtype: str
) -> tuple[np.ndarray, tuple[np.ndarray, ...], _agnostic.Window]:
    """The strides as an array, the thresholds, and the crop they decide."""
    strides = np.asarray(values, dtype=dtype)
    thresholds = _agnostic.stride_thresholds(
        strides, sizes, stop_gradient=np.asarray, xp=np_xp, **options.mask_keywords
    )
    window = _sizes.window_from_thresholds(
        thresholds, sizes, options.smoothness_factor, inside=options.inside
    )
    return strides, thresholds, window


@lru_cache(maxsize=256)
def host_plan(
    values: tuple[float, ...],
    sizes: tuple[int, ...],
    options: Options,
    window: _agnostic.Window | None,
    dtype: str,
) -> Plan:
    """The plan for stride ``values`` (length 1: shared) in ``dtype`` (``"float32"`` or
    ``"float64"``); ``window`` is the crop where the caller fixed it (``output_size``,
    ``cropping=False``), else it is decided from the thresholds, as every path decides it."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # huge strides
        strides, thresholds, decided = _thresholds(values, sizes, options, dtype)
        if window is None:
            return host_plan(values, sizes, options, decided, dtype)
        masks = _agnostic.window_masks(
            thresholds, window, sizes, options.smoothness_factor, inside=options.inside, xp=np_xp
        )
        jacobians = _agnostic.mask_jacobians(
            strides,
            thresholds,
            window,
            sizes,
            **options.mask_keywords,
            xp=np_xp,
        )
    return Plan((values, sizes, options, window, dtype), window, tuple(masks), jacobians)


_DEVICE_ARRAYS = Recent(64)


def _on_device(backend: Backend, key: tuple[Any, ...], like: Any, build: Any) -> tuple[Any, ...]:
    """``build()``'s numpy arrays as ``backend`` arrays on ``like``'s device, once per
    ``key`` and device (a small LRU cache)."""
    device = _agnostic.device_of(like)
    key = (backend.name, *key, len(like.shape), str(like.dtype), _device_key(device))
    cached = _DEVICE_ARRAYS.get(key)
    if cached is not None:
        return cached
    with backend.reusable_arrays():
        arrays = tuple(backend.upload(build(), device))
    _DEVICE_ARRAYS.put(key, arrays)
    return arrays


def _device_key(device: Any) -> Any:
    try:
        hash(device)
    except TypeError:
        return repr(device)
    return device


def fixed_matrices(
    backend: Backend,
    x: Any,
    window: _agnostic.Window,
    sizes: tuple[int, ...],
    axes: tuple[int, ...],
) -> tuple[Any, ...]:
    """Fixed pooling's GEMM matrices for inputs laid out as ``x``, on its device in its
    precision: uploaded once per configuration, not at every call."""
    layouts = backend.tuning.matmul_layouts
    dtype = _precision(backend, x)

    def build() -> list[np.ndarray]:
        matrices = _matmul.unmasked_matrices(x, window, sizes=sizes, axes=axes, layouts=layouts)
        return [np.asarray(m, dtype=dtype) for m in matrices]

    return _on_device(backend, ("fixed", sizes, window, axes, layouts), x, build)


def _precision(backend: Backend, x: Any) -> str:
    """The numpy dtype of ``x``'s precision (``x`` is float32 or float64 here)."""
    return "float64" if x.dtype == backend.namespace().float64 else "float32"


@cache
def supports(backend: Backend) -> bool:
    """Whether ``backend`` registers hand-written VJPs with a differentiable ``reference``
    (``Backend.custom_vjp``; an adapter written before ``reference`` existed does not)."""
    try:
        return backend.custom_vjp(_unused, _unused, reference=_unused) is not None
    except TypeError:
        return False


def _unused(*args: Any) -> Any:
    raise AssertionError("a probe of custom_vjp support is never called")


def device_arrays(
    backend: Backend,
    x: Any,
    values: tuple[float, ...],
    options: Options,
    output_size: Sequence[int] | None,
    sizes: tuple[int, ...],
    axes: tuple[int, ...],
    *,
    gemms: bool,
) -> tuple[_agnostic.Window, tuple[Any, ...]]:
    """The crop, and on ``x``'s device, for inputs laid out as ``x``: the mask,
    input-gradient scale and stride weights of ``_agnostic.fused_constants``; with ``gemms``
    the scale and weights followed by each GEMM step's matrix (``_matmul.planned_matrices``),
    the mask being in the matrices. The crop is
    ``output_size``'s where the caller fixed it, the full spectrum without ``cropping``,
    else decided from the thresholds."""
    if output_size is not None:
        window = _sizes.window_for_size(sizes, output_size)
    else:
        window = None if options.cropping else _sizes.full_window(sizes)
    dtype = _precision(backend, x)
    plan = host_plan(values, sizes, options, window, dtype)
    layouts = backend.tuning.matmul_layouts if gemms else None

    def build() -> list[np.ndarray]:
        arrays = _agnostic.fused_constants(
            plan.masks,
            plan.jacobians,
            plan.window,
            sizes,
            axes=axes,
            ndim=len(x.shape),
            shared=plan.shared,
            xp=np_xp,
        )
        if layouts is None:
            return list(arrays)
        matrices = _matmul.planned_matrices(
            x, plan.window, plan.masks, sizes=sizes, axes=axes, layouts=layouts
        )
        return [*arrays[1:], *(np.asarray(m, dtype=plan.key[-1]) for m in matrices)]

    return plan.window, _on_device(backend, (plan.key, axes, layouts), x, build)
