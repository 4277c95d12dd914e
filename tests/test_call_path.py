"""One DiffStride call goes down the call path once: each module of it is entered once.

The general path is ``_api`` (the call), ``_crop`` (the crop decision), ``_tracing`` (the
tracer workaround), ``_sizes`` (the count in numpy) and ``_paths`` (the computation); the
thresholds are computed once and the input's shape is checked once. Where the backend
registers a custom VJP and the strides can be read (torch eager), the call takes the host
plan: ``_api``, ``_paths`` and ``_plan``, which decides in numpy once per stride values
(and ``_crop`` where values read are checked); ``_paths`` builds the call's runner, which
``_api`` keeps, so a repeat call enters ``_api`` and the runner in ``_paths`` only. A
regression here (a module that calls back up, a second shape check) would show as a second
entry.
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
    # _paths twice: it builds the runner, then the runner computes.
    assert {name: entries[name] for name in PLANNED_PATH} == {"_api": 1, "_paths": 2, "_plan": 1}
    assert entries["_tracing"] == 0
    assert entries["_crop"] == 1  # the read values' check
    assert functions["thresholds"] == 2  # in numpy: the host copy's crop, the call's plan
    assert functions["check_input"] == 1
    assert functions["check_spatial_sizes"] <= 1  # a shape checked before is known
    entries, functions = _trace(lambda: layer(x))  # unchanged strides: the runner is kept
    assert {name: entries[name] for name in PLANNED_PATH} == {"_api": 1, "_paths": 1, "_plan": 0}
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
        "_plan": 0,
    }
    assert functions["thresholds"] == 0  # the copy's crop and the runner are kept
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


def _variants(torch: Any) -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """``(x, strides, keywords)`` of calls that differ from the first in one argument each."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 12, generator=generator)
    strides = torch.tensor([2.0, 2.0])
    return {
        "first": (x, strides, {}),
        "values": (x, torch.tensor([2.5, 2.0]), {}),
        "shared": (x, torch.tensor([2.0]), {}),
        "strides float64": (x, strides.double(), {}),
        "floats": (x, (2.0, 2.0), {}),
        "ints": (x, (2, 2), {}),
        "number": (x, 2.0, {}),
        "size": (torch.randn(2, 3, 16, 14, generator=generator), strides, {}),
        "rank": (x[..., 0], strides[:1], {}),
        "float64": (x.double(), strides, {}),
        "float16": (x.half(), strides, {}),
        "inside": (x, strides, {"ramp": "inside"}),
        "matmul": (x, strides, {"method": "matmul"}),
        "smoothness": (x, strides, {"smoothness_factor": 2.0}),
        "no cropping": (x, strides, {"cropping": False}),
        "channels_last": (x.permute(0, 2, 3, 1), strides, {"data_format": "channels_last"}),
        "output_size": (x, strides, {"output_size": (10, 8)}),
    }


def test_a_kept_runner_serves_only_its_own_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeat call looks its runner up (``_api._runner_key``); a call that differs in any
    argument gets its own, bit for bit the output of a call that finds nothing kept."""
    torch = pytest.importorskip("torch")
    from diffstride import _api
    from diffstride._recent import Recent
    from diffstride.torch import diffstride

    variants = _variants(torch)
    monkeypatch.setattr(_api, "_RUNNERS", Recent(0))  # keeps nothing
    expected = {name: diffstride(x, s, **kw) for name, (x, s, kw) in variants.items()}
    monkeypatch.setattr(_api, "_RUNNERS", Recent(64))
    for _ in range(2):  # the second round finds each runner kept
        for name, (x, strides, keywords) in variants.items():
            y = diffstride(x, strides, **keywords)
            assert y.dtype == expected[name].dtype, name
            assert torch.equal(y, expected[name]), name


def test_a_kept_runner_skips_no_check() -> None:
    """After calls that passed, each bad argument still raises its own error."""
    torch = pytest.importorskip("torch")
    from diffstride.torch import diffstride

    x = torch.randn(1, 2, 12, 12)
    for strides in ((1, 1), (1.0, 1.0), torch.tensor([1.0, 1.0])):
        diffstride(x, strides, smoothness_factor=1.0)
        diffstride(x, strides, smoothness_factor=1.0)
    with pytest.raises(ValueError, match="strides must hold"):
        diffstride(x, (True, True), smoothness_factor=1.0)
    with pytest.raises(TypeError, match="smoothness_factor must be a real number"):
        diffstride(x, (1.0, 1.0), smoothness_factor=True)
    with pytest.raises(ValueError, match=r"strides must be finite and >= 1.*nan"):
        diffstride(x, torch.tensor([1.0, float("nan")]), smoothness_factor=1.0)
    with pytest.raises(ValueError, match=r"strides must be finite and >= 1.*0\.5"):
        diffstride(x, torch.tensor([0.5, 1.0]), smoothness_factor=1.0)
    with pytest.raises(TypeError, match="strides must have a real floating dtype"):
        diffstride(x, torch.tensor([1, 1]), smoothness_factor=1.0)
    with pytest.raises(ValueError, match=r"strides must have shape \(2,\)"):
        diffstride(x, torch.tensor([1.0, 1.0, 1.0]), smoothness_factor=1.0)
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        diffstride(x.to(torch.int32), (1.0, 1.0), smoothness_factor=1.0)
    with pytest.raises(ValueError, match="spatial sizes >= 2"):
        diffstride(x[..., :1], (1.0, 1.0), smoothness_factor=1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        diffstride(x, (1.0, 1.0), smoothness_factor=1.0, method="fast")


def test_kept_runners_are_shared_across_threads() -> None:
    """Replicas call from threads (DataParallel): each thread's calls, interleaved with the
    others' in the caches, give what one thread alone gives."""
    torch = pytest.importorskip("torch")
    from concurrent.futures import ThreadPoolExecutor

    from diffstride.torch import diffstride

    variants = list(_variants(torch).values())
    expected = [diffstride(x, s, **kw) for x, s, kw in variants]

    def run(start: int) -> bool:
        order = variants[start:] + variants[:start]
        wanted = expected[start:] + expected[:start]
        return all(
            torch.equal(diffstride(x, s, **kw), want)
            for _ in range(5)
            for (x, s, kw), want in zip(order, wanted, strict=True)
        )

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(len(variants))))


def test_a_layer_refuses_bad_inputs_after_good_ones() -> None:
    """The input check keeps the sizes of inputs that passed, not of any other."""
    torch = pytest.importorskip("torch")
    from diffstride.torch import DiffStride, DiffStride1d

    layer, x = DiffStride((2.0, 2.0)).eval(), torch.randn(1, 2, 12, 12)
    for _ in range(2):
        layer(x)
        DiffStride1d(2.0).eval()(x[..., 0])
    with pytest.raises(TypeError, match="x must have a real floating dtype"):
        layer(x.to(torch.int32))
    with pytest.raises(ValueError, match="x must be a rank-4"):
        layer(x[..., 0])
    with pytest.raises(ValueError, match="x must be a rank-4"):
        layer(x[..., None])
    with pytest.raises(ValueError, match="spatial sizes >= 2"):
        layer(x[..., :1])
