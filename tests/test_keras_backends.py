"""``diffstride.keras`` on every Keras backend: jax and torch (TensorFlow is the default that
the other tests run in-process).

Each backend runs in a subprocess (``KERAS_BACKEND`` is read once, when Keras starts): the
layer equals the numpy reference, ``fit`` with each backend's default compilation trains the
strides, :class:`~diffstride.keras.UpdateCrops` refreshes jax's fixed crops (and the next
call retraces), ``.keras`` files round-trip, and the ResNets of ``diffstride.models.keras``
build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

SCRIPT = textwrap.dedent(
    """
    import os, tempfile
    import numpy as np
    import keras
    from diffstride import numpy as reference
    from diffstride.keras import (
        DiffStride, DiffStride1D, FixedSpectralPooling, UpdateCrops, complexity_penalty,
        update_crops,
    )
    from diffstride.models import keras as models

    backend = keras.backend.backend()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((24, 24, 3)),
        keras.layers.Conv2D(4, 3, padding="same"),
        DiffStride((2.0, 1.5), ramp="inside"),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        FixedSpectralPooling((1.5, 1.5)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    layer = model.layers[1]
    x = np.random.default_rng(0).random((16, 24, 24, 3)).astype("float32")
    labels = np.arange(16) % 2
    hidden = keras.ops.convert_to_numpy(model.layers[0](x))
    expected = reference.diffstride(hidden, (2.0, 1.5), ramp="inside", data_format="channels_last")
    got = keras.ops.convert_to_numpy(layer(hidden))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert layer.compute_output_shape((None, 24, 24, 4)) == (None, 12, 16, 4)
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(True))
    callback = UpdateCrops()
    model.fit(x, labels, epochs=3, batch_size=8, verbose=0, callbacks=[callback])
    assert layer.current_strides() != (2.0, 1.5), layer.current_strides()
    after = keras.ops.convert_to_numpy(layer(hidden)).shape[1:3]
    assert layer.output_size((24, 24)) == tuple(after), after
    if backend == "jax":
        # the crop is fixed per trace: set the strides across a crop boundary, refresh it
        layer.strides.assign([3.0, 3.0])
        assert update_crops(model)
        assert model.predict(x, verbose=0).shape == (16, 2)
        assert keras.ops.convert_to_numpy(layer(hidden)).shape[1:3] == (8, 8)
    path = os.path.join(tempfile.mkdtemp(), "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5
    )
    assert float(keras.ops.convert_to_numpy(complexity_penalty(model))) > 0
    assert tuple(DiffStride1D(2.5)(np.zeros((2, 40, 3), "float32")).shape) == (2, 24, 3)
    net = models.small_resnet([1, 1, 2, 2, 2], input_shape=(28, 28, 1))
    assert tuple(net(np.zeros((2, 28, 28, 1), "float32")).shape) == (2, 10)
    print("ok")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras_layers_on_every_backend(backend: str) -> None:
    pytest.importorskip(backend)
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_update_crops_does_nothing_where_the_crop_follows_the_strides() -> None:
    keras = pytest.importorskip("keras")
    from diffstride.keras import DiffStride, UpdateCrops, update_crops

    layer = DiffStride((2.0, 2.0), data_format="channels_last")
    model = keras.Sequential([keras.Input((16, 16, 2)), layer])
    layer.strides.assign([3.0, 3.0])
    assert not update_crops(model)
    x = np.zeros((1, 16, 16, 2), "float32")
    assert tuple(model(x).shape[1:3]) == layer.output_size((16, 16)) == (14, 14)
    with pytest.raises(ValueError, match="every="):
        UpdateCrops(every=0)
