"""The testing hooks: what the conformance suite asks of an adapter beyond the contract.

They are not part of ``diffstride.Backend`` (the core never calls them); an adapter defines
those it needs, and :class:`WithHooks` gives the checks the defaults for the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

__all__ = ["TestingHooks", "WithHooks"]


class TestingHooks(Protocol):
    """What the suite calls on an adapter, each optional (defaults in :class:`WithHooks`)."""

    def from_numpy(self, array: np.ndarray) -> Any:
        """A framework array equal to ``array`` (dtype kept where the framework has it; a
        framework without float64 returns float32, and its float64 cases are left out).
        Default: ``namespace().asarray(array)``."""

    def test_inputs(self, array: np.ndarray) -> list[Any]:
        """The layouts the suite feeds as ``x`` (a chunked or distributed framework returns
        several chunkings or placements of the same values). Default: ``[from_numpy(array)]``."""

    def vjp(
        self, fn: Callable[..., Any], primals: list[Any], cotangent: np.ndarray
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(fn(*primals), [gradient of sum(fn(*primals) * cotangent) per primal])``, all
        numpy arrays: ``primals`` are framework arrays (from ``from_numpy``: the input, then
        the strides), ``cotangent`` a numpy array of the output's shape. Needed where the
        adapter is ``differentiable``."""


class WithHooks:
    """An adapter as the checks see it: its own testing hooks where it defines them, the
    defaults elsewhere; every other attribute is the adapter's."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(self.adapter, name)

    def _own(self, name: str) -> Any:
        return getattr(self.adapter, name, None)

    def from_numpy(self, array: np.ndarray) -> Any:
        own = self._own("from_numpy")
        return own(array) if own is not None else self.adapter.namespace().asarray(array)

    def test_inputs(self, array: np.ndarray) -> list[Any]:
        own = self._own("test_inputs")
        return own(array) if own is not None else [self.from_numpy(array)]

    def vjp(
        self, fn: Callable[..., Any], primals: list[Any], cotangent: np.ndarray
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        own = self._own("vjp")
        if own is None:
            raise NotImplementedError(
                f"backend {self.adapter.name!r} is differentiable but defines no vjp testing "
                "hook (see diffstride_conformance.TestingHooks)"
            )
        return own(fn, primals, cotangent)

    def __repr__(self) -> str:
        return repr(self.adapter)
