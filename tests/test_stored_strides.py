"""A layer's stored strides are checked where their values can be read.

A diverged step that leaves NaN in a layer's strides, or a loaded stride below 1, must not
run on into a finite output of the wrong size: it raises a ValueError that names the layer's
strides and their values (torch and Keras eager, jax and numpy when concrete). torch has no
constraints, so an optimizer step may leave a stride below its bound until the layer clips it:
there, a value below 1 is an error when it is loaded, not when the layer is called.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

BAD = [float("nan"), float("inf")]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("training", [True, False])
def test_torch_layer_rejects_non_finite_strides(bad: float, training: bool) -> None:
    torch = pytest.importorskip("torch")
    from diffstride.torch import DiffStride, DiffStride1d

    for layer, x in (
        (DiffStride((2.0, 2.0)), torch.randn(1, 2, 32, 32)),
        (DiffStride1d(2.0), torch.randn(1, 2, 40)),
    ):
        layer.train(training)
        with torch.no_grad():
            layer.strides[0] = bad
        name = type(layer).__name__
        with pytest.raises(ValueError, match=rf"{name}\.strides=\((nan|inf)"):
            layer(x)


def test_torch_load_checks_the_strides() -> None:
    torch = pytest.importorskip("torch")
    from diffstride.torch import DiffStride

    model = torch.nn.Sequential(torch.nn.Identity(), DiffStride((2.0, 2.0)))
    state = model.state_dict()
    for bad in ([0.5, 2.0], [float("nan"), 2.0]):
        state["1.strides"] = torch.tensor(bad)
        with pytest.raises(ValueError, match=r"1\.strides must be finite and >= 1"):
            model.load_state_dict(state)
    state["1.strides"] = torch.tensor([2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match=r"1\.strides must have shape \(2,\)"):
        model.load_state_dict(state)
    # an optimizer step below the bound is clipped, not an error
    layer = model[1]
    with torch.no_grad():
        layer.strides[0] = 0.99
    assert layer(torch.randn(1, 1, 32, 32)).shape[2:] == layer.output_size((32, 32))


@pytest.mark.parametrize("bad", [*BAD, 0.5])
def test_keras_layer_rejects_bad_stored_strides_eagerly(bad: float) -> None:
    pytest.importorskip("keras")
    from diffstride.tf import DiffStride

    layer = DiffStride((2.0, 2.0), data_format="channels_last")
    x = np.zeros((1, 32, 32, 2), "float32")
    layer(x)
    layer.strides.assign([bad, 2.0])
    with pytest.raises(ValueError, match=r"DiffStride2D\.strides"):
        layer(x)


def test_keras_load_model_checks_the_strides(tmp_path: Path) -> None:
    """A .keras file whose strides are not finite is refused when it loads, naming them."""
    keras = pytest.importorskip("keras")
    from diffstride.tf import DiffStride

    model = keras.Sequential([keras.Input((16, 16, 2)), DiffStride((2.0, 2.0))])
    model.layers[0].strides.assign([float("nan"), 2.0])
    model.save(tmp_path / "bad.keras")
    with pytest.raises(ValueError, match=r"DiffStride2D\.strides must be finite"):
        keras.models.load_model(tmp_path / "bad.keras")


@pytest.mark.parametrize("bad", [*BAD, 0.5])
def test_jax_and_numpy_layers_reject_bad_concrete_strides(bad: float) -> None:
    pytest.importorskip("jax")
    import jax.numpy as jnp

    from diffstride.jax import DiffStride as JaxDiffStride
    from diffstride.numpy import DiffStride as NumpyDiffStride

    x = np.zeros((1, 2, 32, 32), np.float32)
    layer = JaxDiffStride((2.0, 2.0))
    with pytest.raises(ValueError, match=r"DiffStride\.strides"):
        layer.apply({"strides": jnp.asarray([bad, 2.0], dtype=jnp.float32)}, x)
    reference = NumpyDiffStride((2.0, 2.0))
    reference.strides = np.asarray([bad, 2.0], np.float32)
    with pytest.raises(ValueError, match=r"DiffStride\.strides"):
        reference(x)
