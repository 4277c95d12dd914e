"""One DiffStride call goes down the call path once: each module of it is entered once.

The general path is ``_api`` (the call), ``_crop`` (the crop decision), ``_tracing`` (the
tracer workaround), ``_sizes`` (the count in numpy) and ``_paths`` (the computation); the
thresholds are computed once and the input's shape is checked once. Where the backend
registers a custom VJP and the strides can be read (torch eager), the call takes the host
plan: ``_api``, ``_paths`` and ``_plan``, which decides in numpy once per stride values
(and ``_crop`` where values read are checked). A regression here (a module that calls back
up, a second shape check) would show as a second entry.
"""

from __future__ import annotations

import collections
import sys
from typing import Any

import numpy as np
import pytest

PATH = ("_api", "_crop", "_tracing", "_sizes", "_paths")
PLANNED_PATH = ("_api", "_paths", "_plan")


def _trace(call: Any) -> tuple[collections.Counter, collections.Counter]:
    """Entries into each diffstride module from any other module but an adapter (torch's
    ``autograd.Function`` runs the core's forward it was given: that is the computation, not
    a second pass down the path), and calls of each function of ``_agnostic`` and
    ``_validation`` by name."""
    entries: collections.Counter = collections.Counter()
    functions: collections.Counter = collections.Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        if not module.startswith("diffstride.") or caller.startswith("diffstride_backends"):
            return
        if module != caller:
            entries[module.rsplit(".", 1)[1]] += 1
        if module in ("diffstride._agnostic", "diffstride._validation"):
            functions[frame.f_code.co_name] += 1

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return entries, functions


def test_a_torch_layer_call_enters_each_module_of_the_path_once() -> None:
    torch = pytest.importorskip("torch")
    from diffstride.torch import DiffStride

    layer = DiffStride((2.0, 1.5)).eval()
    x = torch.randn(2, 3, 32, 32)
    layer(x)  # warm the caches (the fused VJP is built once per configuration)
    with torch.no_grad():
        layer.strides.add_(0.25)  # new values: a new plan
    entries, functions = _trace(lambda: layer(x))
    assert {name: entries[name] for name in PLANNED_PATH} == dict.fromkeys(PLANNED_PATH, 1)
    assert entries["_tracing"] == 0
    assert entries["_crop"] == 1  # the read values' check
    assert functions["thresholds"] == 2  # in numpy: the host copy's crop, the call's plan
    assert functions["check_input"] == 1
    assert functions["check_spatial_sizes"] == 1
    entries, functions = _trace(lambda: layer(x))  # unchanged strides: the plan is kept
    assert {name: entries[name] for name in PLANNED_PATH} == dict.fromkeys(PLANNED_PATH, 1)
    assert entries["_crop"] == 0
    assert functions["thresholds"] == 0


def test_a_torch_training_call_projects_on_the_host_and_goes_down_the_path_once() -> None:
    """A training call decides its in-place projection from the host copy (in numpy, as the
    device would); where it leaves the strides as they are it writes nothing, so the next
    training call reads nothing and goes down the path as a repeat call does."""
    torch = pytest.importorskip("torch")
    from diffstride.torch import DiffStride

    layer = DiffStride((2.0, 1.5))
    x = torch.randn(2, 3, 32, 32)
    layer(x)
    entries, functions = _trace(lambda: layer(x))
    assert {name: entries[name] for name in ("_api", "_tracing", "_paths", "_plan")} == {
        "_api": 1,
        "_tracing": 0,
        "_paths": 1,
        "_plan": 1,
    }
    assert functions["thresholds"] == 0  # the copy's crop and the plan are kept
    assert layer.fixed_crops.strides == pytest.approx(layer.current_strides())


def test_a_numpy_function_call_enters_each_module_of_the_path_once() -> None:
    from diffstride.numpy import diffstride

    x = np.random.default_rng(0).standard_normal((2, 3, 20)).astype(np.float32)
    entries, functions = _trace(lambda: diffstride(x, 2.5))
    assert {name: entries[name] for name in PATH} == dict.fromkeys(PATH, 1)
    assert functions["thresholds"] == 1


def _counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the torch adapter's reads of values into Python (``concrete``)."""
    import diffstride

    cls = type(diffstride.get_backend("torch"))
    original, count = cls.concrete, [0]

    def concrete(self: object, x: object) -> object:
        count[0] += 1
        return original(self, x)

    monkeypatch.setattr(cls, "concrete", concrete)
    return count


def test_repeat_torch_calls_read_nothing_while_the_strides_stay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The strides are read once; a repeat call reads nothing until they change (an
    in-place write, an optimizer step, a projection), whatever the input's size and dtype."""
    import torch

    from diffstride.torch import DiffStride, diffstride

    layer = DiffStride((2.0, 2.0)).eval()
    x = torch.randn(2, 3, 32, 32)
    reads = _counting_reads(monkeypatch)
    first = layer(x)
    assert reads[0] == 1
    for _ in range(3):
        torch.testing.assert_close(layer(x), first)
    assert reads[0] == 1
    with torch.no_grad():
        layer.strides.fill_(3.0)  # same crop size class, new values: read again
    assert layer(x).shape[2:] == layer.output_size((32, 32))
    assert reads[0] == 3  # the call, and output_size itself
    layer(x)
    assert reads[0] == 3
    other = torch.randn(2, 3, 24, 24, dtype=torch.float64)
    y = layer(other)  # another size and precision: decided from the host copy
    assert reads[0] == 3
    torch.testing.assert_close(y, diffstride(other, (3.0, 3.0)))
    layer.train()
    for _ in range(2):  # a projection that changes nothing writes nothing: no read
        layer(x)
    assert reads[0] == 3
    with torch.no_grad():
        layer.strides.fill_(1.0)  # below the projection's minimum N / (N - R)
    layer(x)  # read once; the projection is written from the host, and kept as the copy
    assert reads[0] == 4
    minimum = torch.tensor(32.0) / (32.0 - layer.smoothness_factor)
    torch.testing.assert_close(layer.strides.detach(), minimum.expand(2), rtol=0, atol=0)
    layer(x)
    assert reads[0] == 4
