"""One layer object takes inputs of any channel count: a DiffStride has no weight per channel,
so it holds no per-call state, and each result equals a fresh layer's on the same input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

SHAPES = [(2, 3, 16, 16), (2, 5, 16, 16), (2, 3, 16, 16), (2, 1, 12, 16)]


def _inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]


def _check(make: Callable[[], Callable[[np.ndarray], Any]]) -> None:
    """One layer on every input equals a fresh layer per input."""
    layer = make()
    for x in _inputs():
        np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(make()(x)), rtol=0, atol=0)


def test_numpy_layer_takes_any_channel_count() -> None:
    from diffstride.numpy import DiffStride

    _check(lambda: DiffStride((2.0, 1.5)))
    layer = DiffStride((2.0, 1.5))
    for x in _inputs():
        y = layer(x)
        grads = layer.vjp(x, np.ones(y.shape, np.float32))
        fresh = DiffStride((2.0, 1.5)).vjp(x, np.ones(y.shape, np.float32))
        for got, expected in zip(grads, fresh, strict=True):
            np.testing.assert_array_equal(got, expected)


def test_jax_layer_takes_any_channel_count() -> None:
    jnp = pytest.importorskip("jax.numpy")
    from diffstride.jax import DiffStride

    def make() -> Callable[[np.ndarray], Any]:
        layer = DiffStride((2.0, 1.5))
        params = layer.init()
        return lambda x: layer.apply(params, jnp.asarray(x))

    _check(make)


def test_torch_layer_takes_any_channel_count() -> None:
    torch = pytest.importorskip("torch")
    from diffstride.torch import DiffStride

    for mode in ("train", "eval"):

        def make(mode: str = mode) -> Callable[[np.ndarray], Any]:
            layer = getattr(DiffStride((2.0, 1.5)), mode)()
            return lambda x: layer(torch.from_numpy(x)).detach().numpy()

        _check(make)


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_flax_layer_takes_any_channel_count(data_format: str) -> None:
    pytest.importorskip("flax")
    import jax.numpy as jnp
    from flax import nnx

    from diffstride.flax import DiffStride

    def layout(x: np.ndarray) -> Any:
        return jnp.asarray(x if data_format == "channels_first" else np.moveaxis(x, 1, -1))

    def make() -> Callable[[np.ndarray], Any]:
        layer = DiffStride((2.0, 1.5), data_format=data_format)
        return lambda x: layer(layout(x))

    _check(make)
    jitted = nnx.jit(lambda m, a: m(a))
    layer = DiffStride((2.0, 1.5), data_format=data_format)
    for x in _inputs():  # jitted first, then eagerly, the same object
        expected = np.asarray(DiffStride((2.0, 1.5), data_format=data_format)(layout(x)))
        np.testing.assert_allclose(np.asarray(jitted(layer, layout(x))), expected, atol=1e-6)
        np.testing.assert_allclose(np.asarray(layer(layout(x))), expected, atol=1e-6)
