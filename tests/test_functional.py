"""The functional API in each framework: dispatch, jit, graph mode, sizes and errors."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import pytest

import diffstride
from diffstride import numpy as reference

X = np.random.default_rng(0).standard_normal((2, 3, 20, 18)).astype(np.float32)
EXPECTED = reference.diffstride(X, (2.0, 1.5))


def test_dispatch_on_every_library() -> None:
    import array_api_strict
    import jax.numpy as jnp
    import tensorflow as tf
    import torch

    for make in (torch.from_numpy, tf.constant, jnp.asarray, array_api_strict.asarray):
        y = diffstride.diffstride(make(X), (2.0, 1.5))
        assert type(y).__module__.split(".")[0] == type(make(X)).__module__.split(".")[0]
        np.testing.assert_allclose(
            np.from_dlpack(y)
            if hasattr(y, "__dlpack__") and not isinstance(y, tf.Tensor)
            else np.asarray(y),
            EXPECTED,
            rtol=1e-4,
            atol=1e-5,
        )


def test_jax_jit_needs_output_size() -> None:
    import jax
    import jax.numpy as jnp

    from diffstride.jax import diffstride as ds

    with pytest.raises(ValueError, match="pass a static output_size"):
        jax.jit(ds)(jnp.asarray(X), jnp.asarray([2.0, 1.5]))
    size = diffstride.output_size((20, 18), (2.0, 1.5))
    jitted = jax.jit(functools.partial(ds, output_size=size))
    np.testing.assert_allclose(
        jitted(jnp.asarray(X), jnp.asarray([2.0, 1.5])), EXPECTED, rtol=1e-4, atol=1e-5
    )
    grad = jax.jit(jax.grad(lambda s: jnp.sum(ds(jnp.asarray(X), s, output_size=size) ** 2)))
    eager = jax.grad(lambda s: jnp.sum(ds(jnp.asarray(X), s) ** 2))
    np.testing.assert_allclose(
        grad(jnp.asarray([2.0, 1.5])), eager(jnp.asarray([2.0, 1.5])), rtol=1e-4
    )


def test_jax_forward_mode() -> None:
    """``jax.jvp``/``jacfwd`` work (a ``custom_vjp`` would refuse them) and agree with reverse
    mode."""
    import jax
    import jax.numpy as jnp

    from diffstride.jax import diffstride as ds

    size = diffstride.output_size((20, 18), (2.0, 1.5))

    def loss(strides: jax.Array) -> jax.Array:
        return jnp.sum(ds(jnp.asarray(X), strides, output_size=size) ** 2)

    strides = jnp.asarray([2.0, 1.5])
    np.testing.assert_allclose(jax.jacfwd(loss)(strides), jax.grad(loss)(strides), rtol=1e-4)


def test_tf_function_matches_eager() -> None:
    import tensorflow as tf

    from diffstride.tf import diffstride as ds

    strides = tf.Variable([2.0, 1.5])

    @tf.function
    def step(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            y = ds(x, strides, data_format="channels_last")
            loss = tf.reduce_sum(y**2)
        return y, tape.gradient(loss, strides)

    x = tf.constant(np.moveaxis(X, 1, 3))
    y, grad = step(x)
    np.testing.assert_allclose(np.moveaxis(y.numpy(), 3, 1), EXPECTED, rtol=1e-4, atol=1e-5)
    cot = 2 * np.moveaxis(EXPECTED, 1, 3)
    _, ref_grad = reference.diffstride_vjp(
        np.moveaxis(X, 1, 3), np.array([2.0, 1.5], np.float32), cot, data_format="channels_last"
    )
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-3)


def test_torch_float64_end_to_end() -> None:
    import torch

    from diffstride.torch import diffstride as ds

    x = torch.from_numpy(X.astype(np.float64)).requires_grad_()
    s = torch.tensor([2.0, 1.5], dtype=torch.float64, requires_grad=True)
    y = ds(x, s)
    cot = np.random.default_rng(5).standard_normal(tuple(y.shape))  # the sum's is ~0 for S
    y.backward(torch.from_numpy(cot))
    assert y.dtype == x.grad.dtype == s.grad.dtype == torch.float64
    ref_x, ref_s = reference.diffstride_vjp(X.astype(np.float64), np.array([2.0, 1.5]), cot)
    np.testing.assert_allclose(x.grad.numpy(), ref_x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.grad.numpy(), ref_s, rtol=1e-8)


@pytest.mark.parametrize(
    ("size", "strides", "kwargs", "expected"),
    [
        ((32, 32), (2.0, 2.0), {}, (24, 24)),
        ((64, 64), (2.0, 4.0), {}, (40, 24)),
        ((33, 17), (2.0, 3.0), {}, (25, 14)),
        ((16, 16), (2.0, 2.0), {"cropping": False}, (16, 16)),
        ((15, 15), (2.0, 2.0), {"cropping": False}, (15, 14)),
        ((32, 32), 2.0, {"smoothness_factor": 0.0}, (18, 18)),
        ((24, 40), (2.0, 2.0), {"lower_limit_stride": 2.5}, (18, 24)),
    ],
)
def test_output_size(size: tuple, strides: object, kwargs: dict, expected: tuple) -> None:
    assert diffstride.output_size(size, strides, **kwargs) == expected


def test_output_size_override_reproduces_the_crop() -> None:
    for height in range(2, 14):
        for width in range(2, 14):
            for stride in (1.0, 1.6, 2.0, 3.3):
                size = diffstride.output_size((height, width), stride)
                x = np.ones((1, 1, height, width))
                np.testing.assert_array_equal(
                    reference.diffstride(x, (stride,), output_size=size),
                    reference.diffstride(x, (stride,)),
                )


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "fragment"),
    [
        (((32, 32, 32, 32), 2.0), {}, TypeError, "input_size="),
        (((1, 32), 2.0), {}, ValueError, "input_size="),
        (((32, 32), 0.9), {}, ValueError, "strides=0.9"),
        (((32, 32), 2.0), {"dtype": "float16"}, ValueError, "dtype='float16'"),
        (((32, 32), 2.0), {"smoothness_factor": "4"}, TypeError, "smoothness_factor='4'"),
        (((32, 32), 2.0), {"upper_limit_stride": 0.5}, ValueError, "upper_limit_stride=0.5"),
    ],
)
def test_output_size_errors(args: tuple, kwargs: dict, error: type, fragment: str) -> None:
    with pytest.raises(error, match=fragment.replace("(", r"\(")):
        diffstride.output_size(*args, **kwargs)


def test_spectral_window_floors_a_float32_quotient() -> None:
    """The plain-Python float32 rounding of the fixed-pooling window is numpy's, ties too."""
    from diffstride._sizes import _float32, spectral_window

    rng = np.random.default_rng(5)
    ties = [1 + 2.0**-24, 1 + 3 * 2.0**-24, 3 - 2.0**-23]  # halfway between two float32
    for stride in [*rng.uniform(1.0, 40.0, 3000), *(1 + rng.integers(0, 2**23, 3000) / 2**23)]:
        stride = float(stride)
        assert _float32(stride) == float(np.float32(stride))
        for size in (7, 32, 33, 224, 4095):
            want = int(np.floor(np.float32(size) / np.float32(stride)))
            assert math.floor(_float32(_float32(size) / _float32(stride))) == want
    for tie in ties:
        assert _float32(tie) == float(np.float32(tie))
    # 33 / 1.1 is just under 30 in float64 and exactly 30 in float32, where the original
    # divides: 30 rows and columns, not 28 and 29.
    assert spectral_window((33, 33), (1.1, 1.1)).output_size == (30, 30)


def test_unreachable_output_size_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"output_size=\(5, 4\)"):
        reference.diffstride(X, (2.0, 2.0), output_size=(5, 4))  # H = 20 is even


def test_cotangent_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="cotangent must have the output's shape"):
        reference.diffstride_vjp(X, (2.0, 2.0), np.ones((2, 3, 20, 18)))


@pytest.mark.parametrize("method", ["fft", "matmul", "auto"])
def test_tf_graph_spectral_pooling_with_unknown_spatial_sizes(method: str) -> None:
    """Fixed spectral pooling after a DiffStride in a graph reads its sizes at run time, by
    the rule used on static sizes (odd and even sizes, strides that round down)."""
    import tensorflow as tf

    from diffstride.tf import spectral_pooling

    strides = (1.7, 2.5)
    pool = tf.function(
        lambda x: spectral_pooling(x, strides, method=method),
        input_signature=[tf.TensorSpec((None, 2, None, None), tf.float32)],
    )
    rng = np.random.default_rng(3)
    for height, width in [(7, 9), (16, 16), (13, 6), (5, 24)]:
        x = rng.normal(size=(1, 2, height, width)).astype(np.float32)
        expected = reference.spectral_pooling(x, strides)
        got = pool(tf.constant(x)).numpy()
        assert got.shape == expected.shape, (height, width)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_tf_graph_mode_with_unknown_spatial_sizes() -> None:
    """Inside tf.function a size may be known only at run time (after another DiffStride)."""
    import tensorflow as tf

    from diffstride.tf import diffstride as ds

    strides = tf.Variable([2.0, 1.5])
    spec = tf.TensorSpec((None, 3, None, None), tf.float32)

    @tf.function(input_signature=[spec])
    def twice(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            y = ds(ds(x, strides), strides)
            loss = tf.reduce_sum(y**2)
        return y, tape.gradient(loss, strides)

    y, grad = twice(tf.constant(X))
    with tf.GradientTape() as tape:
        expected = ds(ds(tf.constant(X), strides), strides)
        loss = tf.reduce_sum(expected**2)
    np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad.numpy(), tape.gradient(loss, strides).numpy(), rtol=1e-4)


def test_method_argument() -> None:
    with pytest.raises(ValueError, match="method='gemm'"):
        reference.diffstride(X, (2.0, 2.0), method="gemm")
    fft = reference.diffstride(X, (2.0, 1.5), method="fft")
    np.testing.assert_allclose(
        reference.diffstride(X, (2.0, 1.5), method="matmul"), fft, rtol=1e-4, atol=1e-5
    )
    big = np.random.default_rng(2).standard_normal((1, 1, 80, 70)).astype(np.float32)
    np.testing.assert_allclose(
        reference.diffstride(big, (2.0, 2.0)),  # auto: fft above 64
        reference.diffstride(big, (2.0, 2.0), method="matmul"),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("layout", ["stacked", "permuted"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("size", [(20, 18), (15, 13)])
def test_matmul_with_sizes_known_only_in_the_graph(
    data_format: str, size: tuple, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under tf.function with a stride variable (and here unknown batch and spatial sizes)
    the crop is symbolic; the GEMM path builds its DFT factors in the graph and matches eager
    FFTs, gradients included, in both layouts of its products (TensorFlow's own, and the
    permuted one of torch and jax, which then reshapes with an unknown batch)."""
    import tensorflow as tf

    from diffstride.tf import diffstride as ds

    tf_backend = type(diffstride.get_backend("tensorflow"))
    tuning = dataclasses.replace(tf_backend.tuning, matmul_layouts=(layout, layout))
    monkeypatch.setattr(tf_backend, "tuning", tuning)

    x_nchw = np.random.default_rng(5).standard_normal((2, 3, *size)).astype(np.float32)
    x = tf.constant(x_nchw if data_format == "channels_first" else np.moveaxis(x_nchw, 1, 3))
    strides = tf.Variable([2.0, 1.5])
    spec = [None, 3, None, None] if data_format == "channels_first" else [None, None, None, 3]

    def loss_and_grads(x_: tf.Tensor, method: str) -> tuple:
        with tf.GradientTape() as tape:
            tape.watch(x_)
            y = ds(x_, strides, data_format=data_format, method=method)
            loss = tf.reduce_sum(y * y)
        return (y, *tape.gradient(loss, [x_, strides]))

    graph = tf.function(
        lambda x_: loss_and_grads(x_, "matmul"),
        input_signature=[tf.TensorSpec(spec, tf.float32)],
    )
    for got, expected in zip(graph(x), loss_and_grads(x, "fft"), strict=True):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=2e-4, atol=2e-4)


def _jaxpr_equations(jaxpr: Any) -> Any:
    """Every equation of ``jaxpr``, those of the sub-jaxprs it calls (``jit``, ``cond``...)
    included."""
    for equation in jaxpr.eqns:
        yield equation
        for param in equation.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _jaxpr_equations(inner)


@pytest.mark.parametrize("layouts", [None, ("permuted", "permuted")], ids=["jax", "permuted"])
def test_jax_channels_last_gemms_transpose_no_activation(
    layouts: tuple | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jax's channels_last GEMMs run in the stacked layout, as batched dots: the forward
    pass transposes nothing larger than a matrix (the permuted layout, here for contrast,
    transposes the input). The backward is autodiff's, whose transposes XLA folds into its
    dots."""
    import jax
    import jax.numpy as jnp

    from diffstride.jax import diffstride as ds

    if layouts is not None:
        jax_backend = type(diffstride.get_backend("jax"))
        tuning = dataclasses.replace(jax_backend.tuning, matmul_layouts=layouts)
        monkeypatch.setattr(jax_backend, "tuning", tuning)
    x = jnp.zeros((4, 16, 12, 8))
    size = diffstride.output_size((16, 12), (2.0, 2.0))

    def forward(x_: jax.Array, strides: jax.Array) -> jax.Array:
        return ds(x_, strides, output_size=size, data_format="channels_last", method="matmul")

    jaxpr = jax.make_jaxpr(forward)(x, jnp.asarray([2.0, 2.0])).jaxpr
    transposed = [
        e.invars[0].aval.shape for e in _jaxpr_equations(jaxpr) if e.primitive.name == "transpose"
    ]
    large = [shape for shape in transposed if np.prod(shape) >= x.size // 2]
    assert (not large) if layouts is None else large


@pytest.mark.parametrize("shape", [(2, 12, 3), (2, 12, 10, 3), (2, 8, 9, 10, 3)])
def test_fft_channels_first_view_gives_the_same_output(shape: tuple) -> None:
    """``fft_channels_first`` (torch's adapter) runs a channels_last input through the FFT
    path on a channels-first view and back: the same values, every rank."""
    import array_api_compat.numpy as xp

    from diffstride import _agnostic, _paths, _sizes

    numpy = diffstride.get_backend("numpy")

    class ChannelsFirstFFTs(type(numpy)):
        tuning = diffstride.Tuning(fft_channels_first=True)

    x = np.random.default_rng(3).standard_normal(shape)
    rank = len(shape) - 2
    sizes, axes = shape[1:-1], tuple(range(1, rank + 1))
    strides = [np.asarray(s) for s in (1.7, 2.3, 1.4)[:rank]]
    thresholds = _agnostic.thresholds(strides, sizes, xp=xp)
    window = _sizes.window_from_thresholds(thresholds, sizes, 4.0, inside=False)
    results = [
        _paths.compute(
            backend,
            x,
            thresholds,
            window,
            sizes=sizes,
            axes=axes,
            method="fft",
            smoothness_factor=4.0,
        )
        for backend in (numpy, ChannelsFirstFFTs())
    ]
    assert results[0].shape == results[1].shape
    np.testing.assert_allclose(results[1], results[0], rtol=1e-12, atol=1e-12)


def test_auto_method_choice() -> None:
    from diffstride._paths import chooses_gemms

    numpy, tf, torch = (diffstride.get_backend(n) for n in ("numpy", "tensorflow", "torch"))
    assert chooses_gemms(numpy, "auto", (32, 32), learnable=False)
    assert not chooses_gemms(numpy, "auto", (64, 64), learnable=False)
    assert not chooses_gemms(numpy, "auto", (32,), learnable=True)
    assert chooses_gemms(numpy, "matmul", (64, 64, 64), learnable=True)
    # TensorFlow's adapter asks for the GEMMs up to 128 per axis, DiffStride included.
    assert chooses_gemms(tf, "auto", (64, 64), learnable=True)
    assert not chooses_gemms(tf, "auto", (256, 256), learnable=True)
    assert not chooses_gemms(tf, "auto", (8, 256), learnable=True)
    assert not chooses_gemms(torch, "auto", (64, 64), learnable=True)
    # jax's: the GEMMs up to 64 for DiffStride and 256 for fixed pooling (XLA's FFTs are slow).
    jax = diffstride.get_backend("jax")
    assert chooses_gemms(jax, "auto", (64, 64), learnable=True)
    assert not chooses_gemms(jax, "auto", (96, 96), learnable=True)
    assert chooses_gemms(jax, "auto", (256, 256), learnable=False)
    # Without the input's shape, the size limit alone (the sample's bounds need the shape).
    assert chooses_gemms(jax, "auto", (32, 32), learnable=True)


@pytest.mark.parametrize(
    ("shape", "data_format", "gemms"),
    [
        # channels_first: the GEMMs while a sample has at most 32768 elements.
        ((32, 64, 32, 32), "channels_first", False),
        ((8, 64, 64, 64), "channels_first", False),
        ((8, 16, 64, 64), "channels_first", False),
        ((32, 32, 32, 32), "channels_first", True),
        ((32, 128, 16, 16), "channels_first", True),
        ((32, 8, 64, 64), "channels_first", True),
        ((32, 3, 32, 32), "channels_first", True),
        # channels_last: the GEMMs while the channels number at least half the size.
        ((32, 32, 32, 64), "channels_last", True),
        ((8, 64, 64, 64), "channels_last", True),
        ((8, 64, 64, 32), "channels_last", True),
        ((8, 64, 64, 16), "channels_last", False),
        ((32, 32, 32, 16), "channels_last", True),
        ((32, 32, 32, 8), "channels_last", False),
        ((32, 32, 32, 3), "channels_last", False),
        ((32, 8, 8, 256), "channels_last", True),
        # Past 64 per axis, the FFTs whatever the layout.
        ((1, 1024, 96, 96), "channels_last", False),
        ((1, 1, 96, 96), "channels_first", False),
    ],
)
def test_jax_auto_chooses_by_layout_and_sample(
    shape: tuple[int, ...], data_format: str, gemms: bool
) -> None:
    """jax's ``auto`` for DiffStride: measured per shape and layout (benchmarks/jax_auto.py),
    the GEMMs lose in channels_first once a sample is large (the permuted intermediates) and
    in channels_last over few channels (thin GEMMs); fixed pooling keeps the size limit."""
    from diffstride._paths import chooses_gemms

    jax_backend = diffstride.get_backend("jax")
    axes = (2, 3) if data_format == "channels_first" else (1, 2)
    sizes = tuple(shape[a] for a in axes)
    assert (
        chooses_gemms(jax_backend, "auto", sizes, learnable=True, shape=shape, axes=axes) is gemms
    )
    assert chooses_gemms(jax_backend, "auto", sizes, learnable=False, shape=shape, axes=axes) is (
        max(sizes) <= 256
    )
    assert chooses_gemms(jax_backend, "fft", sizes, learnable=True, shape=shape, axes=axes) is False


@pytest.mark.parametrize(
    ("shape", "data_format", "primitive"),
    [((2, 64, 32, 32), "channels_first", "fft"), ((2, 32, 32, 64), "channels_last", "dot_general")],
)
def test_jax_auto_reaches_the_path_it_chooses(
    shape: tuple[int, ...], data_format: str, primitive: str
) -> None:
    """The layer hands ``chooses_gemms`` the input's shape and axes: the traced call holds the
    FFTs or the GEMMs as the rule says."""
    import jax
    import jax.numpy as jnp

    from diffstride.jax import diffstride as ds

    spatial = shape[2:] if data_format == "channels_first" else shape[1:3]
    size = diffstride.output_size(spatial, (2.0, 2.0))
    jaxpr = jax.make_jaxpr(
        lambda a, s: ds(a, s, output_size=size, data_format=data_format, method="auto")
    )(jnp.zeros(shape, jnp.float32), jnp.asarray([2.0, 2.0]))
    text = str(jaxpr)
    assert primitive in text
    assert ("fft" if primitive == "dot_general" else "dot_general") not in text


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_jax_gemms_run_at_full_float32_precision(data_format: str) -> None:
    """Every product of jax's GEMM path, forward and backward, asks for
    ``Precision.HIGHEST``: jax's default lets a GPU use TensorFloat-32 (a TPU bfloat16), and
    the GEMMs would then compute another map than the FFTs that ``auto`` picks between."""
    import jax
    import jax.numpy as jnp

    from diffstride.jax import diffstride as ds

    shape = (2, 3, 12, 10) if data_format == "channels_first" else (2, 12, 10, 3)
    size = diffstride.output_size((12, 10), (2.0, 2.0))

    def loss(x: jax.Array, strides: jax.Array) -> jax.Array:
        y = ds(x, strides, output_size=size, data_format=data_format, method="matmul")
        return jnp.sum(y * y)

    grads = jax.grad(loss, argnums=(0, 1))
    jaxpr = jax.make_jaxpr(grads)(jnp.ones(shape), jnp.asarray([2.0, 2.0])).jaxpr
    precisions = [
        e.params["precision"] for e in _jaxpr_equations(jaxpr) if e.primitive.name == "dot_general"
    ]
    assert len(precisions) > 4
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    assert all(p == highest for p in precisions), precisions


@pytest.mark.parametrize("pooling", ["diffstride", "spectral_pooling"])
def test_tf_auto_takes_the_ffts_where_tensor_float_32_would_lower_the_gemms(
    pooling: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorFlow runs float32 GEMMs in TensorFloat-32 on recent GPUs unless told not to:
    where such a GPU is visible, ``auto`` takes the FFTs, which compute the same map as on a
    CPU. With TF32 off, or for float64, it takes the GEMMs as on a machine without one. (The
    GPU is simulated: the adapter's answer to "is one visible" is patched.)"""
    import tensorflow as tf
    from diffstride_backends import tensorflow as adapter

    from diffstride import tf as dtf

    monkeypatch.setattr(adapter, "_tensor_float_32_gpus", lambda: True)
    strides = tf.Variable([2.0, 2.0])
    call = dtf.diffstride if pooling == "diffstride" else dtf.spectral_pooling

    def op_types(dtype: str = "float32") -> set[str]:
        step = tf.function(
            lambda x: call(x, tf.cast(strides, dtype) if pooling == "diffstride" else (2, 2))
        )
        graph = step.get_concrete_function(tf.TensorSpec([2, 3, 16, 16], dtype)).graph
        return {op.type for op in graph.get_operations()}

    products = {"MatMul", "BatchMatMulV2", "BatchMatMulV3"}
    enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    try:
        tf.config.experimental.enable_tensor_float_32_execution(True)
        on, exact = op_types(), op_types("float64")
        tf.config.experimental.enable_tensor_float_32_execution(False)
        off = op_types()
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(enabled)
    assert not products & on
    assert "RFFT2D" in on
    for graph in (off, exact):
        assert products & graph
        assert "RFFT2D" not in graph


def test_tf_auto_chooses_the_path_at_run_time_for_symbolic_sizes() -> None:
    """A DiffStride after another one sees symbolic sizes in a Keras graph: ``auto`` then
    traces both paths and a ``tf.cond`` picks the GEMMs (or, past the adapter's limit, the
    FFTs) by the sizes at run time; values and gradients equal eager."""
    import tensorflow as tf

    from diffstride.tf import diffstride as diffstride_tf

    def diffstride_on(backend: object, x: tf.Tensor, strides: tf.Variable, **kwargs: object):
        return diffstride_tf(x, strides, **kwargs)

    backend = None
    strides = tf.Variable([2.3, 1.7])

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3])])
    def step(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            y = diffstride_on(backend, x, strides, data_format="channels_last", ramp="inside")
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, strides)

    ops = {op.type for op in step.get_concrete_function().graph.get_operations()}
    assert ops & {"If", "StatelessIf"}, "the path is not chosen at run time"
    for size in (20, 150):  # under and over the adapter's 128-pixel GEMM limit
        x = np.random.default_rng(size).standard_normal((2, size, 18, 3)).astype(np.float32)
        y, grad = step(x)
        with tf.GradientTape() as tape:
            eager = diffstride_on(
                backend, tf.constant(x), strides, data_format="channels_last", ramp="inside"
            )
            eager_loss = tf.reduce_sum(eager * eager)
        np.testing.assert_allclose(y.numpy(), eager.numpy(), atol=2e-5)
        np.testing.assert_allclose(
            grad.numpy(), tape.gradient(eager_loss, strides).numpy(), rtol=1e-3
        )


def test_tf_exports_the_keras_layers_under_their_old_home() -> None:
    """``diffstride.tf`` is all of ``diffstride.keras`` but what converts models, and its
    own functions; the same objects."""
    pytest.importorskip("tensorflow")
    import diffstride.keras
    import diffstride.tf

    convert = {"MacsReference", "convert", "macs", "macs_estimate", "macs_penalty"}
    expected = set(diffstride.keras.__all__) - convert - {"macs_reference"}
    assert set(diffstride.tf.__all__) == expected | {"diffstride", "spectral_pooling"}
    for name in expected:
        assert getattr(diffstride.tf, name) is getattr(diffstride.keras, name)
