"""Checks that hold a backend to the numpy reference and to the original's golden data.

Each check is a function of one loaded backend (a ``diffstride.Backend`` with its testing
hooks ``from_numpy``, ``test_inputs`` and ``vjp``), a computation path (``method``: "fft" or
"matmul") and a mask (``ramp``: "outside", the original's, or "inside"). The golden checks
hold the original's ramp and 2-D inputs only; every other check runs for both ramps and for
1, 2 and 3 spatial axes. Checks call the public functional API with ``backend=`` the adapter.
A check raises ``AssertionError`` on a mismatch and ``pytest.skip`` where it does not apply
(gradients of a backend without autodiff; float64 cases where the framework has float32 only,
whose float32 cases still run).

Tolerances: the golden data is float32 from TensorFlow, matched to a relative error (max abs
difference over max abs value) of 1e-4 for outputs and input gradients and 2e-3 for stride
gradients, which sum many terms. Comparisons with the numpy reference scale with the dtype:
``4 * sqrt(eps)``-style, 1e-4 in float32 and 1e-9 in float64.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import array_api_compat
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diffstride
from diffstride import numpy as reference
from diffstride_conformance import golden, oracle
from diffstride_conformance.hooks import WithHooks

__all__ = ["CHECKS", "checks_for"]

OUTPUT_RTOL = 1e-4
STRIDE_GRAD_RTOL = 2e-3


def rel_error(actual: Any, expected: Any) -> float:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-6)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


def assert_close(actual: Any, expected: Any, rtol: float, what: str) -> None:
    error = rel_error(actual, expected)
    assert error <= rtol, f"{what}: relative error {error:.3g} > {rtol:.1g}"


def _rtol(dtype: Any) -> float:
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-9


def _original_ramp_only(ramp: str) -> None:
    if ramp != "outside":
        pytest.skip("the golden data is the original's, whose ramp is 'outside'")


def _require_gradients(backend: Any) -> None:
    if not backend.differentiable:
        pytest.skip(f"backend {backend.name!r} has no autodiff")


def _from_numpy(backend: Any, array: np.ndarray) -> Any:
    converted = backend.from_numpy(array)
    if np.dtype(array.dtype) == np.float64 and "64" not in str(converted.dtype):
        pytest.skip(f"backend {backend.name!r} is configured without float64")
    return converted


def _has_float64(backend: Any) -> bool:
    """Whether the backend keeps float64 arrays (JAX without x64 and some frameworks do not):
    without it a check runs its float32 cases and leaves the float64 ones out."""
    return "64" in str(backend.from_numpy(np.zeros(1, dtype=np.float64)).dtype)


def _adapter(backend: Any) -> diffstride.Backend:
    """The adapter itself (the suite's lazy stand-in loads it by name)."""
    if isinstance(backend, WithHooks):
        return backend.adapter
    return (
        backend if isinstance(backend, diffstride.Backend) else diffstride.get_backend(backend.name)
    )


def _hooked(check: Callable[..., None]) -> Callable[..., None]:
    """``check`` given the adapter with its testing hooks (defaults where it has none)."""

    @functools.wraps(check)
    def run(backend: Any, *args: Any, **kwargs: Any) -> None:
        check(WithHooks(_adapter(backend)), *args, **kwargs)

    return run


def diffstride_on(backend: Any, x: Any, strides: Any, **kwargs: Any) -> Any:
    return diffstride.diffstride(x, strides, backend=_adapter(backend), **kwargs)


def spectral_pooling_on(backend: Any, x: Any, strides: Any, **kwargs: Any) -> Any:
    return diffstride.spectral_pooling(x, strides, backend=_adapter(backend), **kwargs)


def _diffstride_with_grads(
    backend: Any, x: np.ndarray, strides: np.ndarray, cot: np.ndarray, **kwargs: Any
) -> tuple[np.ndarray, list[np.ndarray]]:
    def fn(x_: Any, s_: Any) -> Any:
        return diffstride_on(backend, x_, s_, **kwargs)

    primals = [_from_numpy(backend, x), _from_numpy(backend, strides)]
    return backend.vjp(fn, primals, cot)


# --- golden data of the original ------------------------------------------------------------


@_hooked
def check_golden_outputs(backend: Any, method: str = "auto", ramp: str = "outside") -> None:
    """Outputs equal the original's on every golden case."""
    _original_ramp_only(ramp)
    for case in golden.diffstride_cases():
        y = diffstride_on(
            backend,
            backend.from_numpy(case["x"]),
            backend.from_numpy(case["strides_init"]),
            method=method,
            **golden.diffstride_kwargs(case["meta"]),
        )
        assert_close(backend.concrete(y), case["y"], OUTPUT_RTOL, f"{case['id']} output")


@_hooked
def check_golden_gradients(backend: Any, method: str = "auto", ramp: str = "outside") -> None:
    """Input and stride gradients equal the original's on every golden case."""
    _original_ramp_only(ramp)
    _require_gradients(backend)
    for case in golden.diffstride_cases():
        _, (grad_x, grad_s) = _diffstride_with_grads(
            backend,
            case["x"],
            case["strides_init"],
            case["cot"],
            method=method,
            **golden.diffstride_kwargs(case["meta"]),
        )
        assert_close(grad_x, case["grad_x"], OUTPUT_RTOL, f"{case['id']} grad_x")
        assert_close(grad_s, case["grad_strides"], STRIDE_GRAD_RTOL, f"{case['id']} grad_strides")


@_hooked
def check_golden_spectral_pooling(
    backend: Any, method: str = "auto", ramp: str = "outside"
) -> None:
    """Fixed spectral pooling: outputs (and input gradients) equal the original's."""
    _original_ramp_only(ramp)
    for case, kwargs in spectral_pooling_cases_with_kwargs():
        x = backend.from_numpy(case["x"])
        y = spectral_pooling_on(backend, x, method=method, **kwargs)
        assert_close(backend.concrete(y), case["y"], OUTPUT_RTOL, f"{case['id']} output")
        if backend.differentiable:

            def fn(x_: Any, kwargs: dict[str, Any] = kwargs) -> Any:
                return spectral_pooling_on(backend, x_, method=method, **kwargs)

            _, (grad_x,) = backend.vjp(fn, [x], case["cot"])
            assert_close(grad_x, case["grad_x"], OUTPUT_RTOL, f"{case['id']} grad_x")


def spectral_pooling_cases_with_kwargs() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (c, {"strides": c["meta"]["strides"], "data_format": c["meta"]["data_format"]})
        for c in golden.spectral_pooling_cases()
    ]


@_hooked
def check_numpy_vjp_matches_golden(
    backend: Any, method: str = "auto", ramp: str = "outside"
) -> None:
    """The numpy reference VJP equals the original's gradients (run once, for numpy)."""
    _original_ramp_only(ramp)
    del backend
    for case in golden.diffstride_cases():
        grad_x, grad_s = reference.diffstride_vjp(
            case["x"], case["strides_init"], case["cot"], **golden.diffstride_kwargs(case["meta"])
        )
        assert_close(grad_x, case["grad_x"], OUTPUT_RTOL, f"{case['id']} grad_x")
        assert_close(grad_s, case["grad_strides"], STRIDE_GRAD_RTOL, f"{case['id']} grad_strides")
    for case, kwargs in spectral_pooling_cases_with_kwargs():
        grad_x = reference.spectral_pooling_vjp(case["x"], cotangent=case["cot"], **kwargs)
        assert_close(grad_x, case["grad_x"], OUTPUT_RTOL, f"{case['id']} grad_x")


# --- agreement with the numpy reference ----------------------------------------------------

# (shape channels_first, strides, smoothness_factor, cropping, data_format, limits, dtype)
REFERENCE_CONFIGS: list[tuple[Any, ...]] = [
    ((2, 3, 16, 16), (2.0, 2.0), 4.0, True, "channels_first", (None, None), "float32"),
    ((1, 2, 15, 22), (1.7, 3.2), 2.0, True, "channels_last", (None, None), "float32"),
    ((2, 2, 12, 9), (2.5,), 4.0, True, "channels_first", (None, None), "float64"),
    ((1, 3, 20, 20), (2.0, 3.0), 0.0, True, "channels_first", (None, None), "float32"),
    ((1, 2, 11, 13), (1.5, 2.0), 3.0, False, "channels_last", (None, None), "float64"),
    ((2, 1, 24, 18), (3.0, 1.2), 4.0, True, "channels_first", (1.5, 2.5), "float32"),
    ((1, 1, 2, 3), (1.0, 1.0), 4.0, True, "channels_first", (None, None), "float32"),
    # strides below N / (N - R): the straight-through projection acts on both axes
    ((2, 2, 10, 12), (1.0, 1.1), 4.0, True, "channels_first", (None, None), "float32"),
    # one spatial axis
    ((2, 3, 40), (2.5,), 4.0, True, "channels_first", (None, None), "float32"),
    ((1, 2, 33), (1.6,), 2.0, True, "channels_last", (None, None), "float64"),
    ((1, 1, 17), (3.0,), 0.0, False, "channels_first", (None, None), "float32"),
    # three spatial axes
    ((1, 2, 9, 12, 10), (1.5, 2.0, 2.5), 3.0, True, "channels_first", (None, None), "float32"),
    ((2, 1, 8, 7, 6), (2.0,), 2.0, True, "channels_last", (None, 1.8), "float64"),
    ((1, 2, 6, 5, 9), (1.2, 1.0, 3.0), 4.0, True, "channels_last", (None, None), "float32"),
]


def _to_layout(array: np.ndarray, data_format: str) -> np.ndarray:
    """A channels_first array in ``data_format`` (channels moved last, any rank)."""
    if data_format == "channels_first":
        return array
    return np.ascontiguousarray(np.moveaxis(array, 1, -1))


def _from_layout(array: np.ndarray, data_format: str) -> np.ndarray:
    return array if data_format == "channels_first" else np.moveaxis(array, -1, 1)


def _compare_with_reference(
    backend: Any, config: tuple[Any, ...], seed: int, method: str, ramp: str
) -> None:
    shape, strides, smoothness, cropping, data_format, (low, high), dtype = config
    rng = np.random.default_rng(seed)
    x = _to_layout(rng.standard_normal(shape).astype(dtype), data_format)
    s = np.asarray(strides, dtype=dtype)
    kwargs = {
        "smoothness_factor": smoothness,
        "cropping": cropping,
        "data_format": data_format,
        "lower_limit_stride": low,
        "upper_limit_stride": high,
        "ramp": ramp,
    }
    expected = reference.diffstride(x, s, **kwargs)
    assert _from_layout(expected, data_format).shape[2:] == (
        diffstride.output_size(
            shape[2:],
            strides,
            dtype=dtype,
            smoothness_factor=smoothness,
            cropping=cropping,
            lower_limit_stride=low,
            upper_limit_stride=high,
            ramp=ramp,
        )
    ), f"{config}: output shape {expected.shape} disagrees with diffstride.output_size"
    for x_in in _test_inputs(backend, x):
        y = diffstride_on(backend, x_in, _from_numpy(backend, s), method=method, **kwargs)
        y = backend.concrete(y)
        assert y.dtype == np.dtype(dtype), f"{config}: dtype {y.dtype} is not {dtype}"
        assert_close(y, expected, _rtol(dtype), f"{config} output")
    if not backend.differentiable:
        return
    cot = rng.standard_normal(expected.shape).astype(dtype)
    _, (grad_x, grad_s) = _diffstride_with_grads(backend, x, s, cot, method=method, **kwargs)
    ref_x, ref_s = reference.diffstride_vjp(x, s, cot, **kwargs)
    assert grad_x.dtype == np.dtype(dtype)
    assert grad_s.dtype == np.dtype(dtype)
    assert_close(grad_x, ref_x, _rtol(dtype), f"{config} grad_x")
    assert_close(grad_s, ref_s, 10 * _rtol(dtype), f"{config} grad_strides")


def _test_inputs(backend: Any, array: np.ndarray) -> list[Any]:
    inputs = backend.test_inputs(array)
    if np.dtype(array.dtype) == np.float64 and "64" not in str(inputs[0].dtype):
        pytest.skip(f"backend {backend.name!r} is configured without float64")
    return inputs


@_hooked
def check_matches_numpy_reference(
    backend: Any, method: str = "auto", ramp: str = "outside"
) -> None:
    """Outputs, dtypes and gradients equal the numpy reference on hand-picked configurations
    (odd sizes, channels_last, shared stride, R = 0, no cropping, limits, float64, tiny)."""
    float64 = _has_float64(backend)
    for seed, config in enumerate(REFERENCE_CONFIGS):
        if float64 or config[-1] != "float64":
            _compare_with_reference(backend, config, seed, method, ramp)


@st.composite
def _configs(draw: Any) -> tuple[Any, ...]:
    rank = draw(st.sampled_from([1, 2, 2, 3]))
    largest = {1: 40, 2: 24, 3: 10}[rank]
    sizes = tuple(draw(st.integers(2, largest)) for _ in range(rank))
    shared = draw(st.booleans())
    stride = st.floats(1.0, 6.0, allow_nan=False, width=32)
    strides = (draw(stride),) if shared else tuple(draw(stride) for _ in range(rank))
    smoothness = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 4.0, 7.0]))
    cropping = draw(st.booleans())
    data_format = draw(st.sampled_from(["channels_first", "channels_last"]))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), *sizes)
    return (shape, strides, smoothness, cropping, data_format, (None, None), "float32")


@_hooked
def check_random_configurations(backend: Any, method: str = "auto", ramp: str = "outside") -> None:
    """Hypothesis-drawn ranks (1 to 3 spatial axes), sizes (odd/even, tiny, non-square),
    strides and R agree with the reference, and the output shape equals
    ``diffstride.output_size``. It runs once per ramp,
    with half the examples each: every drawn shape recompiles under jit, so this sweep
    dominates the suite's time."""

    @settings(
        max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(config=_configs(), seed=st.integers(0, 2**16))
    def run(config: tuple[Any, ...], seed: int) -> None:
        _compare_with_reference(backend, config, seed, method, ramp)

    run()


@_hooked
def check_spectral_pooling_matches_reference(
    backend: Any, method: str = "auto", ramp: str = "outside"
) -> None:
    """Spectral pooling on odd, tiny and channels_last inputs equals the numpy reference."""
    rng = np.random.default_rng(7)
    for shape, strides, data_format in [
        ((2, 3, 9, 14), (2, 3), "channels_first"),
        ((1, 2, 3, 2), (1.5, 1.0), "channels_last"),
        ((1, 1, 31, 17), (2.5,), "channels_first"),
        ((2, 3, 41), (3.0,), "channels_first"),
        ((1, 2, 7), (1.5,), "channels_last"),
        ((1, 2, 9, 8, 13), (2, 1.5, 3), "channels_last"),
        ((2, 1, 4, 6, 5), (2.0,), "channels_first"),
    ]:
        x = _to_layout(rng.standard_normal(shape).astype(np.float32), data_format)
        expected = reference.spectral_pooling(x, strides, data_format=data_format)
        got = spectral_pooling_on(
            backend, backend.from_numpy(x), strides, data_format=data_format, method=method
        )
        assert_close(backend.concrete(got), expected, OUTPUT_RTOL, f"{shape} {strides}")
        assert tuple(got.shape) == expected.shape
        cot = rng.standard_normal(expected.shape)
        grad = reference.spectral_pooling_vjp(
            x.astype(np.float64), strides, cot, data_format=data_format
        )
        if backend.differentiable:

            def fn(x_: Any, strides: Any = strides, data_format: str = data_format) -> Any:
                return spectral_pooling_on(
                    backend, x_, strides, data_format=data_format, method=method
                )

            _, (got_grad,) = backend.vjp(fn, [backend.from_numpy(x)], cot.astype(np.float32))
            assert_close(got_grad, grad, OUTPUT_RTOL, f"{shape} {strides} grad_x")


# --- contract: dtypes, layouts, errors, edge cases ------------------------------------------


#: One input shape per spatial rank (channels_first), for the contract checks.
RANK_SHAPES = {1: (2, 3, 27), 2: (2, 3, 14, 11), 3: (1, 2, 7, 10, 9)}


def _strides_for(rank: int) -> tuple[float, ...]:
    return (2.0, 1.5, 1.7)[-rank:]


@_hooked
def check_channels_last_is_a_transpose(
    backend: Any, method: str = "auto", ramp: str = "outside"
) -> None:
    """channels_last gives the channels_first result, transposed, for every rank."""
    for rank, shape in RANK_SHAPES.items():
        x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
        strides = _strides_for(rank)
        first = diffstride_on(backend, backend.from_numpy(x), strides, method=method, ramp=ramp)
        last = diffstride_on(
            backend,
            backend.from_numpy(_to_layout(x, "channels_last")),
            strides,
            data_format="channels_last",
            method=method,
            ramp=ramp,
        )
        expected = _to_layout(backend.concrete(first), "channels_last")
        assert_close(backend.concrete(last), expected, OUTPUT_RTOL, f"rank {rank} NHWC")


@_hooked
def check_empty_batch(backend: Any, method: str = "auto", ramp: str = "outside") -> None:
    """An empty batch gives an empty result of the right shape, for every rank."""
    for rank, shape in RANK_SHAPES.items():
        x = backend.from_numpy(np.zeros((0, *shape[1:]), dtype=np.float32))
        strides = _strides_for(rank)
        y = diffstride_on(backend, x, strides, method=method, ramp=ramp)
        size = diffstride.output_size(shape[2:], strides, ramp=ramp)
        assert tuple(y.shape) == (0, shape[1], *size), f"rank {rank}: {tuple(y.shape)}"


BAD_CALLS: list[tuple[str, Any, dict[str, Any], type[Exception], str]] = [
    ("rank 2", (3, 16), {}, ValueError, "rank-3"),
    ("rank 6", (1, 1, 4, 4, 4, 4), {}, ValueError, "rank-5"),
    ("size 1", (1, 1, 1, 16), {}, ValueError, "spatial sizes >= 2"),
    ("size 1, 1-D", (1, 1, 1), {}, ValueError, "spatial sizes >= 2"),
    ("data_format", (1, 1, 8, 8), {"data_format": "NCHW"}, ValueError, "data_format="),
    ("stride < 1", (1, 1, 8, 8), {"strides": (0.5, 2.0)}, ValueError, "strides="),
    ("stride nan", (1, 1, 8, 8), {"strides": (float("nan"), 2.0)}, ValueError, "strides="),
    ("3 strides, 2-D", (1, 1, 8, 8), {"strides": (2.0, 2.0, 2.0)}, ValueError, "strides="),
    ("2 strides, 3-D", (1, 1, 8, 8, 8), {"strides": (2.0, 2.0)}, ValueError, "strides="),
    ("2 strides, 1-D", (1, 1, 8), {"strides": (2.0, 2.0)}, ValueError, "strides="),
    ("stride str", (1, 1, 8, 8), {"strides": "2"}, TypeError, "strides="),
    ("R < 0", (1, 1, 8, 8), {"smoothness_factor": -1.0}, ValueError, "smoothness_factor="),
    ("R inf", (1, 1, 8, 8), {"smoothness_factor": float("inf")}, ValueError, "smoothness_factor="),
    (
        "lower > upper",
        (1, 1, 8, 8),
        {"lower_limit_stride": 3.0, "upper_limit_stride": 2.0},
        ValueError,
        "lower_limit_stride=3.0",
    ),
    ("output_size odd w", (1, 1, 8, 8), {"output_size": (4, 3)}, ValueError, "output_size="),
    ("output_size rank", (1, 1, 8, 8, 8), {"output_size": (4, 4)}, TypeError, "output_size="),
    ("ramp", (1, 1, 8, 8), {"ramp": "middle"}, ValueError, "ramp='middle'"),
    ("unknown option", (1, 1, 8, 8), {"smoothness": 1.0}, TypeError, "'smoothness'"),
]


@_hooked
def check_bad_input_is_rejected(backend: Any, method: str = "auto", ramp: str = "outside") -> None:
    """Bad arguments raise ValueError/TypeError naming the argument and the value."""
    for _label, shape, kwargs, error, fragment in BAD_CALLS:
        kwargs = dict(kwargs)
        strides = kwargs.pop("strides", 2.0)
        kwargs.setdefault("ramp", ramp)
        x = backend.from_numpy(np.zeros(shape, dtype=np.float32))
        with pytest.raises(error, match=re.escape(fragment)):
            diffstride_on(backend, x, strides, method=method, **kwargs)
    for dtype in (np.int32, np.complex64):
        x = backend.from_numpy(np.zeros((1, 1, 8, 8), dtype=dtype))
        with pytest.raises(TypeError, match="real floating"):
            diffstride_on(backend, x, (2.0, 2.0), method=method, ramp=ramp)


@_hooked
def check_dtype_is_kept(backend: Any, method: str = "auto", ramp: str = "outside") -> None:
    """float32 and float64 inputs give outputs of the same dtype, for every rank (float32
    only where the backend has no float64)."""
    for dtype in (np.float32, np.float64) if _has_float64(backend) else (np.float32,):
        for rank, shape in RANK_SHAPES.items():
            x = np.ones(shape, dtype=dtype)
            y = diffstride_on(
                backend, _from_numpy(backend, x), _strides_for(rank), method=method, ramp=ramp
            )
            assert np.asarray(backend.concrete(y)).dtype == dtype, f"{dtype.__name__} {rank}"
            z = spectral_pooling_on(backend, _from_numpy(backend, x), 2.0, method=method)
            assert np.asarray(backend.concrete(z)).dtype == dtype


#: Relative tolerance of a half-precision result against the float32 one, per dtype: a few
#: units of the half type's epsilon (2^-10 for float16, 2^-7 for bfloat16).
HALF_RTOL = {"float16": 5e-3, "bfloat16": 4e-2}


@_hooked
def check_half_precision(backend: Any, method: str = "auto", ramp: str = "outside") -> None:
    """float16 and bfloat16 inputs (where the namespace has them) run in float32 and come
    back in their own dtype, close to the float32 result on the same (rounded) values, for
    every rank; the strides' gradients stay float32 and finite, close to float32's."""
    xp = _adapter(backend).namespace()
    for name, rtol in HALF_RTOL.items():
        dtype = getattr(xp, name, None)
        if dtype is None:
            continue
        for rank, shape in RANK_SHAPES.items():
            x32 = np.random.default_rng(rank).standard_normal(shape).astype(np.float32)
            x = xp.astype(backend.from_numpy(x32), dtype)
            strides = _strides_for(rank)
            y = diffstride_on(backend, x, strides, method=method, ramp=ramp)
            assert y.dtype == x.dtype, f"{name} rank {rank}: output dtype {y.dtype}"
            rounded = np.asarray(backend.concrete(xp.astype(x, xp.float32)), dtype=np.float32)
            expected = reference.diffstride(rounded, strides, ramp=ramp)
            got = np.asarray(backend.concrete(xp.astype(y, xp.float32)), dtype=np.float64)
            assert_close(got, expected, rtol, f"{name} rank {rank} output")
            if not backend.differentiable:
                continue
            cot = np.random.default_rng(0).standard_normal(expected.shape).astype(np.float32)
            s32 = np.asarray(strides, dtype=np.float32)

            def fn(x_: Any, s_: Any) -> Any:
                return xp.astype(
                    diffstride_on(backend, x_, s_, method=method, ramp=ramp), xp.float32
                )

            _, (_, grad_s) = backend.vjp(fn, [x, backend.from_numpy(s32)], cot)
            _, ref_s = reference.diffstride_vjp(rounded, s32, cot, ramp=ramp)
            assert grad_s.dtype == np.float32, f"{name}: stride gradient dtype {grad_s.dtype}"
            assert np.isfinite(grad_s).all(), f"{name}: stride gradient {grad_s}"
            assert_close(grad_s, ref_s, 10 * rtol, f"{name} rank {rank} grad_strides")


# --- the reference itself ------------------------------------------------------------------


@_hooked
def check_numpy_vjp_matches_finite_differences(
    backend: Any, method: str = "auto", ramp: str = "outside"
) -> None:
    """float64 central differences confirm the analytic VJP for 1, 2 and 3 spatial axes, for
    x and for the strides (strides chosen away from crop-size jumps: the size is the same at
    S +- h)."""
    del backend
    rng = np.random.default_rng(11)
    step = 1e-6
    configs = [
        ((1, 2, 12, 10), np.array([2.3, 1.7]), 4.0, "channels_first", (None, None)),
        ((2, 1, 9, 13), np.array([1.9]), 2.0, "channels_last", (None, None)),
        ((1, 1, 16, 16), np.array([2.2, 3.1]), 1.0, "channels_first", (1.5, 2.8)),
        ((2, 2, 30), np.array([2.3]), 3.0, "channels_last", (None, None)),
        ((1, 1, 7, 11, 10), np.array([1.5, 2.1, 2.7]), 2.0, "channels_first", (None, None)),
        ((1, 2, 9, 6, 8), np.array([1.7]), 1.5, "channels_last", (None, 2.5)),
    ]
    for shape, strides, smoothness, data_format, (low, high) in configs:
        kwargs = {
            "smoothness_factor": smoothness,
            "data_format": data_format,
            "lower_limit_stride": low,
            "upper_limit_stride": high,
            "ramp": ramp,
        }
        x = _to_layout(rng.standard_normal(shape), data_format)
        sizes = [
            diffstride.output_size(
                shape[2:],
                tuple(s),
                smoothness_factor=smoothness,
                dtype="float64",
                lower_limit_stride=low,
                upper_limit_stride=high,
                ramp=ramp,
            )
            for s in (strides - step, strides, strides + step)
        ]
        assert sizes[0] == sizes[1] == sizes[2], "pick strides away from a crop-size jump"
        y = reference.diffstride(x, strides, **kwargs)
        cot = rng.standard_normal(y.shape)
        grad_x, grad_s = reference.diffstride_vjp(x, strides, cot, **kwargs)

        def loss(
            x_: np.ndarray, s_: np.ndarray, kwargs: dict[str, Any] = kwargs, cot: np.ndarray = cot
        ) -> float:
            return float(np.sum(reference.diffstride(x_, s_, **kwargs) * cot))

        direction = rng.standard_normal(x.shape)
        numeric = loss(x + step * direction, strides) - loss(x - step * direction, strides)
        assert abs(numeric / (2 * step) - np.sum(grad_x * direction)) <= 1e-6 * max(
            1.0, abs(numeric / (2 * step))
        ), "grad_x disagrees with finite differences"
        for i in range(strides.shape[0]):
            e = np.zeros_like(strides)
            e[i] = step
            numeric_s = (loss(x, strides + e) - loss(x, strides - e)) / (2 * step)
            assert abs(numeric_s - grad_s[i]) <= 1e-5 * max(1.0, abs(numeric_s)), (
                f"grad_strides[{i}] = {grad_s[i]} but finite differences give {numeric_s}"
            )


@_hooked
def check_numpy_vjp_matches_oracle(
    backend: Any, method: str = "auto", ramp: str = "outside"
) -> None:
    """The reference VJP (built on the core's) equals an independent derivation
    (:mod:`diffstride_conformance.oracle`) on 2-D inputs, where their crops and thresholds are
    decided separately."""
    del backend
    rng = np.random.default_rng(5)
    for shape, strides, smoothness, (low, high), dtype in [
        ((2, 3, 16, 16), [2.0, 2.0], 4.0, (None, None), "float32"),
        ((1, 2, 15, 22), [1.7, 3.2], 2.0, (None, None), "float64"),
        ((2, 1, 24, 18), [3.0, 1.2], 4.0, (1.5, 2.5), "float32"),
        ((2, 2, 12, 9), [2.5], 4.0, (None, None), "float64"),
        ((2, 2, 10, 12), [1.0, 1.1], 4.0, (None, None), "float32"),
        ((1, 1, 20, 20), [2.0, 3.0], 0.0, (None, None), "float32"),
    ]:
        kwargs = {
            "smoothness_factor": smoothness,
            "lower_limit_stride": low,
            "upper_limit_stride": high,
            "ramp": ramp,
        }
        x = rng.standard_normal(shape).astype(dtype)
        s = np.asarray(strides, dtype=dtype)
        cot = rng.standard_normal(reference.diffstride(x, s, **kwargs).shape)
        grad_x, grad_s = reference.diffstride_vjp(x, s, cot, **kwargs)
        want_x, want_s = oracle.diffstride_vjp_2d(x, s, cot, **kwargs)
        assert_close(grad_x, want_x, 1e-9, f"{shape} grad_x")
        assert_close(grad_s, want_s, 1e-5, f"{shape} grad_strides")


@_hooked
def check_upload_keeps_arrays(backend: Any, method: str = "auto", ramp: str = "outside") -> None:
    """``Backend.upload`` (the host plan's constants and fixed pooling's matrices, made on
    the input's device) returns one array per numpy array, in order, on that device, with
    its shape (0-d and empty included), dtype and values, whatever the numpy array's memory
    order; a later upload leaves the arrays of an earlier one as they were."""
    like = backend.from_numpy(np.zeros((2, 3), dtype=np.float32))
    try:
        device = array_api_compat.device(like)
    except AttributeError:  # an array type without a device: the namespace's default
        device = None
    adapter = _adapter(backend)
    first, second = _upload_cases(backend, seed=0), _upload_cases(backend, seed=1)
    uploaded = adapter.upload(first, device)
    adapter.upload(second, device)  # must not reuse the first's memory
    assert len(uploaded) == len(first), f"{len(uploaded)} arrays for {len(first)}"
    for array, result in zip(first, uploaded, strict=True):
        what = f"{array.dtype} {array.shape}"
        assert tuple(result.shape) == array.shape, f"{what}: shape {tuple(result.shape)}"
        if device is not None:
            assert array_api_compat.device(result) == device, f"{what}: on another device"
        got = backend.concrete(result)
        assert got is not None, f"{what}: concrete() gave None"
        assert np.asarray(got).dtype == array.dtype, f"{what}: dtype {np.asarray(got).dtype}"
        np.testing.assert_array_equal(np.asarray(got), array, err_msg=what)


def _upload_cases(backend: Any, seed: int) -> list[np.ndarray]:
    """Arrays of each precision the backend keeps: 0-d, empty, C order and transposed."""
    rng = np.random.default_rng(seed)
    dtypes = [np.float32, np.complex64]
    if _has_float64(backend):
        dtypes += [np.float64, np.complex128]
    arrays = [np.asarray(rng.standard_normal(), dtype=np.float32), np.zeros((0, 3), np.float32)]
    for dtype in dtypes:
        values = rng.standard_normal((3, 5)) + 1j * rng.standard_normal((3, 5))
        values = values.astype(dtype) if np.iscomplexobj(dtype(0)) else values.real.astype(dtype)
        arrays += [values, values.T]
    return arrays


Check = Callable[[Any], None]

CHECKS: tuple[Check, ...] = (
    check_golden_outputs,
    check_golden_gradients,
    check_golden_spectral_pooling,
    check_matches_numpy_reference,
    check_random_configurations,
    check_spectral_pooling_matches_reference,
    check_channels_last_is_a_transpose,
    check_empty_batch,
    check_bad_input_is_rejected,
    check_dtype_is_kept,
    check_half_precision,
    check_upload_keeps_arrays,
)

#: Checks of the numpy reference itself; they run once, with the numpy backend.
REFERENCE_CHECKS: tuple[Check, ...] = (
    check_numpy_vjp_matches_golden,
    check_numpy_vjp_matches_finite_differences,
    check_numpy_vjp_matches_oracle,
)


#: The computation paths every backend is held to on every check.
METHODS = ("fft", "matmul")

#: The masks every backend is held to: the original's ramp and the inside one.
RAMPS = ("outside", "inside")

#: Checks that do not depend on the path; they run once per backend.
PATH_FREE: tuple[Check, ...] = (*REFERENCE_CHECKS, check_upload_keeps_arrays)

#: Checks of the original's data, or with no mask at all: they run with the default ramp only.
RAMP_FREE: tuple[Check, ...] = (
    check_golden_outputs,
    check_golden_gradients,
    check_golden_spectral_pooling,
    check_numpy_vjp_matches_golden,
    check_spectral_pooling_matches_reference,
    check_upload_keeps_arrays,
)


def checks_for(backend_name: str) -> list[Check]:
    """The checks a backend is held to (each is called as ``check(backend, method=...)``)."""
    return [*CHECKS, *(REFERENCE_CHECKS if backend_name == "numpy" else ())]
