"""``torch.compile``: DiffStride traces into one graph where its crop is fixed.

A learnable crop follows the stride values, so without ``output_size`` dynamo must read them
and split the graph (the results still match eager); with a static ``output_size`` nothing is
read, and ``fullgraph=True``, which raises on any graph break, must succeed. The "eager"
dynamo backend checks the tracing quickly; two cases run inductor's generated code, one of them
training steps, where the layer projects its parameter in place.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

import diffstride  # noqa: E402
from diffstride import torch as dt  # noqa: E402
from diffstride.torch import DiffStride  # noqa: E402

SHAPE_NCHW = (2, 3, 16, 12)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _input(data_format: str) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(SHAPE_NCHW, dtype=torch.float64)
    if data_format == "channels_last":
        x = x.permute(0, 2, 3, 1).contiguous()
    return x.requires_grad_(True)


def _outputs_and_grads(fn, x: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    y = fn(x)
    weight = torch.linspace(-1.0, 2.0, y.numel(), dtype=y.dtype).reshape(y.shape)
    grads = torch.autograd.grad((y * weight).sum(), [x, *params])
    return [y.detach(), *grads]


def _assert_same(compiled: list[torch.Tensor], eager: list[torch.Tensor]) -> None:
    assert len(compiled) == len(eager)
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", ["fft", "matmul"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_layer_with_output_size_is_one_graph(method: str, data_format: str) -> None:
    layer = DiffStride(strides=(2.0, 1.5), data_format=data_format, method=method).double()
    x = _input(data_format)
    size = layer.output_size(SHAPE_NCHW[2:])

    def fn(a: torch.Tensor) -> torch.Tensor:
        return layer(a, output_size=size)

    compiled = torch.compile(fn, backend="eager", fullgraph=True)
    _assert_same(
        _outputs_and_grads(compiled, x, [layer.strides]),
        _outputs_and_grads(fn, x, [layer.strides]),
    )


def test_a_trace_looks_up_no_checked_input(monkeypatch: pytest.MonkeyPatch) -> None:
    """The input check keeps the sizes of inputs that passed, under keys of any framework
    (TensorFlow's dtypes, which dynamo cannot hash): a trace must not look them up."""
    from diffstride import _validation

    class Watched(dict):
        def get(self, key: object, default: object = None) -> object:
            assert not torch.compiler.is_compiling(), "a cache looked up while tracing"
            return super().get(key, default)

    monkeypatch.setattr(_validation, "_CHECKED", Watched())
    layer = DiffStride(strides=(2.0, 1.5)).double()
    x = _input("channels_first")
    layer(x)  # eager: looked up and kept
    size = layer.output_size(SHAPE_NCHW[2:])
    compiled = torch.compile(lambda a: layer(a, output_size=size), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), layer(x, output_size=size), rtol=0, atol=0)


@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_functional_with_output_size_is_one_graph(method: str) -> None:
    x = _input("channels_first")
    strides = torch.tensor([2.0, 1.5], dtype=torch.float64, requires_grad=True)
    size = diffstride.output_size(SHAPE_NCHW[2:], (2.0, 1.5))

    def fn(a: torch.Tensor) -> torch.Tensor:
        return dt.diffstride(a, strides, output_size=size, method=method)

    compiled = torch.compile(fn, backend="eager", fullgraph=True)
    _assert_same(_outputs_and_grads(compiled, x, [strides]), _outputs_and_grads(fn, x, [strides]))


@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_spectral_pooling_is_one_graph(method: str) -> None:
    x = _input("channels_first")

    def fn(a: torch.Tensor) -> torch.Tensor:
        return dt.spectral_pooling(a, (2, 1.1), method=method)

    compiled = torch.compile(fn, backend="eager", fullgraph=True)
    _assert_same(_outputs_and_grads(compiled, x, []), _outputs_and_grads(fn, x, []))


def test_learnable_crop_compiles_with_breaks_and_matches_eager() -> None:
    """The crop is decided on the host in one untraced call (``Backend.untraced``): dynamo
    traced its numpy steps one by one before, and split the graph 22 times."""
    layer = DiffStride(strides=(2.0, 1.5)).double()
    x = _input("channels_first")
    assert torch._dynamo.explain(layer)(x.detach()).graph_break_count <= 1
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="eager")
    _assert_same(
        _outputs_and_grads(compiled, x, [layer.strides]),
        _outputs_and_grads(layer, x, [layer.strides]),
    )


def test_invalid_strides_fail_when_compiled() -> None:
    """While tracing, a crop that follows the strides reads them in one untraced call, which
    also checks them; eager checks them even with a static ``output_size``."""
    x = _input("channels_first")
    bad = torch.tensor([0.5, float("nan")], dtype=torch.float64)
    compiled = torch.compile(lambda a: dt.diffstride(a, bad), backend="eager")
    with pytest.raises(ValueError, match=r"strides must be finite and >= 1"):
        compiled(x)
    with pytest.raises(ValueError, match=r"strides must be finite and >= 1"):
        dt.diffstride(x, bad, output_size=(8, 8))


def test_inductor_matches_eager() -> None:
    """The generated code (inductor, the default backend) computes the same layer."""
    layer = DiffStride(strides=(2.0, 1.5)).double()
    x = _input("channels_first")
    size = layer.output_size(SHAPE_NCHW[2:])

    def fn(a: torch.Tensor) -> torch.Tensor:
        return layer(a, output_size=size)

    compiled = torch.compile(fn, fullgraph=True)
    _assert_same(
        _outputs_and_grads(compiled, x, [layer.strides]),
        _outputs_and_grads(fn, x, [layer.strides]),
    )


def test_training_steps_under_inductor_match_eager() -> None:
    """Training mode projects the stride parameter in place after each call. A compiled
    graph saved that parameter for its backward, so the projection failed autograd's version
    check under inductor; the graph now gets a copy. The first stride starts below the floor
    ``N / (N - R)``, so the projection changes it."""
    eager = DiffStride(strides=(1.1, 2.5)).double()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin)
    optimizers = [torch.optim.SGD(m.parameters(), lr=1e-4) for m in (eager, twin)]
    for step in range(2):
        x = _input("channels_first")
        results = []
        for layer, optimizer in zip((eager, compiled), optimizers, strict=True):
            optimizer.zero_grad()
            y = layer(x)
            y.square().sum().backward()
            grad_strides = layer.strides.grad.clone()
            optimizer.step()
            results.append([y.detach(), grad_strides, layer.strides.detach().clone()])
        torch.testing.assert_close(results[1], results[0], rtol=1e-9, atol=1e-9)
        assert twin.strides[0] > 1.1, step  # projected, then stepped


@pytest.mark.slow  # about 25 s: dynamo traces each of the nine crops
def test_a_stack_of_learnable_layers_matches_eager() -> None:
    """Each distinct crop is its own graph; past dynamo's recompile limit (8 per function,
    shared by every DiffStride layer) dynamo runs the rest eagerly: slower, still exact."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        *(DiffStride(strides=(1.1 + 0.05 * i, 1.2)).double() for i in range(9))
    ).eval()
    x = torch.randn(1, 2, 96, 64, dtype=torch.float64)
    torch.testing.assert_close(
        torch.compile(model, backend="eager")(x), model(x), rtol=1e-9, atol=1e-9
    )


class _Model(torch.nn.Module):
    """Conv2d -> DiffStride -> global mean of the squares -> Linear."""

    def __init__(self, method: str) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.pool = DiffStride((1.05, 2.2), method=method)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).square().mean((2, 3)))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_fullgraph_model_needs_then_uses_the_crop_of_an_eager_call(
    method: str, training: bool
) -> None:
    """``fullgraph=True`` cannot read the strides: before any eager call the error names
    ``output_size`` and what to do; after one, the layer's crop is a constant of the graph
    (training mode then projects nothing, as with a static ``output_size``)."""
    torch.manual_seed(0)
    model = _Model(method).double().train(training)
    x = _input("channels_first")
    with pytest.raises(Exception, match=r"no crop for inputs of spatial sizes \(16, 12\)") as info:
        torch.compile(model, backend="eager", fullgraph=True)(x)
    assert "output_size" in str(info.value)
    assert "eagerly" in str(info.value)
    torch._dynamo.reset()
    model(x.detach())  # the eager call, which projects the strides in training mode
    twin = copy.deepcopy(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    _assert_same(
        _outputs_and_grads(compiled, x, list(model.parameters())),
        _outputs_and_grads(twin, x, list(twin.parameters())),
    )
    torch.testing.assert_close(model.pool.strides, twin.pool.strides, rtol=0, atol=0)
    with torch.no_grad():
        model.pool.strides[0] = 1.0  # below the floor N / (N - R): eager would project it
    compiled(x)
    assert model.pool.strides[0] == 1.0


def test_fullgraph_crop_follows_eager_calls() -> None:
    """The crop is the last eager call's: a compiled call does not move it (the strides
    learn through the mask), the next eager call does, and the graph is recompiled."""
    layer = DiffStride(strides=(2.0, 1.5)).double()
    x = _input("channels_first").detach()
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    first = layer(x).shape
    assert compiled(x).shape == first
    with torch.no_grad():
        layer.strides.copy_(torch.tensor([4.0, 3.0]))
    assert compiled(x).shape == first
    later = layer(x)
    assert later.shape != first
    torch.testing.assert_close(compiled(x), later, rtol=1e-9, atol=1e-9)


def test_fullgraph_functional_error_names_output_size() -> None:
    x = _input("channels_first")
    strides = torch.tensor([2.0, 1.5], dtype=torch.float64)
    compiled = torch.compile(lambda a: dt.diffstride(a, strides), backend="eager", fullgraph=True)
    with pytest.raises(Exception, match=r"fullgraph=True, pass a static output_size"):
        compiled(x)


@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_dynamic_shapes_match_eager(method: str) -> None:
    """``dynamic=True`` traces forward and backward (aot_eager) with symbolic sizes where it
    can; the crop still follows the strides, per input size."""
    layer = DiffStride(strides=(2.0, 1.5), method=method).double()
    compiled = torch.compile(layer, backend="aot_eager", dynamic=True)
    for shape in [(2, 3, 16, 12), (3, 3, 20, 14)]:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        _assert_same(
            _outputs_and_grads(compiled, x, [layer.strides]),
            _outputs_and_grads(layer, x, [layer.strides]),
        )


def test_tracing_asks_and_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tracing()`` is a predicate. A wrapper that ``untraced`` could not build (TensorFlow
    imported, dynamo not: importing it then segfaulted) is built at the next eager request
    for one once dynamo is imported, never by ``tracing()``."""
    import sys
    import types

    backend = type(diffstride.get_backend("torch"))()

    def step() -> int:
        return 1

    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
        patch.delitem(sys.modules, "torch._dynamo")
        assert backend.untraced(step) is step  # not built: it would import dynamo
        assert backend.tracing() is False
    before = {name: copy.copy(value) for name, value in vars(backend).items()}
    assert backend.tracing() is False
    assert vars(backend) == before
    seen = []
    torch.compile(lambda a: seen.append(backend.tracing()) or a, backend="eager")(torch.ones(1))
    assert seen == [True]
    assert vars(backend) == before
    wrapped = backend.untraced(step)  # an eager request: the wrappers are built now
    assert wrapped is not step
    assert wrapped() == 1
    assert backend.untraced(step) is wrapped


def test_compiling_is_not_exporting_where_dynamo_says_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before torch 2.13, dynamo folded ``torch.compiler.is_exporting()`` to True under
    ``torch.compile`` (pytorch/pytorch#176347), and the layers took export's path there (on
    torch 2.11 that failed to trace). Simulated by an export flag that says True wherever
    dynamo traces: under ``torch.compile`` dynamo's translator says no."""
    from diffstride import _torch_tracing

    monkeypatch.setattr(_torch_tracing, "_export_flag", torch.compiler.is_compiling)

    @torch.compile(backend="eager", fullgraph=True)
    def branch(x: torch.Tensor) -> torch.Tensor:
        return x + 1 if _torch_tracing.exporting() else x - 1

    assert branch(torch.zeros(1)).item() == -1.0
