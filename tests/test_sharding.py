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
