"""The hand-written VJP of the FFT path and the adapters that register it (``custom_vjp``).

The conformance suite already holds torch's and jax's FFT path (which use it) to the golden
gradients; these tests pin what it does not: the VJP is plain Array API (it runs on
array_api_strict, so a third-party adapter can register it too), each mask gradient is exact,
and torch's higher-order gradients, which go through autograd instead, stay exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from diffstride import _agnostic, _sizes
from diffstride import numpy as reference

RNG = np.random.default_rng(3)


#: Spatial sizes and kept counts per rank: (top, bottom) per height axis, then the columns.
CASES = {
    1: ((10,), (4,)),
    2: ((12, 10), (4, 3, 4)),
    3: ((6, 12, 10), (2, 2, 4, 3, 4)),
}


def _case(data_format: str, masked: bool, rank: int = 2) -> tuple:
    """x, a cotangent, the window, masks (or None) and sizes for a (2, 3, *sizes) input."""
    sizes, counts = CASES[rank]
    x = RNG.standard_normal((2, 3, *sizes))
    window = _sizes.window_for_counts(counts)
    shape = (2, 3, *window.output_size)
    if data_format == "channels_last":
        x, shape = np.moveaxis(x, 1, -1), (2, *window.output_size, 3)
    cotangent = RNG.standard_normal(shape)
    kept = [top + bottom for top, bottom in window.blocks] + [window.cols]
    masks = tuple(RNG.uniform(0.2, 1.0, n) for n in kept) if masked else None
    return x, cotangent, window, masks, sizes


def _axes(data_format: str, rank: int) -> tuple[int, ...]:
    first = 2 if data_format == "channels_first" else 1
    return tuple(range(first, first + rank))


def _run(xp: object, x: np.ndarray, cotangent: np.ndarray, window, masks, sizes, axes):
    def to(a: np.ndarray) -> object:
        return xp.asarray(a)

    masks = None if masks is None else [to(m) for m in masks]
    y, spectrum = _agnostic.masked_crop(to(x), masks, window, sizes=sizes, axes=axes, xp=xp)
    grads = _agnostic.masked_crop_vjp(
        to(cotangent), spectrum, masks, window, sizes=sizes, axes=axes, xp=xp
    )
    return np.asarray(y), [None if g is None else np.asarray(g) for g in grads]


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("masked", [True, False], ids=["masked", "fixed"])
@pytest.mark.parametrize("namespace", ["numpy", "array_api_strict"])
def test_vjp_is_exact_and_portable(
    data_format: str, masked: bool, namespace: str, rank: int
) -> None:
    if namespace == "numpy":
        import array_api_compat.numpy as xp
    else:
        xp = pytest.importorskip("array_api_strict")
    x, cotangent, window, masks, sizes = _case(data_format, masked, rank)
    axes = _axes(data_format, rank)
    _y, (grad_x, *grad_masks) = _run(xp, x, cotangent, window, masks, sizes, axes)

    def loss(x_: np.ndarray, masks_: tuple | None) -> float:
        import array_api_compat.numpy as np_xp

        out = _agnostic.masked_crop(x_, masks_, window, sizes=sizes, axes=axes, xp=np_xp)[0]
        return float(np.sum(out * cotangent))

    # The map is linear in x and in each mask: a unit step gives the exact derivative.
    base = loss(x, masks)
    for flat in (0, x.size // 3, x.size - 1):
        index = np.unravel_index(flat, x.shape)
        step = np.zeros_like(x)
        step[index] = 1.0
        assert grad_x[index] == pytest.approx(loss(x + step, masks) - base, rel=1e-9, abs=1e-9)
    if not masked:
        assert grad_masks == [None] * rank
        return
    for axis, grad in enumerate(grad_masks):
        expected = []
        for i in range(len(masks[axis])):
            bumped = [m.copy() for m in masks]
            bumped[axis][i] += 1.0
            expected.append(loss(x, tuple(bumped)) - base)
        np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("shared", [False, True], ids=["per-axis", "shared"])
@pytest.mark.parametrize("namespace", ["numpy", "array_api_strict"])
def test_fused_vjp_is_the_masks_vjp_and_the_chain_rule(
    data_format: str, shared: bool, namespace: str, rank: int
) -> None:
    """The host plan's VJP (one contraction for the strides) equals the masks' VJP followed
    by the chain rule through the masks' Jacobians, and runs on plain Array API."""
    if namespace == "numpy":
        import array_api_compat.numpy as xp
    else:
        xp = pytest.importorskip("array_api_strict")
    import array_api_compat.numpy as np_xp

    x, cotangent, window, masks, sizes = _case(data_format, True, rank)
    axes = _axes(data_format, rank)
    jacobians = tuple(RNG.standard_normal(m.shape) for m in masks)
    _y, (grad_x, *grad_masks) = _run(np_xp, x, cotangent, window, masks, sizes, axes)
    per_axis = [float(np.sum(g * j)) for g, j in zip(grad_masks, jacobians, strict=True)]
    expected_strides = [sum(per_axis)] if shared else per_axis

    mask, input_scale, weights = (
        xp.asarray(c)
        for c in _agnostic.fused_constants(
            masks, jacobians, window, sizes, axes=axes, ndim=x.ndim, shared=shared, xp=np_xp
        )
    )
    y, spectrum = _agnostic.crop_and_mask(
        xp.asarray(x), mask, window, sizes=sizes, axes=axes, xp=xp
    )
    np.testing.assert_allclose(np.asarray(y), _y, rtol=1e-12, atol=1e-12)
    got_x, got_strides = _agnostic.fused_vjp(
        xp.asarray(cotangent), spectrum, input_scale, weights, window, sizes=sizes, axes=axes, xp=xp
    )
    np.testing.assert_allclose(np.asarray(got_x), grad_x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(got_strides), expected_strides, rtol=1e-10)
    only_x = _agnostic.fused_vjp(
        xp.asarray(cotangent), spectrum, input_scale, None, window, sizes=sizes, axes=axes, xp=xp
    )
    assert only_x[1] is None
    assert (
        _agnostic.fused_vjp(
            xp.asarray(cotangent),
            spectrum,
            input_scale,
            weights,
            window,
            sizes=sizes,
            axes=axes,
            need_x=False,
            xp=xp,
        )[0]
        is None
    )


@pytest.mark.parametrize("method", ["fft", "matmul"])
@pytest.mark.parametrize("options", [{}, {"ramp": "inside"}, {"shared_stride": True}])
def test_torch_host_plan_equals_the_device_path(method: str, options: dict) -> None:
    """An eager torch call (strides readable: the host plan) and the same call where the
    strides cannot be read (vmap over a batch of one stride vector: the device path) give
    the same output and gradients."""
    torch = pytest.importorskip("torch")
    from diffstride.torch import diffstride

    shared = options.pop("shared_stride", False)
    x = torch.randn(2, 3, 20, 18, dtype=torch.float64, requires_grad=True)
    strides = torch.tensor([2.3] if shared else [2.3, 1.7], dtype=torch.float64)
    strides.requires_grad_(True)
    cotangent = torch.randn_like(diffstride(x, strides, method=method, **options))
    size = tuple(cotangent.shape[2:])

    def device_path(a, s):
        one = torch.func.vmap(
            lambda s_: diffstride(a, s_, method=method, output_size=size, **options)
        )
        return one(s[None])[0]

    for call in (lambda a, s: diffstride(a, s, method=method, **options), device_path):
        y = call(x, strides)
        grads = torch.autograd.grad(y, [x, strides], cotangent)
        if call is not device_path:
            expected = (y, *grads)
        else:
            for got, want in zip((y, *grads), expected, strict=True):
                torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_vjp_skips_what_is_not_needed() -> None:
    import array_api_compat.numpy as xp

    x, cotangent, window, masks, sizes = _case("channels_first", True)
    _, spectrum = _agnostic.masked_crop(x, masks, window, sizes=sizes, axes=(2, 3), xp=xp)
    grads = _agnostic.masked_crop_vjp(
        cotangent,
        spectrum,
        masks,
        window,
        sizes=sizes,
        axes=(2, 3),
        needs=(False, True, False),
        xp=xp,
    )
    assert grads[0] is None
    assert grads[2] is None
    assert grads[1].shape == (7,)


@pytest.mark.parametrize(
    ("data_format", "method"),
    [("channels_first", "fft"), ("channels_last", "fft"), ("channels_first", "matmul")],
)
def test_torch_higher_order_gradients(data_format: str, method: str) -> None:
    torch = pytest.importorskip("torch")
    from diffstride.torch import diffstride, spectral_pooling

    x = torch.randn(1, 2, 12, 10, dtype=torch.float64)
    if data_format == "channels_last":
        x = x.permute(0, 2, 3, 1).contiguous()
    x.requires_grad_(True)
    strides = torch.tensor([2.3, 1.7], dtype=torch.float64, requires_grad=True)
    kwargs = {"data_format": data_format, "method": method}
    assert torch.autograd.gradgradcheck(lambda a, s: diffstride(a, s, **kwargs), (x, strides))
    assert torch.autograd.gradgradcheck(lambda a: spectral_pooling(a, (2, 3), **kwargs), (x,))


def test_torch_gradients_of_a_subset_of_inputs() -> None:
    """Only the strides want a gradient (data in the first layer), then only the input."""
    torch = pytest.importorskip("torch")
    from diffstride.torch import diffstride

    x = RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)
    cotangent = RNG.standard_normal((2, 3, 24, 24)).astype(np.float32)
    ref_x, ref_strides = reference.diffstride_vjp(x, (2.0, 2.0), cotangent)
    strides = torch.tensor([2.0, 2.0], requires_grad=True)
    y = diffstride(torch.from_numpy(x), strides)
    (grad,) = torch.autograd.grad(y, strides, torch.from_numpy(cotangent))
    np.testing.assert_allclose(grad.numpy(), ref_strides, rtol=1e-4)
    x_leaf = torch.from_numpy(x).requires_grad_(True)
    y = diffstride(x_leaf, torch.tensor([2.0, 2.0]))
    (grad,) = torch.autograd.grad(y, x_leaf, torch.from_numpy(cotangent))
    np.testing.assert_allclose(grad.numpy(), ref_x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("masked", [True, False], ids=["masked", "fixed"])
def test_gemm_layouts_agree(data_format: str, masked: bool, rank: int) -> None:
    """Both GEMM layouts (the stacked one, which transposes no activation, and the permuted
    one) are the same map as the FFTs for every rank; the conformance suite runs each backend
    on its own."""
    import array_api_compat.numpy as xp

    from diffstride import _matmul

    x, _, window, masks, sizes = _case(data_format, masked, rank)
    axes = _axes(data_format, rank)
    expected = _agnostic.masked_crop(x, masks, window, sizes=sizes, axes=axes, xp=xp)[0]
    for layout in ("permuted", "stacked"):
        got = _matmul.apply_separable(
            x, window, masks, sizes=sizes, axes=axes, layouts=(layout, layout), xp=xp
        )
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"received layouts=\('permuted', 'broadcast'\)"):
        _matmul.apply_separable(
            x, window, masks, sizes=sizes, axes=axes, layouts=("permuted", "broadcast"), xp=xp
        )


def test_torch_packed_copy_keeps_each_array() -> None:
    """The plan's arrays copied to an accelerator in one: each a view of the copy, at an
    aligned offset, with its dtype, shape and values."""
    torch = pytest.importorskip("torch")
    from diffstride_backends.torch import _ALIGNMENT_BYTES, TorchBackend, _packed_copy, _plain

    arrays = [
        (RNG.normal(size=(3, 5)) + 1j * RNG.normal(size=(3, 5))).astype(np.complex64),
        RNG.normal(size=(2, 3, 7)).astype(np.float32),
        np.asarray(1.5, dtype=np.float64),
        RNG.normal(size=(4, 1)).astype(np.complex128),
        np.zeros((0, 3), dtype=np.float32),
        RNG.normal(size=(3, 4)).astype(np.float32).T,  # not C order
        np.arange(5.0)[::-1][:1],  # "contiguous" with a negative stride
        np.arange(6, dtype=">f4").reshape(2, 3),  # big-endian
    ]
    for device in ("cpu", "meta"):  # the meta device stands in for an accelerator
        uploaded = TorchBackend().upload(arrays, torch.device(device))
        assert [tuple(t.shape) for t in uploaded] == [a.shape for a in arrays]
    for array, tensor in zip(arrays, TorchBackend().upload(arrays, None), strict=True):
        np.testing.assert_array_equal(tensor.numpy(), array)
    empty = [np.zeros((0, 3), dtype=np.float32)]
    assert [t.shape for t in TorchBackend().upload(empty, torch.device("meta"))] == [(0, 3)]
    copied = _packed_copy(torch, [_plain(a) for a in arrays], torch.device("cpu"))
    base = copied[0].untyped_storage().data_ptr()
    for array, tensor in zip(arrays, copied, strict=True):
        assert tensor.untyped_storage().data_ptr() == base  # one buffer
        if array.size:  # an empty tensor's data_ptr is 0
            assert (tensor.data_ptr() - base) % _ALIGNMENT_BYTES == 0
        assert tensor.is_contiguous()
        assert tensor.dtype == getattr(torch, array.dtype.newbyteorder("=").name)
        np.testing.assert_array_equal(tensor.numpy(), array)


def test_default_upload_keeps_each_shape() -> None:
    """``Backend.upload``'s default makes one array each, 0-d ones included."""
    import diffstride

    arrays = [np.asarray(1.5), np.arange(6.0).reshape(2, 3).T]
    uploaded = diffstride.get_backend("numpy").upload(arrays, None)
    for array, result in zip(arrays, uploaded, strict=True):
        np.testing.assert_array_equal(result, array)
        assert result.shape == array.shape
