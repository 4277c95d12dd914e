"""Mixed precision as each framework's users run it: torch ``autocast``, Keras
``mixed_float16``/``mixed_bfloat16`` (with and without XLA), jax half-precision arrays.

The layer runs its transforms in float32 and returns the input's dtype; the strides stay
float32 with finite gradients. (The conformance suite's ``check_half_precision`` holds the
functions' half-precision results to the float32 ones.)
"""

from __future__ import annotations

import numpy as np
import pytest

import diffstride


@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_torch_autocast_training_step(method: str) -> None:
    torch = pytest.importorskip("torch")
    from diffstride.torch import DiffStride

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    layer = DiffStride((2.0, 1.5), method=method)
    head = torch.nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = conv(x)
        assert hidden.dtype == torch.bfloat16
        y = layer(hidden)
        loss = head(y).float().square().mean()
    assert y.dtype == torch.bfloat16
    assert tuple(y.shape[2:]) == layer.output_size((32, 32))
    loss.backward()
    assert layer.strides.dtype == torch.float32
    assert torch.isfinite(layer.strides.grad).all()
    assert layer.strides.grad.abs().sum() > 0
    reference = DiffStride((2.0, 1.5), method=method)(hidden.detach().float())
    error = (y.float() - reference).abs().max() / reference.abs().max()
    assert error < 2e-2


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("jit_compile", [False, True])
def test_keras_mixed_precision_fit_and_predict(policy: str, jit_compile: bool) -> None:
    keras = pytest.importorskip("keras")
    from diffstride.tf import DiffStride

    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((16, 16, 3)),
                keras.layers.Conv2D(4, 3, padding="same"),
                DiffStride((2.0, 2.0)),
                keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(2, dtype="float32"),
            ]
        )
        model.compile(
            "adam",
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        x = np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32")
        labels = np.arange(8) % 2
        history = model.fit(x, labels, epochs=1, batch_size=4, verbose=0)
        layer = model.layers[1]
        assert layer.strides.dtype == "float32"
        assert np.isfinite(history.history["loss"][0])
        assert layer.current_strides() != (2.0, 2.0), "the strides did not train"
        assert np.isfinite(model.predict(x, verbose=0)).all()
        hidden = model.layers[0](x)
        assert layer(hidden).dtype == hidden.dtype == policy.removeprefix("mixed_")
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_jax_half_precision_eager_and_jit(dtype: str) -> None:
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from diffstride.jax import diffstride as ds

    x32 = np.random.default_rng(1).standard_normal((2, 3, 20, 18)).astype(np.float32)
    x = jnp.asarray(x32).astype(dtype)
    strides = jnp.asarray([2.0, 1.5], dtype=jnp.float32)
    y = ds(x, strides)
    assert y.dtype == x.dtype
    size = diffstride.output_size((20, 18), (2.0, 1.5))

    def loss(s: jax.Array) -> jax.Array:
        return jnp.sum(ds(x, s, output_size=size).astype(jnp.float32) ** 2)

    grad = jax.jit(jax.grad(loss))(strides)
    assert grad.dtype == jnp.float32
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_allclose(grad, jax.grad(loss)(strides), rtol=1e-5)
