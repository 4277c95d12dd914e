"""Backend discovery: entry points, the in-code fallback, broken plugins, dispatch errors."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import re
from pathlib import Path
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
    monkeypatch.setattr(_registry, "_owner_of_type", {})
    _registry._entry_points.cache_clear()  # read once per process: read them again here
    try:
        with pytest.warns(RuntimeWarning, match="'broken' could not be loaded"):
            names = diffstride.available_backends()
        assert "broken" not in names
        assert "numpy" in names
        y = diffstride.diffstride(np.ones((1, 1, 8, 8), np.float32), (2.0, 2.0))
        assert y.shape == (1, 1, 8, 8)
    finally:
        _registry._entry_points.cache_clear()


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
    with pytest.raises(ValueError, match=r"matmul_layouts to a pair .* received matmul_layouts="):
        diffstride.Tuning(matmul_layouts=layouts)  # type: ignore[arg-type]
    monkeypatch.setattr(OddLayoutsBackend, "tuning", {"matmul_layouts": layouts})
    monkeypatch.setitem(_registry._BUILTIN, "odd_layouts", f"{__name__}:OddLayoutsBackend")
    with pytest.raises(TypeError, match=r"tuning must be a diffstride.Tuning; received"):
        _registry._load("odd_layouts")


def test_tuning_checks_its_values_and_legacy_class_attributes_still_work() -> None:
    with pytest.raises(ValueError, match=r"auto_matmul_max_sizes must be a pair of ints >= 0"):
        diffstride.Tuning(auto_matmul_max_sizes=(64, -1))
    with pytest.raises(ValueError, match=r"auto_matmul_max_volume must be a pair of ints >= 0"):
        diffstride.Tuning(auto_matmul_max_volume=(1.5, 0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"auto_matmul_min_channels must be a pair of numbers"):
        diffstride.Tuning(auto_matmul_min_channels=(0.5, -1.0))
    with pytest.raises(ValueError, match=r"auto_matmul_min_channels must be a pair of numbers"):
        diffstride.Tuning(auto_matmul_min_channels=(True, 0.0))
    assert diffstride.Tuning(auto_matmul_min_channels=(0, 1)).auto_matmul_min_channels == (0, 1)
    with pytest.raises(TypeError, match=r"fft_channels_first must be a bool"):
        diffstride.Tuning(fft_channels_first=1)  # type: ignore[arg-type]
    with pytest.deprecated_call(match="tuning = diffstride.Tuning"):

        class Legacy(OddLayoutsBackend):
            matmul_layouts = ("stacked", "stacked")

    assert Legacy.tuning == diffstride.Tuning(matmul_layouts=("stacked", "stacked"))


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


class TaggedArray(np.ndarray):
    """A numpy array that a registered adapter claims before numpy's does."""


def _fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_registered", {})
    monkeypatch.setattr(_registry, "_owner_of_type", {})


def test_register_backend_needs_no_packaging_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffstride_backends.numpy import NumpyBackend

    _fresh_registry(monkeypatch)
    asked: list[str] = []

    class TaggedBackend(NumpyBackend):
        name = "tagged"

        def owns(self, x: object) -> bool:
            return isinstance(x, TaggedArray)

        def namespace(self) -> object:
            asked.append("namespace")
            return super().namespace()

    adapter = diffstride.register_backend(TaggedBackend)
    assert isinstance(adapter, TaggedBackend)
    assert diffstride.registered_backends()[0] == "tagged"
    assert diffstride.get_backend("tagged") is adapter
    x = np.ones((1, 1, 8, 8), np.float32)
    expected = diffstride.diffstride(x, (2.0, 2.0))
    assert not asked
    y = diffstride.diffstride(x.view(TaggedArray), (2.0, 2.0))
    assert asked, "the registered adapter must serve its arrays"
    np.testing.assert_allclose(np.asarray(y), expected)


def test_register_backend_names_what_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    _fresh_registry(monkeypatch)
    with pytest.raises(TypeError, match=r"register_backend .* subclass .* received builtins.str"):
        diffstride.register_backend("numpy")
    with pytest.raises(TypeError, match="namespace, concrete"):
        diffstride.register_backend(HalfBackend)
    assert "half" not in diffstride.registered_backends()


def test_dispatch_reads_entry_points_once_and_remembers_owners(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real, reads, owns_calls = importlib.metadata.entry_points, [], []

    def entry_points(**kwargs: Any) -> Any:
        reads.append(kwargs.get("group"))
        return real(**kwargs)

    _fresh_registry(monkeypatch)
    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    numpy_backend = diffstride.get_backend("numpy")
    real_owns = type(numpy_backend).owns
    monkeypatch.setattr(
        type(numpy_backend),
        "owns",
        lambda self, x: owns_calls.append(type(x)) or real_owns(self, x),
    )
    _registry._entry_points.cache_clear()
    reads.clear()
    try:
        x = np.ones((1, 1, 8, 8), np.float32)
        for _ in range(3):
            diffstride.diffstride(x, (2.0, 2.0))
            diffstride.registered_backends()
        assert reads == [_registry.ENTRY_POINT_GROUP]
        assert owns_calls.count(np.ndarray) == 1  # asked once for the type (not the strides)
    finally:
        _registry._entry_points.cache_clear()


def test_register_backend_wants_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffstride_backends.numpy import NumpyBackend

    _fresh_registry(monkeypatch)

    class Nameless(NumpyBackend):
        name = ""

    with pytest.raises(TypeError, match="non-empty str name; received name=''"):
        diffstride.register_backend(Nameless)
    with pytest.raises(TypeError, match=r"received the class builtins\.int"):
        diffstride.register_backend(int)


def test_arrays_without_a_device_attribute_use_the_default_device() -> None:
    """An adapter's arrays need no ``device``: the core then creates its small arrays on the
    namespace's default device (``device=None``)."""
    from diffstride._agnostic import device_of

    class Plain:
        shape = (1,)

    assert device_of(Plain()) is None
    assert device_of(np.zeros(2)) == "cpu"


def _documented_members(table_start: str) -> set[str]:
    """The member names in the first column of the docs/backends.md table after
    ``table_start``."""
    text = (Path(__file__).parents[1] / "docs" / "backends.md").read_text()
    lines = text[text.index(table_start) :].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    names = set()
    for row in rows:
        first = row.split("|")[1]
        names.update(re.findall(r"`(\w+)", first))
    return names


def test_docs_list_every_member_of_the_contract() -> None:
    """docs/backends.md and the code cannot drift: its tables name exactly the members of
    ``diffstride.Backend`` and the fields of ``diffstride.Tuning``."""
    declared = {*dir(diffstride.Backend), *diffstride.Backend.__annotations__}
    members = {name for name in declared if not name.startswith("_")}
    assert _documented_members("## The contract: `diffstride.Backend`") == members
    tuning = {field.name for field in dataclasses.fields(diffstride.Tuning)}
    assert _documented_members("The fields of `diffstride.Tuning`:") == tuning
    from diffstride_conformance import TestingHooks

    hooks = {name for name in vars(TestingHooks) if not name.startswith("_")}
    assert _documented_members("The conformance suite also calls three") == hooks
