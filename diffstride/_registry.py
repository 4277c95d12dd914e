"""Backend registry: adapters found through the ``diffstride.backends`` entry-point group.

An adapter is a small subclass of :class:`diffstride.Backend` that tells the core how to reach
a framework: its Array API namespace, its stop-gradient, and how to read concrete values. The
built-in adapters are registered as entry points like any third party's, and also listed here
so that an uninstalled checkout (``PYTHONPATH=.``) finds them. Adapters must not import their
framework at import time: recognising an array goes through ``sys.modules`` (as
array-api-compat does), so ``import diffstride`` and dispatching a numpy array import no
framework. A plugin that fails to load is a warning, not a crash (as xarray treats engines).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import warnings
from typing import Any

from diffstride._backend import Backend, check_matmul_layouts, missing_members

__all__ = ["Backend", "available_backends", "backend_for", "get_backend", "registered_backends"]

ENTRY_POINT_GROUP = "diffstride.backends"

_BUILTIN = {
    "numpy": "diffstride_backends.numpy:NumpyBackend",
    "torch": "diffstride_backends.torch:TorchBackend",
    "tensorflow": "diffstride_backends.tensorflow:TensorFlowBackend",
    "jax": "diffstride_backends.jax:JaxBackend",
    "array_api_strict": "diffstride_backends.array_api_strict:ArrayApiStrictBackend",
}

_loaded: dict[str, Backend] = {}
_broken: set[str] = set()


def _target(name: str) -> str | None:
    """``module:attr`` for a backend name: entry points first, then the built-in list."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            return entry.value
    return _BUILTIN.get(name)


def registered_backends() -> list[str]:
    """Every backend name known, installed framework or not (built-ins first)."""
    names = list(_BUILTIN)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in names:
            names.append(entry.name)
    return names


def _load(name: str) -> Backend:
    target = _target(name)
    if target is None:
        raise ValueError(
            f"backend must be one of {registered_backends()}; received backend={name!r}"
        )
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    adapter = factory() if isinstance(factory, type) else factory
    if not isinstance(adapter, Backend):
        raise TypeError(
            f"the entry point {name!r} = {target!r} must be a subclass (or an instance of one) "
            f"of diffstride.Backend; received {type(adapter).__module__}."
            f"{type(adapter).__qualname__}"
        )
    missing = missing_members(adapter)
    if missing:
        raise TypeError(
            f"the diffstride backend {name!r} = {target!r} does not define the required "
            f"member{'s' if len(missing) > 1 else ''} {', '.join(missing)} (see diffstride.Backend)"
        )
    check_matmul_layouts(adapter.matmul_layouts, f"the diffstride backend {name!r} = {target!r}")
    return adapter


def get_backend(name: str) -> Backend:
    """The adapter registered as ``name`` (loaded once, then cached)."""
    if name not in _loaded:
        _loaded[name] = _load(name)
    return _loaded[name]


def _try_get(name: str) -> Backend | None:
    if name in _broken:
        return None
    try:
        return get_backend(name)
    except Exception as error:  # a broken plugin must not break the library
        _broken.add(name)
        warnings.warn(
            f"diffstride backend {name!r} could not be loaded and is skipped: {error!r}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def available_backends() -> list[str]:
    """Backends whose adapter loads and whose framework is installed (nothing is imported)."""
    names = []
    for name in registered_backends():
        adapter = _try_get(name)
        if adapter is not None and importlib.util.find_spec(adapter.module) is not None:
            names.append(name)
    return names


def backend_for(x: Any) -> Backend:
    """The backend that owns array ``x``; a clear TypeError when none does."""
    for name in registered_backends():
        adapter = _try_get(name)
        if adapter is not None and adapter.owns(x):
            return adapter
    raise TypeError(
        "x must be an array of a registered diffstride backend "
        f"({', '.join(registered_backends())}); received an object of type "
        f"{type(x).__module__}.{type(x).__qualname__}"
    )
