"""One DiffStride call goes down the call path once: each module of it is entered once.

The call path is ``_api`` (the call), ``_crop`` (the crop decision), ``_tracing`` (the
tracer workaround), ``_sizes`` (the count in numpy) and ``_paths`` (the computation); the
thresholds are computed once and the input's shape is checked once. A regression here (a
module that calls back up, a second shape check) would show as a second entry.
"""

from __future__ import annotations

import collections
import sys
from typing import Any

import numpy as np
import pytest

PATH = ("_api", "_crop", "_tracing", "_sizes", "_paths")


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
    entries, functions = _trace(lambda: layer(x))
    assert {name: entries[name] for name in PATH} == dict.fromkeys(PATH, 1)
    assert functions["thresholds"] == 1


def test_a_torch_training_call_reads_its_host_copy_then_goes_down_the_path_once() -> None:
    """A training call projects the strides in place, so the next one reads them again: the
    layer refreshes its host copy (``fixed_crops``, the crop counted in numpy from it) before
    the call, which then goes down the path as a repeat call does, with that crop."""
    torch = pytest.importorskip("torch")
    from diffstride.torch import DiffStride

    layer = DiffStride((2.0, 1.5))
    x = torch.randn(2, 3, 32, 32)
    layer(x)
    entries, functions = _trace(lambda: layer(x))
    assert {name: entries[name] for name in ("_api", "_tracing", "_paths")} == {
        "_api": 1,
        "_tracing": 1,
        "_paths": 1,
    }
    assert functions["thresholds"] == 2  # the host copy's crop, then the call's masks
    assert layer.fixed_crops.strides == pytest.approx(layer.current_strides())
    assert functions["check_input"] == 1
    assert functions["check_spatial_sizes"] == 1


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
    """The crop is read from the strides once; a repeat call on the same size reads nothing
    until they change (an in-place write, an optimizer step, a projection, a new size)."""
    import torch

    import diffstride
    from diffstride.torch import DiffStride

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
    # Another size, another precision: each decides its own crop, from the host copy.
    assert layer(torch.randn(2, 3, 24, 24)).shape[2:] == layer.output_size((24, 24))
    assert layer(x.double()).shape[2:] == diffstride.output_size(
        (32, 32), (3.0, 3.0), dtype="float64"
    )
    assert reads[0] == 4  # layer.output_size alone
    layer.train()
    layer(x)  # the strides are unchanged: no read; its projection writes them in place...
    assert reads[0] == 4
    layer(x)  # ...so the next call reads them again: once per training step
    assert reads[0] == 5


def test_a_torch_layer_keeps_its_host_copy_of_the_strides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``fixed_crops`` (the policy of Keras on jax and Flax) holds the strides read last and
    the parameter version they were read at: valid, and read from, while that holds."""
    import torch

    from diffstride.torch import DiffStride

    layer = DiffStride((2.0, 1.5)).eval()
    assert layer.fixed_crops.key is None  # nothing read yet
    layer(torch.randn(1, 2, 16, 16))
    copy = layer.fixed_crops
    assert copy.strides == (2.0, 1.5)
    assert copy.crops == {(16, 16): layer.output_size((16, 16))}
    assert copy.key is not None
    reads = _counting_reads(monkeypatch)
    layer(torch.randn(1, 2, 16, 16))
    assert layer.fixed_crops is copy
    assert reads[0] == 0
    with torch.no_grad():
        layer.strides.copy_(torch.tensor([3.0, 3.0]))
    layer(torch.randn(1, 2, 16, 16))
    assert layer.fixed_crops.strides == (3.0, 3.0)
    assert reads[0] == 1
    layer.load_state_dict({"strides": torch.tensor([2.0, 2.0])})
    assert layer.fixed_crops.key is None  # loaded: the next call reads
