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
