"""A conformance suite that holds any diffstride backend to the reference and golden data.

Two ways to run it, as networkx and scikit-learn offer:

* ``DIFFSTRIDE_BACKEND=name pytest --pyargs diffstride_conformance`` (a comma-separated list
  works; by default every available backend is checked);
* from a third party's own tests::

      from diffstride_conformance import parametrize_with_checks

      @parametrize_with_checks(["mybackend"])
      def test_mybackend(backend, check):
          check(backend)

A backend is a subclass of ``diffstride.Backend`` registered in the ``diffstride.backends``
entry-point group. The suite uses its testing hooks: ``from_numpy(array)``,
``test_inputs(array)`` (the input layouts to hold to the reference, e.g. several chunkings)
and, where ``differentiable``, ``vjp(fn, primals, cotangent) -> (output, [gradients])`` (numpy
arrays out). Every check runs for 1, 2 and 3 spatial axes; see ``docs/backends.md``.

The checks need pytest and hypothesis (``pip install "diffstride[conformance]"``); they are
imported on first use, so importing this package needs neither.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from diffstride import available_backends, get_backend
from diffstride_conformance.hooks import TestingHooks, WithHooks

if TYPE_CHECKING:
    from types import ModuleType

    from diffstride_conformance.checks import CHECKS, METHODS, RAMPS, checks_for

__all__ = [
    "CHECKS",
    "METHODS",
    "RAMPS",
    "TestingHooks",
    "backends_under_test",
    "checks_for",
    "parametrize_with_checks",
]

ENV_VAR = "DIFFSTRIDE_BACKEND"


def backends_under_test() -> list[str]:
    """Backends named by ``DIFFSTRIDE_BACKEND`` (comma-separated), else every available one."""
    named = os.environ.get(ENV_VAR, "").strip()
    if not named:
        return available_backends()
    return [name.strip() for name in named.split(",") if name.strip()]


def _checks() -> ModuleType:
    """The checks module, with an install hint where pytest or hypothesis is missing."""
    try:
        from diffstride_conformance import checks
    except ModuleNotFoundError as error:
        if error.name not in ("pytest", "hypothesis"):
            raise
        raise ModuleNotFoundError(
            f"the diffstride conformance checks need {error.name}: "
            'pip install "diffstride[conformance]"',
            name=error.name,
        ) from error
    return checks


_LAZY = frozenset({"CHECKS", "METHODS", "RAMPS", "checks_for"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(_checks(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parametrize_with_checks(
    backends: Iterable[str],
    *,
    methods: Iterable[str] | None = None,
    expected_failed_checks: Mapping[str, Mapping[str, str]] | None = None,
) -> Callable[[Any], Any]:
    """Parametrize a test over ``(backend, check)`` with ids like
    ``torch-matmul-check_golden_outputs`` (``torch-matmul-inside-check_empty_batch`` for the
    inside ramp); every path in ``methods`` and every ramp in :data:`RAMPS` is checked (the
    golden checks hold the original's ramp only), and each ``check`` is ready to call as
    ``check(backend)``.

    ``expected_failed_checks`` maps a backend name to ``{check name: reason}``; those checks are
    marked as strict xfails, so they fail the run once they start passing.
    """
    checks = _checks()
    import pytest

    methods = checks.METHODS if methods is None else methods
    path_free, ramp_free = checks.PATH_FREE, checks.RAMP_FREE
    expected = expected_failed_checks or {}
    params = []
    for name in backends:
        for check in checks.checks_for(name):
            reason = expected.get(name, {}).get(check.__name__)
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            paths = ("auto",) if check in path_free else tuple(methods)
            ramps = ("outside",) if check in ramp_free else checks.RAMPS
            for method, ramp in itertools.product(paths, ramps):
                label = [] if check in path_free else [method]
                label += [] if ramp == "outside" else [ramp]
                params.append(
                    pytest.param(
                        _LazyBackend(name),
                        functools.partial(check, method=method, ramp=ramp),
                        id="-".join([name, *label, check.__name__]),
                        marks=marks,
                    )
                )
    return pytest.mark.parametrize(("backend", "check"), params)


class _LazyBackend:
    """Loads the backend when the test runs, so collection imports no framework."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(WithHooks(get_backend(self.name)), attr)

    def __repr__(self) -> str:
        return f"backend({self.name!r})"
