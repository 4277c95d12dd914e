"""The Flax NNX front-end: forward equals numpy, jitted optax training, static crops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("flax")
optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import diffstride.numpy as dnp  # noqa: E402
from diffstride.flax import (  # noqa: E402
    DiffStride,
    FixedSpectralPooling,
    diffstride_layers,
    update_crops,
)


def _input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize(
    ("strides", "spatial"), [((3.0,), (20,)), ((2.0, 3.0), (16, 18))], ids=["1d", "2d"]
)
def test_forward_equals_numpy(data_format, strides, spatial):
    shape = (2, *spatial, 3) if data_format == "channels_last" else (2, 3, *spatial)
    x = _input(shape)
    kwargs = {} if data_format == "channels_last" else {"data_format": data_format}
    layer = DiffStride(strides, **kwargs)
    expected = dnp.diffstride(x, strides, data_format=data_format)
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), expected, atol=1e-5)
    assert layer.crops == {spatial: expected.shape[1:-1] if kwargs == {} else expected.shape[2:]}


def test_fixed_spectral_pooling_equals_numpy():
    x = _input((2, 17, 12, 3))
    layer = FixedSpectralPooling((2, 3))
    expected = dnp.spectral_pooling(x, (2, 3), data_format="channels_last")
    np.testing.assert_allclose(np.asarray(layer(jnp.asarray(x))), expected, atol=1e-5)
    jitted = nnx.jit(lambda m, a: m(a))(layer, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(jitted), expected, atol=1e-5)
    assert nnx.state(layer, nnx.Param) == nnx.State({})


class _Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(2, 4, (3, 3), rngs=rngs)
        self.pool = DiffStride((2.0, 2.0), smoothness_factor=2.0)
        self.conv2 = nnx.Conv(4, 4, (3, 3), rngs=rngs)
        self.head = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        h = self.pool(nnx.relu(self.conv1(x)))
        return self.head(jnp.mean(nnx.relu(self.conv2(h)), axis=(1, 2)))


def test_jit_train_step_with_optax_learns_the_strides():
    model = _Tiny(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    x = jnp.asarray(_input((4, 16, 16, 2)))
    y = jnp.array([0, 1, 2, 0])
    traces = []

    @nnx.jit
    def step(model, optimizer, x, y):
        traces.append(1)

        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        model.pool.project()
        return loss

    update_crops(model, jax.ShapeDtypeStruct(x.shape, x.dtype))
    assert model.pool.crops == {(16, 16): model.pool.output_size((16, 16))}
    before = np.asarray(model.pool.strides[...]).copy()
    losses = [float(step(model, optimizer, x, y)) for _ in range(4)]
    after = np.asarray(model.pool.strides[...])
    assert np.all(np.isfinite(losses))
    assert not np.allclose(before, after)
    assert np.all(after >= 1.0)
    assert len(traces) == 1  # the crop is static: one trace for every step

    # The strides moved; refreshing the crops retraces only if the output size changed.
    update_crops(model)
    step(model, optimizer, x, y)
    changed = model.pool.crops[(16, 16)] != model.pool._output_size_with((16, 16), before)
    assert len(traces) == 1 + changed


def test_update_crops_across_a_boundary_retraces():
    layer = DiffStride((2.0, 2.0))
    x = jnp.asarray(_input((1, 32, 32, 2)))
    traces = []

    @nnx.jit
    def run(m, a):
        traces.append(1)
        return m(a)

    assert layer(x).shape == (1, 24, 24, 2)
    assert run(layer, x).shape == (1, 24, 24, 2)
    layer.strides[...] = jnp.array([4.0, 4.0], dtype=jnp.float32)
    assert run(layer, x).shape == (1, 24, 24, 2)  # the crop is static until updated
    assert len(traces) == 1
    update_crops(layer)
    assert layer.crops == {(32, 32): (16, 16)}
    assert run(layer, x).shape == (1, 16, 16, 2)
    assert len(traces) == 2
    np.testing.assert_allclose(
        np.asarray(run(layer, x)),
        dnp.diffstride(np.asarray(x), (4.0, 4.0), data_format="channels_last"),
        atol=1e-5,
    )


def _train_step(traces: list) -> Any:
    @nnx.jit(static_argnames="sized")
    def step(model, optimizer, x, y, sized=False):
        traces.append(x.shape)

        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        # Without input_size, the size the layer has seen (ambiguous once it has seen two).
        model.pool.project(x.shape[1:3] if sized else None)
        return loss, grads["pool"]["strides"][...]

    return step


def test_first_jitted_step_of_a_fresh_model():
    """No eager call and no update_crops first: the crop comes from the host copy of the
    strides, under the trace; the strides' gradient flows through the mask."""
    model = _Tiny(nnx.Rngs(0))
    reference = _Tiny(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    x = jnp.asarray(_input((4, 16, 16, 2)))
    y = jnp.array([0, 1, 2, 0])
    traces: list = []
    step = _train_step(traces)

    loss, grad = step(model, optimizer, x, y)
    expected_loss, expected_grads = nnx.value_and_grad(
        lambda m: optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()
    )(reference)
    np.testing.assert_allclose(float(loss), float(expected_loss), rtol=1e-5)
    expected_grad = np.asarray(expected_grads["pool"]["strides"][...])
    assert np.all(expected_grad != 0)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=1e-4, atol=1e-7)
    assert model.pool.crops == {(16, 16): reference.pool.output_size((16, 16))}

    before = np.asarray(model.pool.strides[...]).copy()
    step(model, optimizer, x, y)
    assert not np.allclose(before, np.asarray(model.pool.strides[...]))
    assert traces == [x.shape]  # the second step reuses the first one's trace

    bigger = jnp.asarray(_input((4, 20, 20, 2), seed=1))
    loss, _ = step(model, optimizer, bigger, y, sized=True)  # a new size, first seen under jit
    assert np.isfinite(float(loss))
    assert traces == [x.shape, bigger.shape]
    assert set(model.pool.crops) == {(16, 16), (20, 20)}
    step(model, optimizer, bigger, y, sized=True)
    assert len(traces) == 2
    update_crops(model)  # every size seen, traced ones included, follows the strides now
    assert model.pool.crops == {size: model.pool.output_size(size) for size in [(16, 16), (20, 20)]}


def test_jitted_crop_follows_the_host_copy_of_the_strides():
    layer = DiffStride((2.0, 2.0))
    run = nnx.jit(lambda m, a: m(a))
    x = jnp.asarray(_input((1, 32, 32, 2)))
    layer.strides[...] = jnp.array([4.0, 4.0], dtype=jnp.float32)  # as loaded weights would
    assert run(layer, x).shape == (1, 24, 24, 2)  # the copy: the initial strides
    update_crops(layer)
    y = run(layer, x)
    assert y.shape == (1, 16, 16, 2)
    np.testing.assert_allclose(
        np.asarray(y),
        dnp.diffstride(np.asarray(x), (4.0, 4.0), data_format="channels_last"),
        atol=1e-5,
    )
    layer.strides[...] = jnp.array([2.0, 2.0], dtype=jnp.float32)
    assert layer(x).shape == (1, 24, 24, 2)  # an eager call refreshes the copy
    assert run(layer, x).shape == (1, 24, 24, 2)
    with pytest.raises(ValueError, match=r"update_crops\(\) reads the strides"):
        nnx.jit(lambda m: m.update_crops())(layer)
    with pytest.deprecated_call():
        layer.refresh_crops()


def test_eager_grad_computes_the_crop():
    layer = DiffStride((2.0, 3.0), trainable=True)
    x = jnp.asarray(_input((1, 8, 8, 1)))
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(layer)
    assert grads["strides"][...].shape == (2,)
    assert layer.crops == {(8, 8): layer.output_size((8, 8))}
    frozen = DiffStride((2.0, 3.0), trainable=False)
    update_crops(frozen, x)
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x) ** 2)))(frozen)
    np.testing.assert_array_equal(np.asarray(grads["strides"][...]), 0.0)


def test_split_merge_and_state_keep_strides_and_crops():
    model = _Tiny(nnx.Rngs(1))
    model.pool.strides[...] = jnp.array([2.5, 3.0], dtype=jnp.float32)
    update_crops(model, jax.ShapeDtypeStruct((2, 16, 16, 2), jnp.float32))
    graphdef, state = nnx.split(model)
    clone = nnx.merge(graphdef, state)
    np.testing.assert_array_equal(np.asarray(clone.pool.strides[...]), [2.5, 3.0])
    assert clone.pool.crops == model.pool.crops
    params = nnx.state(model, nnx.Param)
    np.testing.assert_array_equal(np.asarray(params["pool"]["strides"][...]), [2.5, 3.0])
    fresh = _Tiny(nnx.Rngs(2))
    nnx.update(fresh, params)
    np.testing.assert_array_equal(np.asarray(fresh.pool.strides[...]), [2.5, 3.0])
    assert diffstride_layers(model) == [model.pool]


def test_project_and_rank_3():
    layer = DiffStride((1.0, 1.0, 1.0), smoothness_factor=4.0)
    x = jnp.asarray(_input((1, 8, 8, 8, 1)))
    update_crops(layer, jax.ShapeDtypeStruct(x.shape, x.dtype))
    assert nnx.jit(lambda m, a: m(a))(layer, x).shape == (1, 8, 8, 8, 1)
    layer.project()
    np.testing.assert_allclose(np.asarray(layer.strides[...]), [2.0, 2.0, 2.0])  # 8 / (8 - 4)
    with pytest.raises(ValueError, match="needs input_size"):
        DiffStride((2.0,)).project()
