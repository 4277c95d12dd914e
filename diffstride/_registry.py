"""Backend registry: adapters found through the ``diffstride.backends`` entry-point group.

An adapter is a small subclass of :class:`diffstride.Backend` that tells the core how to reach
a framework: its Array API namespace, its stop-gradient, and how to read concrete values. The
built-in adapters are registered as entry points like any third party's, and also listed here
so that an uninstalled checkout (``PYTHONPATH=.``) finds them. Adapters must not import their
framework at import time: recognising an array goes through ``sys.modules`` (as
array-api-compat does), so ``import diffstride`` and dispatching a numpy array import no
framework. A plugin that fails to load is a warning, not a crash (as xarray treats engines).

Dispatch is on the hot path of every top-level call, so the entry points are read once per
process and the adapter that owns an array type is remembered (``owns`` answers by type).
:func:`register_backend` adds an adapter without packaging metadata; it is asked first.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import warnings
from typing import Any

from diffstride._backend import Backend, Tuning, missing_members

__all__ = [
    "Backend",
    "available_backends",
    "backend_for",
    "get_backend",
    "register_backend",
    "registered_backends",
]

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
_registered: dict[str, Backend] = {}  # by register_backend, asked before the others
_owner_of_type: dict[type, Backend] = {}


@functools.cache
def _entry_points() -> tuple[tuple[str, str], ...]:
    """``(name, "module:attr")`` of the entry-point group, read once per process."""
    return tuple(
        (entry.name, entry.value)
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    )


def _target(name: str) -> str | None:
    """``module:attr`` for a backend name: entry points first, then the built-in list."""
    return dict(_entry_points()).get(name, _BUILTIN.get(name))


def registered_backends() -> list[str]:
    """Every backend name known, installed framework or not (registered by
    :func:`register_backend` first, then the built-ins, then the other entry points)."""
    names = [*_registered, *(name for name in _BUILTIN if name not in _registered)]
    for name, _ in _entry_points():
        if name not in names:
            names.append(name)
    return names


def _checked(adapter: Any, where: str) -> Backend:
    """``adapter`` (a Backend instance, or a subclass to instantiate) once it keeps the
    contract; ``where`` says in errors which registration it came from."""
    adapter = adapter() if isinstance(adapter, type) and issubclass(adapter, Backend) else adapter
    if not isinstance(adapter, Backend):
        kind = adapter if isinstance(adapter, type) else type(adapter)
        raise TypeError(
            f"{where} must be a subclass (or an instance of one) of diffstride.Backend; "
            f"received {'the class ' if kind is adapter else ''}{kind.__module__}."
            f"{kind.__qualname__}"
        )
    if not isinstance(getattr(adapter, "name", None), str) or not adapter.name:
        raise TypeError(f"{where} must have a non-empty str name; received name={adapter.name!r}")
    missing = missing_members(adapter)
    if missing:
        raise TypeError(
            f"{where} does not define the required member{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} (see diffstride.Backend)"
        )
    if not isinstance(adapter.tuning, Tuning):
        raise TypeError(
            f"{where}.tuning must be a diffstride.Tuning; received tuning={adapter.tuning!r}"
        )
    return adapter


def register_backend(adapter: Any) -> Backend:
    """Register ``adapter`` (a :class:`Backend` subclass or instance) under its ``name``,
    without packaging metadata: for an adapter written in a notebook or a test. It is asked
    before the installed ones, so it may also replace one of them.

    Returns
    -------
    Backend
        The registered adapter (an instance).

    Raises
    ------
    TypeError
        If ``adapter`` is not a Backend, or lacks a required member.
    """
    checked = _checked(adapter, f"the adapter given to register_backend ({adapter!r})")
    _registered[checked.name] = checked
    _loaded.pop(checked.name, None)
    _broken.discard(checked.name)
    _owner_of_type.clear()
    return checked


def _load(name: str) -> Backend:
    target = _target(name)
    if target is None:
        raise ValueError(
            f"backend must be one of {registered_backends()}; received backend={name!r}"
        )
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return _checked(factory, f"the diffstride backend {name!r} = {target!r}")


def get_backend(name: str) -> Backend:
    """The adapter registered as ``name`` (loaded once, then cached)."""
    if name in _registered:
        return _registered[name]
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
    """The backend that owns array ``x`` (remembered per type); a clear TypeError when none
    does."""
    owner = _owner_of_type.get(type(x))
    if owner is not None:
        return owner
    for name in registered_backends():
        adapter = _try_get(name)
        if adapter is not None and adapter.owns(x):
            _owner_of_type[type(x)] = adapter
            return adapter
    raise TypeError(
        "x must be an array of a registered diffstride backend "
        f"({', '.join(registered_backends())}); received an object of type "
        f"{type(x).__module__}.{type(x).__qualname__}"
    )
