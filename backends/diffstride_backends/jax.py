"""JAX: its own ``jax.numpy`` is an Array API namespace (``jnp.fft`` included).

channels_last: ``jnp.fft.rfftn`` takes any ``axes``, so the core's ``axes=(1, 2)`` runs as is.
Concrete values: under ``jax.grad`` the strides are tracers whose values are known, so they
are read through ``stop_gradient``; under ``jax.jit`` they are not, and ``concrete`` returns
None, which makes the caller ask for a static ``output_size``.

``custom_vjp`` registers the core's hand-written VJP of the FFT path with ``jax.custom_vjp``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


class JaxBackend:
    name = "jax"
    module = "jax"
    differentiable = True
    dynamic_shapes = False

    def owns(self, x: Any) -> bool:
        jax = sys.modules.get("jax")
        return jax is not None and isinstance(x, jax.Array)

    def namespace(self) -> Any:
        import jax.numpy

        return jax.numpy

    def stop_gradient(self, x: Any) -> Any:
        import jax

        return jax.lax.stop_gradient(x)

    def concrete(self, x: Any) -> np.ndarray | None:
        import jax

        try:
            return np.asarray(jax.lax.stop_gradient(x))
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            return None

    def custom_vjp(self, forward: Any, backward: Any) -> Any:
        """``forward(*primals) -> (out, residual)`` with the gradient ``backward(residual,
        primals, cotangent, needs) -> grads``."""
        import jax

        @jax.custom_vjp
        def fused(*primals: Any) -> Any:
            return forward(*primals)[0]

        def fused_forward(*primals: Any) -> Any:
            out, residual = forward(*primals)
            return out, (residual, primals)

        def fused_backward(saved: Any, cotangent: Any) -> Any:
            residual, primals = saved
            return tuple(backward(residual, primals, cotangent, (True,) * len(primals)))

        fused.defvjp(fused_forward, fused_backward)
        return fused

    # Testing hooks, used by diffstride_conformance.
    def from_numpy(self, array: np.ndarray) -> Any:
        import jax.numpy as jnp

        return jnp.asarray(array)

    def vjp(self, fn: Any, primals: list[Any], cotangent: np.ndarray) -> Any:
        """``(fn(*primals), grads of sum(fn * cotangent))`` as numpy arrays."""
        import jax

        out, pullback = jax.vjp(fn, *primals)
        grads = pullback(self.from_numpy(cotangent).astype(out.dtype))
        return np.asarray(out), [np.asarray(g) for g in grads]
