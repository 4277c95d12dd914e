"""Entry point for ``DIFFSTRIDE_BACKEND=name pytest --pyargs diffstride_conformance``."""

from __future__ import annotations

from typing import Any

from diffstride_conformance import backends_under_test, parametrize_with_checks


@parametrize_with_checks(backends_under_test())
def test_backend(backend: Any, check: Any) -> None:
    check(backend)
