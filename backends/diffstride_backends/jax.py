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

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from diffstride import Backend, Tuning


class _Namespace:
    """``jax.numpy`` with four changes.

    Its array constructors ignore ``device``. The core creates small arrays (indices,
    constants, DFT factors) on its input's device. For an input sharded over several devices
    that either committed them to one device, which an eager call then refused to combine with
    the sharded input, or laid them out with the input's sharding. Uncommitted arrays follow
    the computation's placement, sharded or not, eager or under ``jit``.

    Its ``matmul`` of a matrix and a stack broadcasts the matrix over the stack first.
    ``jnp.matmul`` lowers that product to one dot whose free dimensions lie on both sides of
    the contracted one, which XLA transposes into place; a batched dot reads the stack as it
    lies, which is what the GEMM path's stacked layout needs.

    Its ``matmul`` runs at ``Precision.HIGHEST``. jax's default lets a GPU compute float32
    products in TensorFloat-32 (about three significant digits) and a TPU in bfloat16: the
    GEMM path would then compute another map than the FFTs, and ``method="auto"``, which picks
    a path for speed only, would change the layer's values and the strides' gradient with the
    input's shape. On a CPU the precision changes nothing.

    Its ``reshape`` and that broadcast name the result's sharding where the input is sharded
    over explicit mesh axes (``jax.make_mesh``'s default axis type in recent jax): jax makes
    the sharding part of an array's type and refuses a reshape that splits a sharded axis (the
    GEMM path merges the batch into its rows and splits it back) or a batched dot of a
    replicated and a sharded stack, unless told. The sharding named keeps every device's block
    where it is; an axis whose blocks a reshape would cut (channels sharded on the GEMM path)
    is gathered first.
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

    def reshape(self, x: Any, shape: Any, copy: Any = None) -> Any:
        found = _explicit_sharding(x)
        if found is None:
            return self._namespace.reshape(x, shape, copy=copy)
        mesh, spec = found
        kept, out = _reshaped_spec(tuple(x.shape), spec, tuple(shape), mesh)
        if kept != spec:  # an axis whose blocks the new shape splits: gathered first
            import jax

            x = jax.sharding.reshard(x, _named_sharding(mesh, kept))
        return self._namespace.reshape(x, shape, copy=copy, out_sharding=_named_sharding(mesh, out))

    def matmul(self, a: Any, b: Any) -> Any:
        import jax

        if a.ndim == 2 and b.ndim > 2:
            shape = (*b.shape[:-2], *a.shape)
            found = _explicit_sharding(b)
            if found is None:
                a = self._namespace.broadcast_to(a, shape)
            else:  # the stack's sharding on the batch dimensions, the matrix whole
                mesh, spec = found
                if not _traced(a):  # eager: the matrix is on one device, the stack on many
                    a = jax.device_put(a, _named_sharding(mesh, ()))
                out = _named_sharding(mesh, (*spec[:-2], None, None))
                a = self._namespace.broadcast_to(a, shape, out_sharding=out)
        return self._namespace.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _explicit_sharding(x: Any) -> tuple[Any, tuple[Any, ...]] | None:
    """``(mesh, spec)`` of ``x``'s explicit sharding (one entry per axis), or None where no
    axis is explicitly sharded (one device, or a mesh of automatic axes)."""
    import jax

    typeof = getattr(jax, "typeof", None)  # jax >= 0.6
    sharding = getattr(typeof(x), "sharding", None) if typeof is not None else None
    spec = getattr(sharding, "spec", None)
    if spec is None or all(entry is None for entry in spec):
        return None
    mesh = sharding.mesh
    if not _traced(x):  # eager: the devices too, for arrays that have none yet
        mesh = getattr(x.sharding, "mesh", mesh)
    return mesh, (*spec, *(None,) * (len(x.shape) - len(spec)))


def _traced(x: Any) -> bool:
    import jax

    return isinstance(x, jax.core.Tracer)


def _named_sharding(mesh: Any, spec: Sequence[Any]) -> Any:
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec(*spec))


def _reshaped_spec(
    old: tuple[int, ...], spec: tuple[Any, ...], shape: tuple[int, ...], mesh: Any
) -> tuple[tuple[Any, ...], list[Any]]:
    """``(kept, out)``: the input's sharding without the axes a reshape to ``shape`` would
    cut across blocks, and the output's sharding, which moves no data from ``kept``.

    An axis split into ``k`` blocks stays in place as ``k`` blocks of the new axis that
    starts at the same offset in the flat array, if ``k`` divides that axis."""
    total = math.prod(old)
    if -1 in shape:
        known = math.prod(n for n in shape if n != -1)
        inferred = total // known if known else 0
        shape = tuple(inferred if n == -1 else n for n in shape)
    starts = {}
    for j in reversed(range(len(shape))):
        if shape[j] != 1:  # of the axes at one offset, the first one longer than 1
            starts[math.prod(shape[:j])] = j
    kept, out = list(spec), [None] * len(shape)
    for i, names in enumerate(spec):
        if names is None:
            continue
        blocks = math.prod(
            mesh.shape[name] for name in (names if isinstance(names, tuple) else (names,))
        )
        j = starts.get(math.prod(old[:i]))
        if j is None or old[i] % blocks or shape[j] % blocks or out[j] is not None:
            kept[i] = None
        else:
            out[j] = names
    return tuple(kept), out


class JaxBackend(Backend):
    name = "jax"
    module = "jax"
    differentiable = True
    tuning = Tuning(
        matmul_layouts=("permuted", "stacked"),
        auto_matmul_max_sizes=(64, 256),
        auto_matmul_max_volume=(32768, 0),
        auto_matmul_min_channels=(0.0, 0.5),
    )

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
