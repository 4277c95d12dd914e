"""The inside ramp (issue: a compute-matched crop): sizes, projection, layers, errors.

The numerics of both ramps against the numpy reference and finite differences are in the
conformance suite (every check runs for both ramps); this file holds what is specific to the
option: the output size it promises, that it never projects, and that every entry point takes
it and rejects a bad value.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import diffstride


@pytest.mark.parametrize("size", [4, 7, 16, 28, 31, 32, 64])
def test_inside_output_is_within_a_pixel_of_the_strided_size(size: int) -> None:
    for stride in np.linspace(1.0, size / 2, 23):
        strided = math.ceil(size / stride)
        for axis in range(2):
            got = diffstride.output_size((size, size), (float(stride),) * 2, ramp="inside")[axis]
            assert abs(got - strided) <= 1, (size, stride, got, strided)


def test_outside_stays_the_default_and_keeps_2r_more() -> None:
    assert diffstride.output_size((32, 32), (2.0, 2.0)) == (24, 24)
    assert diffstride.output_size((32, 32), (2.0, 2.0), ramp="outside") == (24, 24)
    assert diffstride.output_size((32, 32), (2.0, 2.0), ramp="inside") == (16, 16)


def test_r_zero_is_the_same_hard_crop_for_both_ramps() -> None:
    x = np.random.default_rng(0).standard_normal((1, 2, 20, 18)).astype(np.float32)
    outside = diffstride.diffstride(x, (2.3, 1.7), smoothness_factor=0.0)
    inside = diffstride.diffstride(x, (2.3, 1.7), smoothness_factor=0.0, ramp="inside")
    np.testing.assert_array_equal(outside, inside)


def test_inside_uses_any_stride_as_it_is() -> None:
    """No minimum stride: S = 1 keeps the whole spectrum, and the layers store S unchanged."""
    import torch

    from diffstride.torch import DiffStride

    x = np.random.default_rng(1).standard_normal((1, 1, 12, 12))
    np.testing.assert_allclose(
        diffstride.diffstride(x, (1.0, 1.0), smoothness_factor=0.0, ramp="inside"), x, atol=1e-12
    )
    for ramp, expected in (("inside", 1.0), ("outside", 12 / 8)):
        layer = DiffStride((1.0, 1.0), ramp=ramp).train()
        layer(torch.randn(2, 3, 12, 12))
        assert layer.current_strides() == pytest.approx((expected, expected)), ramp


def test_inside_stride_learns_through_the_ramp() -> None:
    import torch

    from diffstride.torch import DiffStride

    layer = DiffStride((2.3, 1.7), ramp="inside", smoothness_factor=2.0)
    layer(torch.randn(2, 3, 20, 20)).square().sum().backward()
    assert torch.all(layer.strides.grad != 0)


def test_every_layer_takes_and_serialises_the_ramp(tmp_path: object) -> None:
    import keras
    import torch

    from diffstride.jax import DiffStride as JaxDiffStride
    from diffstride.numpy import DiffStride as NumpyDiffStride
    from diffstride.tf import DiffStride as KerasDiffStride
    from diffstride.torch import DiffStride as TorchDiffStride

    assert "ramp='inside'" in repr(TorchDiffStride(ramp="inside"))
    assert TorchDiffStride(ramp="inside")(torch.randn(1, 2, 32, 32)).shape[-2:] == (16, 16)
    assert NumpyDiffStride(ramp="inside")(np.ones((1, 2, 32, 32), np.float32)).shape == (
        1,
        2,
        16,
        16,
    )
    jax_layer = JaxDiffStride(ramp="inside")
    assert jax_layer.apply(jax_layer.init(), np.ones((1, 2, 32, 32), np.float32)).shape == (
        1,
        2,
        16,
        16,
    )
    model = keras.Sequential(
        [keras.Input((32, 32, 2)), KerasDiffStride(ramp="inside", data_format="channels_last")]
    )
    assert model.layers[0].get_config()["ramp"] == "inside"
    assert model.output_shape == (None, 16, 16, 2)
    path = f"{tmp_path}/inside.keras"
    model.save(path)
    assert keras.models.load_model(path).layers[0].ramp == "inside"


BAD_RAMP = "middle"


def test_a_bad_ramp_is_rejected_everywhere() -> None:
    import torch

    from diffstride.models.torch import small_resnet
    from diffstride.numpy import diffstride_vjp
    from diffstride.tf import DiffStride as KerasDiffStride
    from diffstride.torch import DiffStride

    x = np.ones((1, 1, 8, 8), np.float32)
    calls = [
        lambda: diffstride.diffstride(x, 2.0, ramp=BAD_RAMP),
        lambda: diffstride.output_size((8, 8), 2.0, ramp=BAD_RAMP),
        lambda: diffstride_vjp(x, (2.0, 2.0), np.ones((1, 1, 6, 6)), ramp=BAD_RAMP),
        lambda: DiffStride(ramp=BAD_RAMP),
        lambda: KerasDiffStride(ramp=BAD_RAMP),
        lambda: small_resnet(pooling="spectral", ramp=BAD_RAMP),
        lambda: diffstride.torch.diffstride(torch.ones(1, 1, 8, 8), 2.0, ramp=BAD_RAMP),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="ramp='middle'"):
            call()


def test_output_size_clips_strides_an_optimizer_step_left_below_one() -> None:
    """Between an optimizer step and the next call (which clips), a stored stride may sit
    under 1; the layer reports the size its next call will have."""
    import torch

    from diffstride.torch import DiffStride

    layer = DiffStride((1.0, 1.0), ramp="inside")
    with torch.no_grad():
        layer.strides.copy_(torch.tensor([0.99, 0.98]))
    assert layer.output_size((32, 32)) == (32, 32)
    assert tuple(layer.eval()(torch.randn(1, 1, 32, 32)).shape[-2:]) == (32, 32)
