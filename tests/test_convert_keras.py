"""``diffstride.keras.convert`` on real networks, and the MACs counted from their shapes.

Each model is converted at a small input: ResNet50, MobileNetV3Small and EfficientNetB0 from
``keras.applications`` (no weights), an M5-style waveform CNN, a tiny ResNet with a projection
shortcut and a Sequential model. The MACs are checked against counts made apart from
``macs``: by hand for the small models, and from the real shapes of a forward pass and the
kernels' shapes for the others. TensorFlow runs in-process; jax runs in a subprocess.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from diffstride.keras import (  # noqa: E402
    DiffStride1D,
    DiffStride2D,
    convert,
    diffstride_layers,
    macs,
    macs_estimate,
    macs_penalty,
    macs_reference,
)

L = keras.layers
CONVOLUTIONS = (L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D, L.DepthwiseConv2D)
STRIDED = (*CONVOLUTIONS, L.SeparableConv1D, L.SeparableConv2D)
POOLS = (L.MaxPooling1D, L.MaxPooling2D, L.AveragePooling1D, L.AveragePooling2D)


def _images(shape: tuple[int, ...], n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *shape)).astype("float32")


def _forward_macs(model: keras.Model, x: np.ndarray) -> int:
    """MACs per example from the shapes of a real forward pass and the kernels' shapes: each
    output element of a layer costs its kernel's size over the output channels."""
    counted = [
        layer for layer in model.layers if isinstance(layer, (*STRIDED, L.Dense)) and layer.weights
    ]
    probe = keras.Model(model.inputs, [layer.output for layer in counted])
    outputs = probe([x])
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    total = 0
    for layer, y in zip(counted, outputs, strict=True):
        elements = math.prod(y.shape[1:])
        if isinstance(layer, L.Dense):
            total += elements * layer.kernel.shape[0]
        elif isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
            total += elements * math.prod(layer.kernel.shape[:-2])
        elif isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
            depthwise, pointwise = layer.depthwise_kernel.shape, layer.pointwise_kernel.shape
            total += elements // pointwise[-1] * math.prod(depthwise) + elements * pointwise[-2]
        else:
            total += elements * math.prod(layer.kernel.shape[:-1])
    return total


def _check_conversion(original: keras.Model, converted: keras.Model, snapshot: list) -> None:
    """The original is unchanged; the copy has no strided layer and the original's kernels."""
    assert diffstride_layers(original) == []
    assert len(original.get_weights()) == len(snapshot)
    for before, now in zip(snapshot, original.get_weights(), strict=True):
        np.testing.assert_array_equal(before, now)
    assert all(
        not isinstance(layer, (*STRIDED, *POOLS)) or max(layer.strides) == 1
        for layer in converted.layers
    )
    assert any(max(getattr(layer, "strides", (1,))) > 1 for layer in original.layers)
    for layer in original.layers:
        if isinstance(layer, STRIDED):
            copy = converted.get_layer(layer.name)
            assert copy is not layer
            for a, b in zip(layer.get_weights(), copy.get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)


def _train_step(model: keras.Model, x: np.ndarray, labels: np.ndarray) -> None:
    """One eager gradient step on the weights and strides (no graph to trace: fast)."""
    import tensorflow as tf

    optimizer = keras.optimizers.SGD(0.01)
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(labels, model(x, training=True))
        loss = keras.ops.mean(loss)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    strides = [
        v for v, g in zip(model.trainable_variables, grads, strict=True) if "strides" in v.path
    ]
    assert strides
    assert np.isfinite(float(loss))


def _check_macs(converted: keras.Model, x: np.ndarray) -> None:
    """``macs`` equals the forward count, now and after a stride moves; the estimate equals
    it, and its gradient equals central differences of the relaxation."""
    import tensorflow as tf

    assert macs(converted) == _forward_macs(converted, x[:1])
    layers = diffstride_layers(converted)
    count = macs(converted)
    assert abs(float(macs_estimate(converted)) / count - 1) < 1e-2
    reference = macs_reference(converted)
    variables = [layer.strides for layer in layers]
    with tf.GradientTape() as tape:
        estimate = macs_estimate(converted, reference=reference)
    # None: no counted layer follows that stride (a pooling right before global pooling).
    grads = [
        np.zeros(v.shape) if g is None else g.numpy()
        for v, g in zip(variables, tape.gradient(estimate, variables), strict=True)
    ]
    assert all((g <= 0).all() for g in grads)
    assert any((g < 0).any() for g in grads)
    step = 1e-2
    for variable, grad in zip(variables, grads, strict=True):
        value = variable.numpy().copy()
        for axis in range(value.shape[0]):
            moved = []
            for sign in (1.0, -1.0):
                shifted = value.copy()
                shifted[axis] += sign * step
                variable.assign(shifted)
                moved.append(float(macs_estimate(converted, reference=reference)))
            variable.assign(value)
            numeric = (moved[0] - moved[1]) / (2 * step)
            np.testing.assert_allclose(grad[axis], numeric, rtol=2e-3, atol=1e-3 * count)
    # The count follows a changed stride without a forward pass, as the next forward does.
    _shrink(layers[0])
    assert macs(converted) == _forward_macs(converted, x[:1]) < count


def _shrink(layer: DiffStride1D | DiffStride2D) -> None:
    """Raise a layer's strides just enough to shrink its output by one step of its sizes."""
    sizes = layer._inbound_nodes[0].input_tensors[0].shape[1:-1]
    before, value = layer.output_size(sizes), layer.strides.numpy()
    for raise_by in np.arange(0.1, 4.0, 0.1):
        layer.strides.assign(value + raise_by)
        if layer.output_size(sizes) != before:
            return
    raise AssertionError(f"no stride up to {value + 4.0} shrinks {layer.name}")


def _check_budget(converted: keras.Model, x: np.ndarray, steps: int = 3, lr: float = 2.0) -> None:
    """A few SGD steps of the MACs penalty alone shrink the count; the model still runs."""
    import tensorflow as tf

    before = macs(converted)
    variables = [layer.strides for layer in diffstride_layers(converted)]
    optimizer = keras.optimizers.SGD(lr)
    penalties = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            penalty = macs_penalty(converted, budget=before / 2)
        grads = tape.gradient(penalty, variables)
        optimizer.apply(
            [
                keras.ops.zeros_like(v) if g is None else g
                for v, g in zip(variables, grads, strict=True)
            ],
            variables,
        )
        penalties.append(float(penalty))
    assert penalties[0] == pytest.approx(1.0, rel=1e-3)  # the estimate: twice the budget
    assert macs(converted) < before
    assert np.isfinite(keras.ops.convert_to_numpy(converted(x[:2]))).all()


# -- the small models, counted by hand ------------------------------------------------------


def _tiny_resnet() -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    y = L.Conv2D(16, 3, strides=2, padding="same", name="main_1")(x)
    y = L.Conv2D(16, 3, padding="same", name="main_2")(L.ReLU()(y))
    shortcut = L.Conv2D(16, 1, strides=2, name="shortcut")(x)
    x = L.ReLU()(L.Add()([y, shortcut]))
    outputs = L.Dense(10)(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name="tiny_resnet")


# Stem, main path, 1x1 projection and Dense at 8x8 after the block: the inside ramp halves 16.
TINY_RESNET_MACS = 16 * 16 * 8 * 9 * 3 + 8 * 8 * 16 * 9 * (8 + 16) + 8 * 8 * 16 * 8 + 16 * 10
# The paper's order: the first convolutions of both paths at 16x16, pooled after.
TINY_RESNET_AFTER_MACS = (
    16 * 16 * 8 * 9 * 3 + 16 * 16 * 16 * 9 * 8 + 8 * 8 * 16 * 9 * 16 + 16 * 16 * 16 * 8 + 16 * 10
)


@pytest.mark.parametrize("pool_first", [True, False])
def test_tiny_resnet_shares_one_stride_per_block(pool_first: bool) -> None:
    model = _tiny_resnet()
    snapshot = model.get_weights()
    converted = convert(model, pool_first=pool_first)
    _check_conversion(model, converted, snapshot)
    assert macs(model) == TINY_RESNET_MACS
    assert macs(converted) == (TINY_RESNET_MACS if pool_first else TINY_RESNET_AFTER_MACS)
    (shared,) = [layer for layer in diffstride_layers(converted) if "main_1" in layer.name]
    assert len(diffstride_layers(converted)) == 1
    # pool_first: one call on the block's input, read by both paths; else one per path.
    assert len(shared._inbound_nodes) == (1 if pool_first else 2)
    x = _images((16, 16, 3), 8)
    converted.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(True))
    converted.fit(x, np.arange(8) % 10, epochs=1, batch_size=4, verbose=0)
    assert shared.current_strides() != (2.0, 2.0)
    assert converted.predict(x, verbose=0).shape == model.predict(x, verbose=0).shape
    _check_macs(converted, x)
    _check_budget(converted, x, lr=10.0)


def test_sequential_model() -> None:
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            L.Conv2D(8, 3, strides=2, padding="same"),
            L.MaxPooling2D(2),
            L.Conv2D(8, 3, padding="same"),
            L.GlobalAveragePooling2D(),
            L.Dense(4),
        ]
    )
    snapshot = model.get_weights()
    assert macs(model) == 8 * 8 * 8 * 27 + 4 * 4 * 8 * 72 + 8 * 4
    converted = convert(model)
    _check_conversion(model, converted, snapshot)
    assert isinstance(converted, keras.Sequential)
    kinds = [type(layer).__name__ for layer in converted.layers]
    assert kinds[:5] == ["DiffStride2D", "Conv2D", "DiffStride2D", "MaxPooling2D", "Conv2D"]
    assert kinds[5:] == ["GlobalAveragePooling2D", "Dense"]
    # 16 -> 8 -> 4, then the 2x2 max pooling at stride 1 (valid) leaves 3x3.
    assert macs(converted) == 8 * 8 * 8 * 27 + 3 * 3 * 8 * 72 + 8 * 4
    after = [type(layer).__name__ for layer in convert(model, pool_first=False).layers]
    assert after[:4] == ["Conv2D", "DiffStride2D", "MaxPooling2D", "DiffStride2D"]
    x = _images((16, 16, 3), 8)
    converted.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    converted.fit(x, np.arange(8) % 4, epochs=1, batch_size=4, verbose=0)
    assert converted.predict(x, verbose=0).shape == (8, 4)
    _check_macs(converted, x)
    _check_budget(converted, x)


def test_spectral_pooling_takes_the_same_places_and_strides() -> None:
    model = _tiny_resnet()
    snapshot = model.get_weights()
    learned, fixed = convert(model), convert(model, pooling="spectral")
    _check_conversion(model, fixed, snapshot)
    assert not diffstride_layers(fixed)
    kinds = [type(layer).__name__ for layer in fixed.layers]
    assert kinds.count("FixedSpectralPooling2D") == len(diffstride_layers(learned)) == 1
    assert macs(fixed) == macs(learned) == TINY_RESNET_MACS
    x = _images((16, 16, 3), 4)
    assert fixed.predict(x, verbose=0).shape == learned.predict(x, verbose=0).shape


def _m5(length: int = 8000) -> keras.Model:
    """M5 (Dai et al. 2017): a wide strided first convolution, then pooling by 4."""
    inputs = keras.Input((length, 1))
    x = inputs
    for filters, kernel, stride in [(32, 80, 4), (32, 3, 1), (64, 3, 1), (64, 3, 1)]:
        x = L.Conv1D(filters, kernel, strides=stride)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.MaxPooling1D(4)(x)
    outputs = L.Dense(10)(L.GlobalAveragePooling1D()(x))
    return keras.Model(inputs, outputs, name="m5")


def test_m5_audio_cnn() -> None:
    model = _m5()
    snapshot = model.get_weights()
    # Lengths 7921 // 4 + 1 = 1981, pooled to 495, then 493 -> 123 -> 121 -> 30 -> 28 -> 7.
    assert macs(model) == 1981 * 32 * 80 + 493 * 32 * 96 + 121 * 64 * 96 + 28 * 64 * 192 + 640
    converted = convert(model)
    _check_conversion(model, converted, snapshot)
    layers = diffstride_layers(converted)
    assert [type(layer) for layer in layers] == [DiffStride1D] * 5
    assert [layer.current_strides() for layer in layers] == [(4.0,)] + [(4.0,)] * 4
    x = _images((8000, 1), 8)
    converted.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(True))
    converted.fit(x, np.arange(8) % 10, epochs=1, batch_size=4, verbose=0)
    assert converted.predict(x, verbose=0).shape == (8, 10)
    _check_macs(converted, x)
    _check_budget(converted, x)


# -- keras.applications ---------------------------------------------------------------------


def _application(name: str, size: int, **kwargs: object) -> keras.Model:
    build = getattr(keras.applications, name)
    return build(weights=None, input_shape=(size, size, 3), classes=10, **kwargs)


def _check_application(model: keras.Model, size: int, points: int, **options: object) -> None:
    snapshot = model.get_weights()
    converted = convert(model, **options)
    _check_conversion(model, converted, snapshot)
    assert len(diffstride_layers(converted)) == points
    x = _images((size, size, 3))
    assert converted(x).shape == model(x).shape == (4, 10)
    _train_step(converted, x, np.arange(4))
    assert macs(model) == _forward_macs(model, x[:1])
    _check_macs(converted, x)
    _check_budget(converted, x, steps=2, lr=0.5)


def test_resnet50() -> None:
    model = _application("ResNet50", 32)
    # Stem convolution and max pooling, then the first block of stages 3, 4, 5: the main path
    # and the projection shortcut share one stride there (pooled once, on the block's input).
    _check_application(model, 32, points=5)
    converted = convert(model, pool_first=False)
    shared = converted.get_layer("conv3_block1_1_conv_diffstride")
    assert len(diffstride_layers(converted)) == 5
    # After both 1x1 convolutions, as asked: one layer pools their 128 and 512 channels.
    assert sorted(node.input_tensors[0].shape[-1] for node in shared._inbound_nodes) == [128, 512]
    _train_step(converted, _images((32, 32, 3)), np.arange(4))


def test_resnet50_macs_at_224_match_the_paper() -> None:
    """He et al. 2016, table 1: ResNet-50 is 3.8e9 multiply-adds at 224x224 (Keras's is that
    network, strided in the first 1x1 convolution; torchvision's v1.5 is 4.1e9)."""
    model = keras.applications.ResNet50(weights=None)
    assert abs(macs(model) / 3.8e9 - 1) < 0.02


def test_mobilenet_v3_small() -> None:
    # Its strided depthwise layers are 'valid' after a ZeroPadding, 5x5 in the last stages: at
    # stride 1 they trim 4 pixels, so at 32x32 and 64x64 one meets a map smaller than its
    # kernel, and at 96x96 and 128x128 once the strides grow. 192x192 leaves room.
    model = _application("MobileNetV3Small", 192, include_preprocessing=False)
    _check_application(model, 192, points=5)


def test_efficientnet_b0() -> None:
    model = _application("EfficientNetB0", 96)
    _check_application(model, 96, points=5, pool_first=False)


# -- errors and serialization ---------------------------------------------------------------


def test_flatten_then_dense_is_refused_by_name() -> None:
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            L.Conv2D(4, 3, strides=2, name="strided"),
            L.Flatten(name="flat"),
            L.Dense(2, name="classifier"),
        ]
    )
    with pytest.raises(ValueError, match=r"Dense 'classifier'.*Flatten 'flat'.*exclude="):
        convert(model)
    assert diffstride_layers(convert(model, exclude="strided")) == []
    assert diffstride_layers(convert(model, exclude=L.Conv2D)) == []


def test_bad_arguments() -> None:
    model = _tiny_resnet()
    with pytest.raises(ValueError, match="ramp='sideways'"):
        convert(model, ramp="sideways")
    with pytest.raises(TypeError, match="pool_first='yes'"):
        convert(model, pool_first="yes")
    with pytest.raises(ValueError, match="smoothness_factor=-1"):
        convert(model, smoothness_factor=-1)
    with pytest.raises(TypeError, match="include=3"):
        convert(model, include=3)
    with pytest.raises(ValueError, match="exclude names no layer of the model: 'nope'"):
        convert(model, exclude=["nope"])
    with pytest.raises(TypeError, match="model=str"):
        convert("resnet")
    with pytest.raises(TypeError, match="model=str"):
        macs("resnet")
    with pytest.raises(ValueError, match="budget=0"):
        macs_penalty(convert(model), budget=0)
    with pytest.raises(ValueError, match="pooling='strided'"):
        convert(model, pooling="strided")
    dynamic = keras.Sequential([keras.Input((None, None, 3)), L.Conv2D(4, 3, strides=2)])
    with pytest.raises(ValueError, match=r"static shapes.*Conv2D"):
        macs(dynamic)


def test_include_and_exclude_pick_the_layers() -> None:
    model = _m5()
    pools = convert(model, include=L.MaxPooling1D)
    assert len(diffstride_layers(pools)) == 4
    first = next(layer for layer in pools.layers if isinstance(layer, L.Conv1D))
    assert first.strides == (4,)  # the first convolution keeps its stride
    assert len(diffstride_layers(convert(model, exclude=[L.MaxPooling1D]))) == 1


def test_merges_that_one_stride_cannot_keep_equal() -> None:
    inputs = keras.Input((16, 16, 3))
    chain = L.Conv2D(4, 3, strides=2, padding="same", name="first")(inputs)
    chain = L.Conv2D(4, 3, strides=2, padding="same", name="second")(chain)
    shortcut = L.Conv2D(4, 1, strides=4, name="by_four")(inputs)
    outputs = L.GlobalAveragePooling2D()(L.Add(name="join")([chain, shortcut]))
    joined = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"Add 'join'.*one shared stride"):
        convert(joined)
    # Sizes that agree in the original (2 = ceil(4 / 2) = ceil(4 / 3)), strides that do not.
    inputs = keras.Input((4, 4, 3))
    a = L.Conv2D(4, 1, strides=2, padding="same")(inputs)
    b = L.Conv2D(4, 1, strides=3, padding="same")(inputs)
    model = keras.Model(inputs, L.Concatenate()([a, b]))
    with pytest.raises(ValueError, match=r"equal strides.*\(2, 2\).*\(3, 3\)"):
        convert(model)
    # A learned path facing a fixed one.
    with pytest.raises(ValueError, match="Add 'join'"):
        convert(joined, exclude="by_four")


def test_saved_model_loads_and_predicts_the_same(tmp_path: object) -> None:
    converted = convert(_tiny_resnet())
    converted.get_layer("main_1_diffstride").strides.assign([2.5, 3.0])
    x = _images((16, 16, 3))
    path = os.path.join(str(tmp_path), "converted.keras")
    converted.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), converted.predict(x, verbose=0))
    assert [type(layer) for layer in diffstride_layers(loaded)] == [DiffStride2D]
    assert macs(loaded) == macs(converted)
    rebuilt = keras.Model.from_config(converted.get_config())
    assert len(diffstride_layers(rebuilt)) == 1
    assert rebuilt.get_config() == converted.get_config()


JAX_SCRIPT = textwrap.dedent(
    """
    import diffstride._keras_convert  # the module first: no import cycle
    import numpy as np
    import keras
    from diffstride.keras import convert, diffstride_layers, macs, macs_estimate

    L = keras.layers
    inputs = keras.Input((16, 16, 3))
    x = L.Conv2D(3, 3, strides=2, padding="same")(inputs)
    y = L.Conv2D(3, 3, padding="same")(x)
    x = L.Add()([y, L.MaxPooling2D(2, padding="same")(inputs)])  # the two share one stride
    model = keras.Model(inputs, L.Dense(4)(L.GlobalAveragePooling2D()(x)))
    converted = convert(model)
    assert len(diffstride_layers(converted)) == 1
    converted.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(True))
    data = np.random.default_rng(0).standard_normal((8, 16, 16, 3)).astype("float32")
    converted.fit(data, np.arange(8) % 4, epochs=1, batch_size=8, verbose=0)
    assert converted.predict(data, verbose=0).shape == (8, 4)
    assert abs(float(macs_estimate(converted)) / macs(converted) - 1) < 1e-2
    print("ok")
    """
)


def test_convert_and_fit_on_jax() -> None:
    pytest.importorskip("jax")
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
