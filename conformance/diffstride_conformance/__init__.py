"""A conformance suite that holds any diffstride backend to the reference and golden data.

Two ways to run it, as networkx and scikit-learn offer:

* ``DIFFSTRIDE_BACKEND=name pytest --pyargs diffstride_conformance`` (a comma-separated list
  works; by default every available backend is checked);
* from a third party's own tests::

      from diffstride_conformance import parametrize_with_checks

      @parametrize_with_checks(["mybackend"])
      def test_mybackend(backend, check):
          check(backend)

A backend is any object registered in the ``diffstride.backends`` entry-point group that
follows ``diffstride._registry.Backend`` and adds two testing hooks: ``from_numpy(array)`` and
``vjp(fn, primals, cotangent) -> (output, [gradients])`` (numpy arrays out).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from diffstride import available_backends, get_backend
from diffstride_conformance.checks import CHECKS, METHODS, PATH_FREE, checks_for

__all__ = ["CHECKS", "METHODS", "backends_under_test", "checks_for", "parametrize_with_checks"]

ENV_VAR = "DIFFSTRIDE_BACKEND"


def backends_under_test() -> list[str]:
    """Backends named by ``DIFFSTRIDE_BACKEND`` (comma-separated), else every available one."""
    named = os.environ.get(ENV_VAR, "").strip()
    if not named:
        return available_backends()
    return [name.strip() for name in named.split(",") if name.strip()]


def parametrize_with_checks(
    backends: Iterable[str],
    *,
    methods: Iterable[str] = METHODS,
    expected_failed_checks: Mapping[str, Mapping[str, str]] | None = None,
) -> Callable[[Any], Any]:
    """Parametrize a test over ``(backend, check)`` with ids like
    ``torch-matmul-check_golden_outputs``; every path in ``methods`` is checked, and each
    ``check`` is ready to call as ``check(backend)``.

    ``expected_failed_checks`` maps a backend name to ``{check name: reason}``; those checks are
    marked as strict xfails, so they fail the run once they start passing.
    """
    expected = expected_failed_checks or {}
    params = []
    for name in backends:
        for check in checks_for(name):
            reason = expected.get(name, {}).get(check.__name__)
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            paths = ("auto",) if check in PATH_FREE else tuple(methods)
            for method in paths:
                label = check.__name__ if check in PATH_FREE else f"{method}-{check.__name__}"
                params.append(
                    pytest.param(
                        _LazyBackend(name),
                        functools.partial(check, method=method),
                        id=f"{name}-{label}",
                        marks=marks,
                    )
                )
    return pytest.mark.parametrize(("backend", "check"), params)


class _LazyBackend:
    """Loads the backend when the test runs, so collection imports no framework."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(get_backend(self.name), attr)

    def __repr__(self) -> str:
        return f"backend({self.name!r})"
