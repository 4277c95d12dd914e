"""``torch.func`` on a model with a DiffStride layer: ``functional_call``, ``grad`` (the
strides included) and per-sample gradients (``vmap`` of ``grad``) equal autograd's, in
training and eval mode, on the FFT path (the core's ``autograd.Function``) and the GEMMs.

Under these transforms the strides are wrapped tensors whose values the host cannot read
directly; the crop is still decided from them (under stop-gradient), and the strides learn
through the mask.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from torch.func import functional_call, grad, grad_and_value, vmap  # noqa: E402

import diffstride  # noqa: E402
from diffstride import torch as dt  # noqa: E402
from diffstride.torch import DiffStride  # noqa: E402

SHAPE = (3, 2, 16, 12)
#: Tolerance from the dtype (float64): the transforms reorder the same sums.
RTOL = 4 * torch.finfo(torch.float64).eps ** 0.5


class _Model(torch.nn.Module):
    """Conv2d -> DiffStride -> global mean of the squares -> Linear (a plain mean would
    read the zero frequency only, which the mask keeps whatever the strides)."""

    def __init__(self, method: str) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        # The first stride starts below the floor N / (N - R): training projects it.
        self.pool = DiffStride((1.05, 2.2), method=method)
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.conv(x)).square().mean((2, 3)))


def _model(method: str, training: bool) -> _Model:
    torch.manual_seed(0)
    return _Model(method).double().train(training)


def _input() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(SHAPE, dtype=torch.float64)


def _loss(y: torch.Tensor) -> torch.Tensor:
    weight = torch.linspace(-1.0, 2.0, y.shape[-1], dtype=y.dtype)
    return (y * weight).square().sum()


def _autograd(model: _Model, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    model.zero_grad()
    loss = _loss(model(x))
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}, loss.detach()


def _params(model: _Model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=RTOL, msg=name)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_grad_of_functional_call_equals_autograd(method: str, training: bool) -> None:
    model = _model(method, training)
    twin = copy.deepcopy(model)
    x = _input()
    params = _params(model)

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return _loss(functional_call(model, p, (x,)))

    grads, value = grad_and_value(loss)(params)
    want, want_value = _autograd(twin, x)
    torch.testing.assert_close(value, want_value, rtol=RTOL, atol=0)
    assert torch.count_nonzero(want["pool.strides"]) == 2
    _assert_close(grads, want)
    # Training projects the strides it was given, as eager projects the parameter.
    torch.testing.assert_close(params["pool.strides"], twin.pool.strides.detach())
    assert (params["pool.strides"][0] > 1.05) == training


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_per_sample_gradients_equal_a_loop(method: str, training: bool) -> None:
    model = _model(method, training)
    x = _input()
    params = _params(model)

    def loss(p: dict[str, torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
        return _loss(functional_call(model, p, (sample[None],)))

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x)
    for i in range(SHAPE[0]):
        # A fresh model per sample: training projects the strides after each call.
        want, _ = _autograd(_model(method, training), x[i : i + 1])
        _assert_close({name: g[i] for name, g in per_sample.items()}, want)


def test_vmap_over_the_strides_needs_output_size() -> None:
    """Strides batched by ``vmap`` (one model per sample) have one crop each: an error that
    names ``output_size``, with which the call works."""
    x = _input()
    strides = torch.tensor([[1.5, 2.0], [2.0, 2.0], [3.0, 1.5]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"batched \(torch.func.vmap.*output_size"):
        vmap(dt.diffstride)(x[:, None], strides)
    size = diffstride.output_size(SHAPE[2:], (1.5, 1.5))
    got = vmap(lambda a, s: dt.diffstride(a, s, output_size=size))(x[:, None], strides)
    for i in range(SHAPE[0]):
        want = dt.diffstride(x[i : i + 1], strides[i], output_size=size)
        torch.testing.assert_close(got[i], want, rtol=RTOL, atol=RTOL)


def test_autograd_function_is_vmap_ready() -> None:
    """``torch.func`` transforms run a custom ``autograd.Function`` only in the
    ``setup_context`` style with a vmap rule."""
    from diffstride_backends._torch_autograd import FusedVJP

    assert FusedVJP.generate_vmap_rule
    assert FusedVJP.setup_context is not torch.autograd.Function.setup_context
