"""ResNets with every downsampling choice, their compute estimate, and the Keras regularizer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

POOLINGS = ["diffstride", "spectral", "spatial", None]


@pytest.mark.parametrize("pooling", POOLINGS)
def test_torch_resnet_builds_and_steps(pooling: str | None) -> None:
    import torch

    from diffstride.models.torch import small_resnet
    from diffstride.torch import complexity_penalty

    model = small_resnet([1, 1, 2, 2, 2], pooling=pooling, in_channels=1, num_classes=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 4, (4,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    if pooling == "diffstride":
        loss = loss + 0.1 * complexity_penalty(model)
    loss.backward()
    optimizer.step()
    assert model(x).shape == (4, 4)
    assert len(model.diffstride_layers()) == (4 if pooling == "diffstride" else 0)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_keras_resnet_builds_and_fits(pooling: str | None) -> None:
    import keras

    from diffstride.models.keras import small_resnet

    model = small_resnet([1, 1, 2, 2, 2], input_shape=(16, 16, 1), pooling=pooling, num_classes=4)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).standard_normal((8, 16, 16, 1)).astype("float32")
    model.fit(x, np.arange(8) % 4, epochs=1, batch_size=4, verbose=0)
    assert model.predict(x, verbose=0).shape == (8, 4)


def _hook_macs(model: object, shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of convolutions and linear layers, counted on a real forward."""
    import torch

    total = 0

    def conv(module: torch.nn.Conv2d, _: object, out: torch.Tensor) -> None:
        nonlocal total
        k_h, k_w = module.kernel_size
        total += k_h * k_w * module.in_channels * module.out_channels * out.shape[2] * out.shape[3]

    def linear(module: torch.nn.Linear, _: object, __: object) -> None:
        nonlocal total
        total += module.in_features * module.out_features

    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(conv)
        elif isinstance(module, torch.nn.Linear):
            module.register_forward_hook(linear)
    model.eval()
    model(torch.randn(1, *shape))
    return total


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("strides", [[1, 1, 2, 2, 2], [1, 1, 3, 2, 3]])
def test_macs_estimate_equals_a_counted_forward(pooling: str | None, strides: list) -> None:
    from diffstride.models.torch import small_resnet

    model = small_resnet(strides, pooling=pooling, in_channels=1)
    assert model.macs((28, 28)) == _hook_macs(model, (1, 28, 28))


def test_keras_and_torch_macs_agree() -> None:
    from diffstride.models import keras as keras_models
    from diffstride.models.torch import small_resnet

    for pooling in POOLINGS:
        torch_model = small_resnet([1, 1, 3, 2, 3], pooling=pooling, in_channels=1)
        keras_model = keras_models.small_resnet(
            [1, 1, 3, 2, 3], input_shape=(28, 28, 1), pooling=pooling
        )
        assert keras_models.macs(keras_model) == torch_model.macs((28, 28))


def test_keras_complexity_penalty_and_gradient() -> None:
    import tensorflow as tf

    from diffstride.tf import DiffStride, complexity_penalty

    layers = [DiffStride((2.0, 3.0)), DiffStride((1.5,), shared_stride=True)]
    for layer in layers:
        layer.build((None, 8, 8, 1))
    with tf.GradientTape() as tape:
        penalty = complexity_penalty(layers)
    grads = tape.gradient(penalty, [layer.strides for layer in layers])
    assert float(penalty) == pytest.approx(1 / 6 + 1 / 13.5)
    np.testing.assert_allclose(
        grads[0].numpy(), [-(1 / 6 + 1 / 13.5) / 2, -(1 / 6 + 1 / 13.5) / 3], rtol=1e-6
    )
    np.testing.assert_allclose(grads[1].numpy(), [-2 / 1.5 / 13.5], rtol=1e-6)


def test_stride_history_callback() -> None:
    import keras

    from diffstride.models.keras import small_resnet
    from diffstride.tf import StrideHistory

    model = small_resnet(input_shape=(16, 16, 1), num_classes=2)
    model.compile(
        keras.optimizers.SGD(1.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = StrideHistory()
    x = np.random.default_rng(0).standard_normal((8, 16, 16, 1)).astype("float32")
    model.fit(x, np.arange(8) % 2, epochs=2, batch_size=4, verbose=0, callbacks=[history])
    assert len(history.history) == 3
    assert len(history.history[0]) == 4
    assert history.history[0] != history.history[-1]


def test_unknown_pooling_is_rejected() -> None:
    from diffstride.models.torch import small_resnet

    with pytest.raises(ValueError, match="pooling='max'"):
        small_resnet(pooling="max")
    with pytest.raises(ValueError, match="integer strides"):
        small_resnet([1, 1, 1.5, 2, 2], pooling="spatial")


def test_stride_report_chains_sizes() -> None:
    from diffstride.models import keras as keras_models
    from diffstride.models.torch import small_resnet

    model = small_resnet([1, 1, 3, 2, 3], pooling="diffstride", in_channels=1)
    report = model.stride_report((28, 28))
    assert [row["layer"] for row in report] == ["DiffStride"] * 4
    assert report[0]["input_size"] == [28, 28]
    for before, after in itertools.pairwise(report):
        assert after["input_size"] == before["output_size"]
    assert [row["strides"] for row in report[1:]] == [[3.0, 3.0], [2.0, 2.0], [3.0, 3.0]]
    keras_model = keras_models.small_resnet([1, 1, 3, 2, 3], input_shape=(28, 28, 1))
    assert keras_models.report(keras_model, (28, 28)) == report


def test_resnet18_builds_in_both_frameworks() -> None:
    import torch

    from diffstride.models import keras as keras_models
    from diffstride.models.torch import resnet18

    model = resnet18(pooling="diffstride", in_channels=3, num_classes=10)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert len(model.diffstride_layers()) == 4
    keras_model = keras_models.resnet18(input_shape=(16, 16, 3), pooling="spectral")
    assert keras_model(np.zeros((2, 16, 16, 3), "float32")).shape == (2, 10)
    assert keras_models.macs(keras_model) == resnet18(pooling="spectral").macs((16, 16))
