"""1-D and 3-D layers in every framework: shapes, both layouts, gradients, serialization.

The conformance suite holds the functions to the reference for every rank; these tests hold
the layers: torch's ``DiffStride1d``/``3d`` (``state_dict``), Keras' ``DiffStride1D``/``3D``
(``get_config`` and ``.keras``), and the rank-generic jax and numpy layers, against numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

import diffstride
from diffstride import numpy as reference

RNG = np.random.default_rng(8)
#: rank -> (channels_first input shape, strides)
CASES = {1: ((2, 3, 40), (2.5,)), 3: ((1, 2, 8, 12, 10), (1.5, 2.0, 2.5))}


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_torch_layers_per_rank(rank: int, data_format: str) -> None:
    torch = pytest.importorskip("torch")
    from diffstride import torch as dt

    shape, strides = CASES[rank]
    x = RNG.standard_normal(shape).astype(np.float32)
    if data_format == "channels_last":
        x = _channels_last(x)
    layer = getattr(dt, f"DiffStride{rank}d")(strides, data_format=data_format)
    assert layer.strides.shape == (rank,)
    x_t = torch.from_numpy(x).requires_grad_(True)
    y = layer(x_t)
    expected = reference.diffstride(x, strides, data_format=data_format)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-4, atol=1e-5)
    spatial = shape[2:]
    out_axes = slice(2, None) if data_format == "channels_first" else slice(1, -1)
    assert tuple(y.shape[out_axes]) == layer.output_size(spatial)
    cot = RNG.standard_normal(expected.shape).astype(np.float32)
    y.backward(torch.from_numpy(cot))
    ref_x, ref_s = reference.diffstride_vjp(
        x, np.asarray(strides, np.float32), cot, data_format=data_format
    )
    np.testing.assert_allclose(x_t.grad.numpy(), ref_x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.strides.grad.numpy(), ref_s, rtol=1e-3, atol=1e-4)
    copy = getattr(dt, f"DiffStride{rank}d")(data_format=data_format)
    copy.load_state_dict(layer.state_dict())
    assert copy.current_strides() == layer.current_strides()
    pooling = getattr(dt, f"FixedSpectralPooling{rank}d")(2.0, data_format=data_format)
    np.testing.assert_allclose(
        pooling(torch.from_numpy(x)).numpy(),
        reference.spectral_pooling(x, 2.0, data_format=data_format),
        rtol=1e-4,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match=f"rank-{rank + 2}"):
        layer(torch.zeros(1, 2, 8, 8))


def test_torch_layers_take_one_stride_or_one_per_axis() -> None:
    pytest.importorskip("torch")
    from diffstride.torch import DiffStride1d, DiffStride3d, complexity_penalty

    assert DiffStride3d(2.0).current_strides() == (2.0, 2.0, 2.0)
    shared = DiffStride3d(2.0, shared_stride=True)
    assert shared.strides.shape == (1,)
    assert shared.current_strides() == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match=r"1 \(shared\) or 3 real numbers"):
        DiffStride3d((2.0, 2.0))
    assert DiffStride1d().current_strides() == (2.0,)
    # J multiplies a layer's strides over its axes: 1 / 8 for a 3-D layer at stride 2.
    assert float(complexity_penalty([shared])) == pytest.approx(0.125)
    assert float(complexity_penalty([DiffStride1d(4.0)])) == pytest.approx(0.25)


@pytest.mark.parametrize("rank", [1, 3])
def test_keras_layers_per_rank(rank: int, tmp_path: object) -> None:
    keras = pytest.importorskip("keras")
    from diffstride import tf as dtf

    shape, strides = CASES[rank]
    x = _channels_last(RNG.standard_normal(shape).astype(np.float32))
    layer_cls = getattr(dtf, f"DiffStride{rank}D")
    model = keras.Sequential([keras.Input(x.shape[1:]), layer_cls(strides)])
    y = model(x)
    expected = reference.diffstride(x, strides, data_format="channels_last")
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-5)
    assert model.output_shape == (None, *expected.shape[1:])
    path = f"{tmp_path}/rank{rank}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[0]) is layer_cls
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(y), rtol=1e-6)
    pooling = getattr(dtf, f"FixedSpectralPooling{rank}D")(2.0)
    np.testing.assert_allclose(
        np.asarray(pooling(x)),
        reference.spectral_pooling(x, 2.0, data_format="channels_last"),
        rtol=1e-4,
        atol=1e-5,
    )
    model.compile("sgd", "mse")
    history = model.fit(x, expected * 0.5, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_keras_loads_the_old_2d_names() -> None:
    keras = pytest.importorskip("keras")
    from diffstride.tf import DiffStride2D, FixedSpectralPooling2D

    objects = keras.saving.get_custom_objects()
    assert objects["diffstride>DiffStride"] is DiffStride2D
    assert objects["diffstride>FixedSpectralPooling"] is FixedSpectralPooling2D


@pytest.mark.parametrize("rank", [1, 3])
def test_jax_and_numpy_layers_take_the_rank_from_the_strides(rank: int) -> None:
    jax = pytest.importorskip("jax")
    from diffstride.jax import DiffStride as JaxDiffStride
    from diffstride.numpy import DiffStride as NumpyDiffStride

    shape, strides = CASES[rank]
    x = RNG.standard_normal(shape).astype(np.float32)
    expected = reference.diffstride(x, strides)
    layer = JaxDiffStride(strides)
    params = layer.init()
    np.testing.assert_allclose(layer.apply(params, x), expected, rtol=1e-4, atol=1e-5)
    size = layer.output_size(shape[2:], params)
    jitted = jax.jit(lambda p: layer.apply(p, x, output_size=size).sum())
    assert np.isfinite(jax.grad(jitted)(params)["strides"]).all()
    np.testing.assert_allclose(NumpyDiffStride(strides)(x), expected, rtol=1e-6)
    with pytest.raises(ValueError, match=f"rank-{rank + 2}"):
        layer.apply(params, np.zeros((1, 1, 8, 8), np.float32))


def test_output_size_per_rank() -> None:
    assert diffstride.output_size((16000,), 4.0) == (4008,)
    assert diffstride.output_size((16000,), 4.0, ramp="inside") == (4000,)
    assert diffstride.output_size((8, 32, 32), (1.0, 2.0, 2.0), ramp="inside") == (8, 16, 16)
    assert diffstride.spectral_pooling_output_size((9, 8, 13), (2, 1.5, 3)) == (4, 4, 4)
    with pytest.raises(TypeError, match="input_size="):
        diffstride.output_size((4, 4, 4, 4), 2.0)
    with pytest.raises(ValueError, match="strides="):
        diffstride.output_size((32, 32, 32), (2.0, 2.0))
