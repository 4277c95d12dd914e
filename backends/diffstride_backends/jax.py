"""JAX: its own ``jax.numpy`` is an Array API namespace (``jnp.fft`` included).

channels_last: ``jnp.fft.rfftn`` takes any ``axes``, so the core's ``axes=(1, 2)`` runs as is.
Concrete values: under ``jax.grad`` the strides are tracers whose values are known, so they
are read through ``stop_gradient``; under ``jax.jit`` they are not, and ``concrete`` returns
None, which makes the caller ask for a static ``output_size``.

``method="auto"`` takes the GEMMs up to 64 (DiffStride) and 256 (fixed pooling) per spatial
axis: XLA's CPU FFTs run about half as fast as torch's, and several times slower on an axis
that is not innermost, while its GEMMs run at the machine's rate (docs/benchmarks.md). The
GEMMs take the permuted layout for channels_first and the stacked one for channels_last,
where the permuted layout had XLA transpose the input and its gradient around the products.

No ``custom_vjp``: registering the core's hand-written VJP with ``jax.custom_vjp`` gained
little under jit (XLA already fuses what autodiff emits; see docs/benchmarks.md), and a
``custom_vjp`` function refuses forward mode (``jax.jvp``, ``jax.jacfwd``).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from diffstride import Backend


class _Namespace:
    """``jax.numpy`` with two changes.

    Its array constructors ignore ``device``. The core creates small arrays (indices,
    constants, DFT factors) on its input's device. For an input sharded over several devices
    that either committed them to one device, which an eager call then refused to combine with
    the sharded input, or laid them out with the input's sharding. Uncommitted arrays follow
    the computation's placement, sharded or not, eager or under ``jit``.

    Its ``matmul`` of a matrix and a stack broadcasts the matrix over the stack first.
    ``jnp.matmul`` lowers that product to one dot whose free dimensions lie on both sides of
    the contracted one, which XLA transposes into place; a batched dot reads the stack as it
    lies, which is what the GEMM path's stacked layout needs.
    """

    def __init__(self, namespace: Any) -> None:
        self._namespace = namespace

    def __getattr__(self, name: str) -> Any:
        return getattr(self._namespace, name)

    def asarray(self, obj: Any, dtype: Any = None, device: Any = None, copy: Any = None) -> Any:
        del device
        return self._namespace.asarray(obj, dtype=dtype, copy=copy)

    def arange(self, *args: Any, device: Any = None, **kwargs: Any) -> Any:
        del device
        return self._namespace.arange(*args, **kwargs)

    def zeros(self, shape: Any, dtype: Any = None, device: Any = None) -> Any:
        del device
        return self._namespace.zeros(shape, dtype=dtype)

    def matmul(self, a: Any, b: Any) -> Any:
        if a.ndim == 2 and b.ndim > 2:
            a = self._namespace.broadcast_to(a, (*b.shape[:-2], *a.shape))
        return self._namespace.matmul(a, b)


class JaxBackend(Backend):
    name = "jax"
    module = "jax"
    differentiable = True
    matmul_layouts = ("permuted", "stacked")
    auto_matmul_max_sizes = (64, 256)

    def owns(self, x: Any) -> bool:
        jax = sys.modules.get("jax")
        return jax is not None and isinstance(x, jax.Array)

    def namespace(self) -> Any:
        import jax.numpy

        return _Namespace(jax.numpy)

    def stop_gradient(self, x: Any) -> Any:
        import jax

        return jax.lax.stop_gradient(x)

    def concrete(self, x: Any) -> np.ndarray | None:
        import jax

        try:
            return np.asarray(jax.lax.stop_gradient(x))
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            return None

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
