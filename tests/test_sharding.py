"""A jax batch sharded over two host devices gives the unsharded result, eager and jitted.

Run in a subprocess: ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` must be set before
jax starts, and the test session's jax has already started with one device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import diffstride
    from diffstride.jax import DiffStride, diffstride as ds, spectral_pooling

    assert len(jax.devices()) == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    for shape, strides in [((4, 3, 20, 18), [2.0, 1.5]), ((4, 2, 40), [2.5])]:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        sharded = jax.device_put(x, NamedSharding(mesh, P("batch")))
        s = jnp.asarray(strides, dtype=jnp.float32)
        size = diffstride.output_size(shape[2:], strides)
        for method in ("fft", "matmul"):
            expected = np.asarray(ds(jnp.asarray(x), s, method=method))
            eager = ds(sharded, s, method=method)
            jitted = jax.jit(lambda a, b: ds(a, b, output_size=size, method=method))(sharded, s)
            for y in (eager, jitted):
                np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-6)
                assert len(y.sharding.device_set) == 2, y.sharding
            grad = jax.jit(jax.grad(lambda b: ds(sharded, b, output_size=size).sum() ** 2))(s)
            assert np.isfinite(np.asarray(grad)).all()
            pooled = spectral_pooling(sharded, 2.0, method=method)
            np.testing.assert_allclose(
                np.asarray(pooled), np.asarray(spectral_pooling(jnp.asarray(x), 2.0)), atol=1e-5
            )
        layer = DiffStride(strides)
        np.testing.assert_allclose(
            np.asarray(layer.apply(layer.init(), sharded)), np.asarray(ds(jnp.asarray(x), s)),
            rtol=1e-5, atol=1e-6,
        )
    print("ok")
    """
)


def test_sharded_batch_equals_unsharded() -> None:
    pytest.importorskip("jax")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


EXPLICIT_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import diffstride
    import diffstride.flax as dflax
    from diffstride.jax import DiffStride, diffstride as ds, spectral_pooling

    assert len(jax.devices()) == 4, jax.devices()
    mesh = jax.make_mesh((4,), ("batch",), axis_types=(AxisType.Explicit,))
    close = dict(rtol=1e-5, atol=1e-5)

    def check(y, expected):
        np.testing.assert_allclose(np.asarray(y), np.asarray(expected), **close)
        assert y.sharding.spec[0] == "batch", y.sharding

    cases = [
        ((4, 3, 20, 18), [2.0, 1.5], "channels_first"),
        ((8, 20, 18, 3), [2.0, 1.5], "channels_last"),
        ((4, 2, 40), [2.5], "channels_first"),
        ((4, 12, 10, 8, 2), [2.0, 1.5, 2.0], "channels_last"),
    ]
    for shape, strides, data_format in cases:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        sharded = jax.device_put(x, NamedSharding(mesh, P("batch")))
        s = jnp.asarray(strides, dtype=jnp.float32)
        spatial = shape[2:] if data_format == "channels_first" else shape[1:-1]
        size = diffstride.output_size(spatial, strides)
        for method in ("fft", "matmul"):
            kw = dict(method=method, data_format=data_format)
            expected = ds(jnp.asarray(x), s, **kw)
            check(ds(sharded, s, **kw), expected)
            check(jax.jit(lambda a, b: ds(a, b, output_size=size, **kw))(sharded, s), expected)
            fixed = spectral_pooling(jnp.asarray(x), 2.0, **kw)
            check(spectral_pooling(sharded, 2.0, **kw), fixed)
            check(jax.jit(lambda a: spectral_pooling(a, 2.0, **kw))(sharded), fixed)

            def loss(a, b):
                return jnp.sum(ds(a, b, output_size=size, **kw) ** 2)

            if len(strides) == 2:
                grad = jax.grad(loss, argnums=(0, 1))
                expected_x, expected_s = grad(jnp.asarray(x), s)
                with jax.set_mesh(mesh):  # as jax asks of a gradient summed over the batch
                    for fn in (grad, jax.jit(grad)):
                        grad_x, grad_s = fn(sharded, s)
                        check(grad_x, expected_x)
                        np.testing.assert_allclose(grad_s, expected_s, rtol=1e-4, atol=1e-4)

            layer = DiffStride(strides, **kw)
            params = layer.init()
            check(layer.apply(params, sharded), expected)
            jitted = jax.jit(lambda p, a: layer.apply(p, a, output_size=size))(params, sharded)
            check(jitted, expected)

            module = dflax.DiffStride(strides, **kw)
            check(nnx.jit(lambda m, a: m(a))(module, sharded), expected)
            check(module(sharded), expected)

    # Channels sharded too: the GEMM path gathers them, the FFT path keeps them.
    grid = jax.make_mesh((2, 2), ("batch", "model"), axis_types=(AxisType.Explicit,) * 2)
    x = np.random.default_rng(1).standard_normal((4, 12, 16, 4)).astype(np.float32)
    sharded = jax.device_put(x, NamedSharding(grid, P("batch", None, None, "model")))
    for method in ("fft", "matmul"):
        kw = dict(method=method, data_format="channels_last")
        expected = ds(jnp.asarray(x), [2.0, 1.5], **kw)
        check(ds(sharded, [2.0, 1.5], **kw), expected)
        size = diffstride.output_size((12, 16), [2.0, 1.5])
        check(jax.jit(lambda a: ds(a, [2.0, 1.5], output_size=size, **kw))(sharded), expected)
    print("ok")
    """
)


@pytest.mark.slow
def test_explicitly_sharded_batch_equals_unsharded() -> None:
    """A mesh of ``jax.make_mesh`` with explicit axes (jax's default since 0.7): eager and
    jitted, FFTs and GEMMs, both layouts, functions and layers, gradients included."""
    jax = pytest.importorskip("jax")
    pytest.importorskip("flax")
    if not hasattr(jax.sharding, "AxisType") or not hasattr(jax, "set_mesh"):
        pytest.skip("explicit sharding needs jax.sharding.AxisType and jax.set_mesh")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    result = subprocess.run(
        [sys.executable, "-c", EXPLICIT_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
