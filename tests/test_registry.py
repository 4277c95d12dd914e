"""Backend discovery: entry points, the in-code fallback, broken plugins, dispatch errors."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import numpy as np
import pytest

import diffstride
from diffstride import _registry


def test_builtins_are_available() -> None:
    assert set(diffstride.available_backends()) >= {
        "numpy",
        "torch",
        "tensorflow",
        "jax",
        "array_api_strict",
    }


def test_builtins_are_registered_as_entry_points() -> None:
    names = {e.name for e in importlib.metadata.entry_points(group=_registry.ENTRY_POINT_GROUP)}
    assert names >= {"numpy", "torch", "tensorflow", "jax", "array_api_strict"}


def test_unknown_backend_name() -> None:
    with pytest.raises(ValueError, match="backend='nope'"):
        diffstride.get_backend("nope")


def test_dispatch_rejects_foreign_objects() -> None:
    with pytest.raises(TypeError, match=r"builtins\.list"):
        diffstride.diffstride([[1.0]], (2.0, 2.0))


class _FakeEntryPoint:
    def __init__(self, name: str, value: str) -> None:
        self.name, self.value = name, value


def test_broken_plugin_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.entry_points

    def entry_points(**kwargs: Any) -> Any:
        found = list(real(**kwargs))
        if kwargs.get("group") == _registry.ENTRY_POINT_GROUP:
            found.append(_FakeEntryPoint("broken", "no_such_module_xyz:Backend"))
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(_registry, "_broken", set())
    with pytest.warns(RuntimeWarning, match="'broken' could not be loaded"):
        names = diffstride.available_backends()
    assert "broken" not in names
    assert "numpy" in names
    y = diffstride.diffstride(np.ones((1, 1, 8, 8), np.float32), (2.0, 2.0))
    assert y.shape == (1, 1, 8, 8)


def test_non_conforming_plugin_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_registry._BUILTIN, "odd", "builtins:object")
    with pytest.raises(TypeError, match=r"subclass .* of diffstride\.Backend"):
        _registry._load("odd")


def test_a_plugin_missing_a_required_member_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_registry._BUILTIN, "half", f"{__name__}:HalfBackend")
    with pytest.raises(TypeError, match="required members namespace, concrete"):
        _registry._load("half")


@pytest.mark.parametrize("layouts", [("permuted",), ("permuted", "broadcast"), "stacked"])
def test_a_plugin_with_unknown_matmul_layouts_is_named(
    layouts: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OddLayoutsBackend, "matmul_layouts", layouts)
    monkeypatch.setitem(_registry._BUILTIN, "odd_layouts", f"{__name__}:OddLayoutsBackend")
    with pytest.raises(ValueError, match=r"matmul_layouts to a pair .* received matmul_layouts="):
        _registry._load("odd_layouts")


class OddLayoutsBackend(diffstride.Backend):
    name = "odd_layouts"
    module = "numpy"

    def owns(self, x: object) -> bool:
        return False

    def namespace(self) -> object:
        return np

    def stop_gradient(self, x: object) -> object:
        return x

    def concrete(self, x: object) -> object:
        return np.asarray(x)


class HalfBackend(diffstride.Backend):
    """Defines name, module, owns and stop_gradient, but not namespace or concrete."""

    name = "half"
    module = "numpy"

    def owns(self, x: object) -> bool:
        return False

    def stop_gradient(self, x: object) -> object:
        return x
