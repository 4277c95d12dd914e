"""Keras models with DiffStride work the first time, on every Keras backend: no eager call
before ``predict``/``fit``/``load_model``, unknown image sizes, fixed spectral pooling after a
DiffStride inside a compiled step, a clear error for a flattened output feeding a Dense layer,
and the model helpers on a reloaded model.

Each backend runs in a fresh process (``KERAS_BACKEND`` is read once, when Keras starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os, tempfile
    import numpy as np
    import keras
    from diffstride.keras import DiffStride, FixedSpectralPooling
    from diffstride.models import keras as models

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    def images(n, size):
        return rng.random((n, size, size, 3)).astype("float32")
    def compiled(model):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(keras.optimizers.Adam(0.05), loss)
        return model
    def numpy(y):
        return keras.ops.convert_to_numpy(y)

    # Unknown spatial sizes, fixed spectral pooling after DiffStride: predict and fit at
    # several sizes with no eager call first; predict equals the eager call.
    inputs = keras.Input((None, None, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    layer = DiffStride((2.0, 1.5))
    y = layer(y)
    assert tuple(y.shape) == (None, None, None, 4), y.shape
    y = FixedSpectralPooling((1.5, 1.5))(y)
    model = compiled(keras.Model(inputs, keras.layers.Dense(2)(
        keras.layers.GlobalAveragePooling2D()(y))))
    assert layer.compute_output_shape((None, None, None, 4)) == (None, None, None, 4)
    for size in (16, 21, 24):
        x = images(4, size)
        np.testing.assert_allclose(
            model.predict(x, verbose=0), numpy(model(x)), rtol=1e-4, atol=1e-5)
    for size in (16, 24):
        model.fit(images(4, size), np.arange(4) % 2, epochs=2, batch_size=2, verbose=0)
    assert layer.current_strides() != (2.0, 1.5), layer.current_strides()

    # A Sequential without Input, two DiffStride layers and a fixed one: fit first, or
    # predict first.
    def sequential():
        return compiled(keras.Sequential([
            keras.layers.Conv2D(4, 3, padding="same"), DiffStride((2.0, 2.0)),
            DiffStride((1.5, 1.5), ramp="inside"), FixedSpectralPooling((1.5, 1.5)),
            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2),
        ]))
    x = images(4, 20)
    first = sequential()
    first.fit(x, np.arange(4) % 2, epochs=1, batch_size=2, verbose=0)
    assert first.predict(x, verbose=0).shape == (4, 2)
    second = sequential()
    assert second.predict(x, verbose=0).shape == (4, 2)
    second.fit(x, np.arange(4) % 2, epochs=1, batch_size=2, verbose=0)

    # Trained strides saved, then predict on the loaded model with no eager call: the crop
    # follows the saved strides, not the initial ones.
    inputs = keras.Input((16, 16, 3))
    pool = DiffStride((2.0, 2.0), ramp="inside", name="pool")
    y = pool(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    shape_model = keras.Model(inputs, y)
    shape_model.get_layer("pool").strides.assign([4.0, 4.0])
    x = images(2, 16)
    expected = numpy(shape_model(x))
    assert expected.shape[1:3] != (8, 8), expected.shape
    path = os.path.join(tempfile.mkdtemp(), "model.keras")
    shape_model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)

    # Flatten then Dense after a DiffStride: refused at the first call, with what to do.
    def flattened(trainable):
        inputs = keras.Input((16, 16, 3))
        y = keras.layers.Flatten()(DiffStride((2.0, 2.0), trainable=trainable)(inputs))
        return keras.Model(inputs, keras.layers.Dense(2)(y))
    try:
        flattened(True).predict(images(2, 16), verbose=0)
    except ValueError as error:
        assert "global pooling" in str(error) and "strides" in str(error), error
    else:
        raise AssertionError("a Dense layer on a flattened DiffStride output was accepted")
    assert flattened(False).predict(images(2, 16), verbose=0).shape == (2, 2)

    # The model helpers read a reloaded model as the one saved.
    net = models.small_resnet([1, 2, 2, 2, 2], input_shape=(16, 16, 3), num_classes=3)
    for pool in models.diffstride_layers(net):
        pool.strides.assign([1.5, 2.5])
    path = os.path.join(tempfile.mkdtemp(), "net.keras")
    net.save(path)
    again = keras.models.load_model(path)
    assert models.macs(again) == models.macs(net)
    assert models.report(again, (16, 16)) == models.report(net, (16, 16))
    assert [p.current_strides() for p in models.diffstride_layers(again)] == [(1.5, 2.5)] * 4
    assert again.predict(images(2, 16), verbose=0).shape == (2, 3)
    print("ok")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_keras_models_work_without_a_first_eager_call(backend: str) -> None:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok"), result.stdout[-3000:]
