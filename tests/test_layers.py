"""The layers in each framework: golden cases, training steps, serialization, modes, dtypes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from diffstride_conformance import golden
from diffstride_conformance.checks import OUTPUT_RTOL, STRIDE_GRAD_RTOL, assert_close

CASES = golden.diffstride_cases()


def _layer_kwargs(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "strides": meta["strides"],
        "shared_stride": meta["shared_stride"],
        **golden.diffstride_kwargs(meta),
    }


def _clipped(values: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    low = meta["lower_limit_stride"] or 1.0
    high = meta["upper_limit_stride"] or np.inf
    return np.clip(values, low, high)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_torch_layer_golden(case: dict[str, Any]) -> None:
    import torch

    from diffstride.torch import DiffStride

    layer = DiffStride(**_layer_kwargs(case["meta"])).train()
    np.testing.assert_array_equal(layer.strides.detach().numpy(), case["strides_init"])
    x = torch.from_numpy(case["x"]).requires_grad_()
    y = layer(x)
    (y * torch.from_numpy(case["cot"])).sum().backward()
    assert_close(y.detach().numpy(), case["y"], OUTPUT_RTOL, "y")
    assert_close(x.grad.numpy(), case["grad_x"], OUTPUT_RTOL, "grad_x")
    assert_close(layer.strides.grad.numpy(), case["grad_strides"], STRIDE_GRAD_RTOL, "grad_s")
    # torch has no constraints: the limits' clip joins the projection (see diffstride.torch).
    expected = _clipped(case["strides_after"], case["meta"])
    np.testing.assert_allclose(layer.strides.detach().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_keras_layer_golden(case: dict[str, Any]) -> None:
    import tensorflow as tf

    from diffstride.tf import DiffStride

    layer = DiffStride(**_layer_kwargs(case["meta"]))
    x = tf.constant(case["x"])
    layer.build(x.shape)
    np.testing.assert_array_equal(layer.strides.numpy(), case["strides_init"])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * case["cot"])
    grad_x, grad_s = tape.gradient(loss, [x, layer.strides.value])
    assert_close(y.numpy(), case["y"], OUTPUT_RTOL, "y")
    assert_close(grad_x.numpy(), case["grad_x"], OUTPUT_RTOL, "grad_x")
    assert_close(grad_s.numpy(), case["grad_strides"], STRIDE_GRAD_RTOL, "grad_s")
    np.testing.assert_allclose(layer.strides.numpy(), case["strides_after"], rtol=1e-6)


@pytest.mark.parametrize("case", CASES[:6], ids=[c["id"] for c in CASES[:6]])
def test_jax_and_numpy_layers_golden(case: dict[str, Any]) -> None:
    import jax
    import jax.numpy as jnp

    from diffstride.jax import DiffStride
    from diffstride.numpy import DiffStride as Reference

    layer = DiffStride(**_layer_kwargs(case["meta"]))
    params = layer.init()
    x = jnp.asarray(case["x"])
    y, pullback = jax.vjp(layer.apply, params, x)
    grad_params, grad_x = pullback(jnp.asarray(case["cot"]))
    assert_close(y, case["y"], OUTPUT_RTOL, "y")
    assert_close(grad_x, case["grad_x"], OUTPUT_RTOL, "grad_x")
    assert_close(grad_params["strides"], case["grad_strides"], STRIDE_GRAD_RTOL, "grad_s")
    projected = layer.project(params, x.shape)["strides"]
    np.testing.assert_allclose(projected, _clipped(case["strides_after"], case["meta"]), 1e-6)

    reference = Reference(**_layer_kwargs(case["meta"]))
    assert_close(reference(case["x"]), case["y"], OUTPUT_RTOL, "numpy y")
    _, ref_grad_s = reference.vjp(case["x"], case["cot"])
    assert_close(ref_grad_s, case["grad_strides"], STRIDE_GRAD_RTOL, "numpy grad_s")


# --- torch ---------------------------------------------------------------------------------


def _torch_model(**kwargs: Any) -> Any:
    import torch
    from torch import nn

    from diffstride.torch import DiffStride

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        DiffStride(**kwargs),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def test_torch_training_moves_strides_within_limits() -> None:
    import torch

    model = _torch_model(strides=(2.0, 2.0), lower_limit_stride=1.5, upper_limit_stride=2.3)
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    x, target = torch.randn(8, 3, 16, 16), torch.randint(0, 2, (8,))
    before = model[1].strides.detach().clone()
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), target).backward()
        optimizer.step()
        model(x)  # training-mode call projects into the limits
        assert torch.all(model[1].strides >= 1.5)
        assert torch.all(model[1].strides <= 2.3)
    assert not torch.equal(before, model[1].strides.detach())


def test_torch_state_dict_round_trip_and_eval_mode() -> None:
    import torch

    model = _torch_model(strides=(1.0, 3.0)).train()
    x = torch.randn(2, 3, 16, 16)
    model(x)  # projects (1.0 -> 16 / 12)
    fresh = _torch_model(strides=(2.0, 2.0))
    fresh.load_state_dict(model.state_dict())
    model.eval()
    fresh.eval()
    before = fresh[1].strides.detach().clone()
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    assert torch.equal(before, fresh[1].strides.detach())
    assert "strides=(1.333, 3)" in repr(fresh)


def test_torch_no_grad_frozen_and_float64() -> None:
    import torch

    from diffstride.torch import DiffStride

    layer = DiffStride((2.0, 2.0), trainable=False)
    assert not layer.strides.requires_grad
    with torch.no_grad():
        assert layer(torch.randn(1, 2, 32, 32)).shape == (1, 2, 24, 24)
    layer = DiffStride((2.0, 2.0)).to(torch.float64).requires_grad_(False)
    x = torch.randn(1, 2, 12, 12, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert y.dtype == x.grad.dtype == torch.float64
    assert layer.strides.grad is None


def test_torch_layer_errors() -> None:
    import torch

    from diffstride.torch import DiffStride

    with pytest.raises(ValueError, match=r"shared_stride=True needs equal initial strides"):
        DiffStride((2.0, 3.0), shared_stride=True)
    with pytest.raises(ValueError, match=r"strides=\(0.5, 2.0\)"):
        DiffStride((0.5, 2.0))
    with pytest.raises(TypeError, match="strides="):
        DiffStride(None)
    with pytest.raises(ValueError, match="data_format='NHWC'"):
        DiffStride(data_format="NHWC")
    layer = DiffStride()
    with pytest.raises(ValueError, match="rank-4"):
        layer(torch.randn(3, 16, 16))
    with pytest.raises(ValueError, match=r"spatial sizes >= 2; received shape \(1, 3, 16, 1\)"):
        layer(torch.randn(1, 3, 16, 1))


# --- keras ---------------------------------------------------------------------------------


def _keras_model(**kwargs: Any) -> Any:
    import keras

    from diffstride.tf import DiffStride, FixedSpectralPooling, SpatialPooling

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),
            FixedSpectralPooling((1.5, 1.5), data_format="channels_last"),
            DiffStride(data_format="channels_last", **kwargs),
            keras.layers.Conv2D(4, 3, padding="same"),
            DiffStride((1.5, 1.5), data_format="channels_last"),  # after a dynamic size
            SpatialPooling(data_format="channels_last"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )


def test_keras_fit_save_load(tmp_path: Any) -> None:
    import keras

    model = _keras_model(strides=(2.0, 2.0), lower_limit_stride=1.5, upper_limit_stride=2.3)
    model.compile(
        optimizer=keras.optimizers.SGD(5.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 16, 16, 3)).astype("float32")
    target = rng.integers(0, 2, 16)
    before = model.layers[2].strides.numpy().copy()
    model.fit(x, target, epochs=2, batch_size=8, verbose=0)
    after = model.layers[2].strides.numpy()
    assert not np.array_equal(before, after)
    assert not np.array_equal(model.layers[4].strides.numpy(), [1.5, 1.5])
    assert np.all(after >= 1.5)
    assert np.all(after <= 2.3)
    assert model.layers[2].compute_output_shape((None, 10, 10, 4)) == (
        None,
        *model.layers[2].output_size((10, 10)),
        4,
    )
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects
    np.testing.assert_array_equal(loaded.layers[2].strides.numpy(), after)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert loaded.layers[2].get_config() == model.layers[2].get_config()


def test_layers_take_the_computation_path() -> None:
    import tensorflow as tf
    import torch

    from diffstride import tf as dtf
    from diffstride import torch as dtorch

    x = np.random.default_rng(3).standard_normal((2, 3, 20, 20)).astype(np.float32)
    outputs = []
    for method in ("fft", "matmul"):
        torch_layer = dtorch.DiffStride((2.0, 1.5), method=method).eval()
        keras_layer = dtf.DiffStride((2.0, 1.5), data_format="channels_first", method=method)
        assert keras_layer.get_config()["method"] == method
        assert dtf.DiffStride.from_config(keras_layer.get_config()).method == method
        outputs += [
            torch_layer(torch.from_numpy(x)).detach().numpy(),
            keras_layer(tf.constant(x)).numpy(),
        ]
    for output in outputs[1:]:
        np.testing.assert_allclose(output, outputs[0], rtol=1e-4, atol=1e-5)
    assert "method='matmul'" in repr(dtorch.DiffStride(method="matmul"))
    with pytest.raises(ValueError, match="method='dense'"):
        dtorch.FixedSpectralPooling(method="dense")


def test_keras_eval_does_not_mutate_and_float64() -> None:
    import tensorflow as tf

    from diffstride.tf import DiffStride

    layer = DiffStride((1.0, 1.0), data_format="channels_first")
    x = tf.random.normal((1, 2, 12, 12))
    layer(x, training=False)
    np.testing.assert_array_equal(layer.strides.numpy(), [1.0, 1.0])
    layer(x, training=True)
    np.testing.assert_allclose(layer.strides.numpy(), [1.5, 1.5])
    wide = DiffStride((2.0, 2.0), data_format="channels_first", dtype="float64")
    y = wide(tf.random.normal((1, 2, 12, 12), dtype=tf.float64))
    assert y.dtype == tf.float64


# --- jax -----------------------------------------------------------------------------------


def test_jax_optax_steps_with_jit_and_projection() -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from diffstride import output_size
    from diffstride.jax import DiffStride

    layer = DiffStride((2.0, 2.0), lower_limit_stride=1.5, upper_limit_stride=2.3)
    params = layer.init()
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 16, 16))
    optimizer = optax.sgd(5.0)
    state = optimizer.init(params)

    def loss(params: Any, size: tuple[int, int]) -> Any:
        return jnp.mean((layer.apply(params, x, output_size=size) - 0.5) ** 2)

    step_grad = jax.jit(jax.grad(loss), static_argnums=1)
    for _ in range(3):
        size = output_size(
            (16, 16), layer.current_strides(), lower_limit_stride=1.5, upper_limit_stride=2.3
        )
        updates, state = optimizer.update(step_grad(params, size), state)
        params = layer.project(optax.apply_updates(params, updates), x.shape)
        assert jnp.all(params["strides"] >= 1.5)
        assert jnp.all(params["strides"] <= 2.3)
    assert not np.array_equal(params["strides"], [2.0, 2.0])


@pytest.mark.parametrize(
    ("pool_size", "strides", "size"),
    [((1, 1), (2, 2), 15), ((3, 3), (2, 2), 15), ((2, 3), (3, 2), 16)],
)
def test_spatial_and_fixed_pooling_agree_across_frameworks(
    pool_size: tuple, strides: tuple, size: int
) -> None:
    import tensorflow as tf
    import torch

    from diffstride import tf as dtf
    from diffstride import torch as dtorch

    x = np.random.default_rng(1).standard_normal((2, size, size, 3)).astype(np.float32)
    keras_y = dtf.SpatialPooling(pool_size, strides, data_format="channels_last")(x).numpy()
    torch_layer = dtorch.SpatialPooling(pool_size, strides, data_format="channels_last")
    torch_y = torch_layer(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(torch_y, keras_y, rtol=1e-5, atol=1e-6)
    assert keras_y.shape[1:3] == torch_layer.output_size((size, size))
    fixed = dtf.FixedSpectralPooling((1.5, 2.0), data_format="channels_last")
    np.testing.assert_allclose(
        dtorch.FixedSpectralPooling((1.5, 2.0), data_format="channels_last")(
            torch.from_numpy(x)
        ).numpy(),
        fixed(tf.constant(x)).numpy(),
        rtol=1e-4,
        atol=1e-5,
    )
    assert fixed.compute_output_shape((None, size, size, 3))[1:3] == fixed.output_size((size, size))


@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_torch_empty_batch_stays_in_the_graph(method: str) -> None:
    import torch

    from diffstride.torch import DiffStride

    conv, layer = torch.nn.Conv2d(3, 4, 3), DiffStride(strides=(2.0, 3.0), method=method)
    y = layer(conv(torch.randn(0, 3, 16, 16)))
    assert tuple(y.shape) == (0, 4, *layer.output_size((14, 14)))
    y.sum().backward()  # an empty data-parallel shard: every parameter still gets a gradient
    assert conv.weight.grad is not None
    assert torch.equal(layer.strides.grad, torch.zeros(2))


def test_torch_meta_device_init_then_reset_parameters() -> None:
    import torch

    from diffstride.torch import DiffStride, DiffStride1d

    for build, shape in [
        (lambda: DiffStride(strides=(2.0, 2.5), ramp="inside"), (2, 3, 16, 16)),
        (lambda: DiffStride1d(strides=3.0), (1, 2, 30)),
    ]:
        reference = build()
        with torch.device("meta"):
            layer = build()
        meta_out = layer(torch.empty(*shape, device="meta"))  # shapes before any value exists
        assert meta_out.shape == reference(torch.randn(*shape)).shape
        layer = layer.to_empty(device="cpu")
        layer.reset_parameters()
        torch.testing.assert_close(layer.strides, reference.strides)
        with torch.no_grad():
            layer.strides.fill_(4.0)
        layer.reset_parameters()
        torch.testing.assert_close(layer.strides, reference.strides)


def test_a_global_mean_right_after_the_layer_gives_the_strides_no_gradient() -> None:
    """The README's trap: the mask is 1 at frequency zero, so the output's mean follows the
    strides only through the crop size, a step function."""
    import torch

    from diffstride.torch import DiffStride

    layer = DiffStride(strides=(2.3, 1.7))
    layer(torch.randn(4, 3, 32, 32)).mean().backward()
    assert layer.strides.grad.abs().max() < 1e-6
    layer.zero_grad()
    layer(torch.randn(4, 3, 32, 32)).square().mean().backward()
    assert layer.strides.grad.abs().max() > 1e-6


@pytest.mark.parametrize(
    ("module", "name", "strides", "data_format"),
    [
        ("numpy", "DiffStride", (2.0, 2.0), "channels_first"),
        ("jax", "DiffStride", (2.0, 2.0), "channels_first"),
        ("flax", "DiffStride", (2.0, 2.0), "channels_last"),
        ("torch", "DiffStride1d", 2.0, "channels_first"),
        ("keras", "DiffStride3D", 2.0, None),
    ],
)
def test_every_front_end_takes_one_layer_signature(
    module: str, name: str, strides: Any, data_format: str | None
) -> None:
    """One ``__init__`` definition (``_layers.diffstride_init``): the same arguments in each
    front-end, with its own default strides and layout, as ``help()`` shows them."""
    import importlib
    import inspect

    from diffstride import Options

    pytest.importorskip({"numpy": "numpy", "flax": "flax"}.get(module, module))
    layer = getattr(importlib.import_module(f"diffstride.{module}"), name)
    params = inspect.signature(layer.__init__).parameters
    options = {name: getattr(Options(), name) for name in Options().as_dict()}
    expected = {"strides": strides, "trainable": True, "shared_stride": False, **options}
    expected["data_format"] = data_format
    assert list(params) == ["self", *expected]
    assert {name: params[name].default for name in expected} == expected
    built = layer(strides=3.0 if module in ("torch", "keras") else (3.0, 3.0), ramp="inside")
    assert built.options.ramp == "inside"
    assert getattr(built, "trainable", True) is True  # torch: the parameter's requires_grad
    want = data_format or __import__("keras").config.image_data_format()
    assert built.data_format == want


@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_torch_training_after_an_inference_mode_call(method: str) -> None:
    """The arrays the host plan keeps on the device are made outside inference mode: a
    training call after a ``torch.inference_mode`` one can save them for its backward."""
    torch = pytest.importorskip("torch")
    from diffstride.torch import DiffStride, FixedSpectralPooling

    x = torch.randn(2, 3, 16, 16)
    for layer in (DiffStride((2.0, 2.0), method=method), FixedSpectralPooling((2, 2))):
        with torch.inference_mode():
            expected = layer.eval()(x)
        y = layer.train()(x.clone().requires_grad_(True))
        (y * y).sum().backward()
        torch.testing.assert_close(y.detach(), expected)


@pytest.mark.parametrize("ramp", ["outside", "inside"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_torch_host_projection_is_the_devices(ramp: str, dtype: str) -> None:
    """The projection a training call decides on the host is, bit for bit, the one the
    device computes, at and around its minimum ``N / (N - R)`` and the limits."""
    torch = pytest.importorskip("torch")
    from diffstride.torch import DiffStride

    torch_dtype = getattr(torch, dtype)
    rng = np.random.default_rng(0)
    for sizes in [(32, 32), (9, 17), (5, 64)]:
        for shared in (False, True):
            layer = DiffStride(
                (2.0, 2.0), ramp=ramp, shared_stride=shared, upper_limit_stride=6.0
            ).to(torch_dtype)
            minimum = np.asarray(sizes[0] / (sizes[0] - layer.smoothness_factor), dtype=dtype)
            near = [np.nextafter(minimum, 0), minimum, np.nextafter(minimum, 9), 0.5, 6.0, 7.0]
            for value in [*near, *rng.uniform(0.5, 8.0, size=6)]:
                values = np.full(1 if shared else 2, value, dtype=dtype)
                values[-1] += 0.0 if shared else rng.uniform(0, 1)
                with torch.no_grad():
                    layer.strides.copy_(torch.from_numpy(values))
                layer.eval()(torch.zeros((1, 1, *sizes), dtype=torch_dtype))  # the host copy
                on_host = layer._host_projection(sizes)
                on_device = layer._projected(
                    layer.strides.detach(), sizes, clip=True, xp=torch_namespace()
                )
                expected = on_device.numpy()
                got = values if on_host is None else on_host
                np.testing.assert_array_equal(got, expected)
                assert got.dtype == expected.dtype


def torch_namespace() -> Any:
    import diffstride

    return diffstride.get_backend("torch").namespace()
