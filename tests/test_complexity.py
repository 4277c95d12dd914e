"""The complexity regularizer: the formula on known strides, and its gradient."""

from __future__ import annotations

import pytest

import diffstride


def test_formula_on_known_strides() -> None:
    # 1/(2*2) + 1/(2*2*3*1) + 1/(2*2*3*1*1.5*1.5) with a shared stride of 1.5
    expected = 1 / 4 + 1 / 12 + 1 / 27
    assert diffstride.complexity_penalty([(2.0, 2.0), (3.0, 1.0), (1.5,)]) == pytest.approx(
        expected
    )


def test_empty_list_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one DiffStride"):
        diffstride.complexity_penalty([])


def test_torch_penalty_and_gradient() -> None:
    import torch

    from diffstride.torch import DiffStride, complexity_penalty

    model = torch.nn.Sequential(
        DiffStride((2.0, 3.0)), torch.nn.ReLU(), DiffStride((1.5,), shared_stride=True)
    )
    penalty = complexity_penalty(model)
    assert penalty.item() == pytest.approx(1 / 6 + 1 / (6 * 2.25))
    penalty.backward()
    a, b = model[0].strides, model[2].strides
    # dJ/ds_h1 = -(1/6 + 1/13.5) / 2 ; dJ/ds = -2 / 1.5 * (1 / 13.5) for the shared stride
    assert a.grad[0].item() == pytest.approx(-(1 / 6 + 1 / 13.5) / 2)
    assert a.grad[1].item() == pytest.approx(-(1 / 6 + 1 / 13.5) / 3)
    assert b.grad[0].item() == pytest.approx(-2 / 1.5 / 13.5)


def test_array_dispatch_jax_gradient() -> None:
    import jax
    import jax.numpy as jnp

    grad = jax.grad(lambda s: diffstride.complexity_penalty([s, jnp.asarray([2.0, 2.0])]))(
        jnp.asarray([2.0, 1.0])
    )
    # J = 1/(s_h s_w) + 1/(4 s_h s_w); dJ/ds_h = -1.25 / (s_h^2 s_w)
    assert grad[0] == pytest.approx(-1.25 / 4)
    assert grad[1] == pytest.approx(-1.25 / 2)
