"""TensorFlow: the small namespace the core uses, built on ``tf.math`` and ``tf.signal``.

TensorFlow has no Array API namespace (``tf.experimental.numpy`` has no ``fft`` and no
``__array_namespace__``; array-api-compat does not cover it), so this adapter supplies just the
functions ``diffstride._agnostic`` calls, with the standard's signatures.

channels_last: ``tf.signal.rfft``/``rfft2d``/``rfft3d`` act on the innermost axes only, so
for channels_last the FFTs transpose the spatial axes innermost and back. The mask is applied
between them in the original layout. (A transpose-free path is the matmul formulation.)

The GEMM path's matrix-times-stack products get their own gradient: TensorFlow's sums the
broadcast matrix's per-slice gradients with a ``Sum`` over the stack, which oneDNN runs far
slower than the products themselves; a GEMV with ones sums them instead. That gradient is
the strides' (the matrices carry the mask), so it is paid in every training step.

Graph mode: inside ``tf.function`` the stride variable has no concrete value, so the crop size
is computed in the graph (``dynamic_shapes = True``); slices, ``concat``, ``range`` and
``irfft2d`` accept scalar tensors as sizes, so a DiffStride can also follow another one whose
output size is only known at run time (``size(x, axis)`` reads it).
"""

from __future__ import annotations

import functools
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np

from diffstride import Backend, Tuning


def _innermost(axes: tuple[int, ...], ndim: int) -> tuple[list[int] | None, list[int] | None]:
    """Permutations that bring ``axes`` innermost and back (None when already there)."""
    axes = tuple(a % ndim for a in axes)
    if axes == tuple(range(ndim - len(axes), ndim)):
        return None, None
    forward = [a for a in range(ndim) if a not in axes] + list(axes)
    backward = [forward.index(a) for a in range(ndim)]
    return forward, backward


def _make_namespace() -> SimpleNamespace:
    import tensorflow as tf

    def along(fn: Any, z: Any, axis: int) -> Any:
        """A transform of the innermost axis, applied along ``axis``."""
        forward, backward = _innermost((axis,), len(z.shape))
        return fn(z) if forward is None else tf.transpose(fn(tf.transpose(z, forward)), backward)

    def rfft3d(x: Any) -> Any:
        # TensorFlow has no gradient for RFFT3D: the last two axes, then the first.
        return along(tf.signal.fft, tf.signal.rfft2d(x), len(x.shape) - 3)

    def irfft3d(z: Any, fft_length: Any) -> Any:
        return tf.signal.irfft2d(along(tf.signal.ifft, z, len(z.shape) - 3), fft_length[1:])

    transforms = {
        1: (tf.signal.rfft, tf.signal.irfft),
        2: (tf.signal.rfft2d, tf.signal.irfft2d),
        3: (rfft3d, irfft3d),
    }

    def with_static_shape(result: Any, like: Any, axes: tuple[int, ...], sizes: Any) -> Any:
        # The transforms forget every static size when an inner size is unknown; the other
        # axes keep their input's (the GEMM path, which may follow, reshapes with them).
        shape = list(like.shape)
        for axis, size in zip(axes, sizes, strict=True):
            shape[axis] = size if isinstance(size, int) else None
        result.set_shape(shape)
        return result

    def innermost(fn: Any, x: Any, axes: tuple[int, ...], *args: Any) -> Any:
        forward, backward = _innermost(axes, len(x.shape))
        if forward is None:
            return fn(x, *args)
        return tf.transpose(fn(tf.transpose(x, forward), *args), backward)

    def rfftn(x: Any, axes: tuple[int, ...] = (-2, -1)) -> Any:
        result = innermost(transforms[len(axes)][0], x, axes)
        sizes = [x.shape[a] for a in axes]
        sizes[-1] = None if sizes[-1] is None else sizes[-1] // 2 + 1
        return with_static_shape(result, x, axes, sizes)

    def irfftn(z: Any, s: tuple[Any, ...], axes: tuple[int, ...] = (-2, -1)) -> Any:
        length = tf.stack([tf.cast(n, tf.int32) for n in s])
        result = innermost(transforms[len(axes)][1], z, axes, length)
        return with_static_shape(result, z, axes, s)

    @tf.custom_gradient
    def matrix_times_stack(matrix: Any, stack: Any) -> Any:
        def gradient(grad: Any) -> tuple[Any, Any]:
            # TF's own gradient of the broadcast matrix sums the per-slice products with a
            # Sum over the stack, which oneDNN runs slowly; one GEMV with ones sums them.
            products = tf.reshape(tf.matmul(grad, stack, transpose_b=True), [tf.shape(grad)[0], -1])
            ones = tf.ones([1, tf.shape(products)[0]], dtype=products.dtype)
            summed = tf.reshape(tf.matmul(ones, products), tf.shape(matrix))
            return summed, tf.matmul(matrix, grad, transpose_a=True)

        return tf.matmul(matrix, stack), gradient

    def matmul(a: Any, b: Any) -> Any:
        # TF 2.21's CPU BatchMatMulV2 corrupts the heap when a rank-4 operand with a size-1
        # batch dim is broadcast against a matrix; fold the batch dims into one instead.
        for batched, matrix, left in ((a, b, True), (b, a, False)):
            if len(batched.shape) > 3 and len(matrix.shape) == 2:
                shape = tf.shape(batched)
                folded = tf.reshape(batched, tf.concat([[-1], shape[-2:]], 0))
                product = tf.matmul(folded, matrix) if left else tf.matmul(matrix, folded)
                return tf.reshape(product, tf.concat([shape[:-2], tf.shape(product)[-2:]], 0))
        if len(a.shape) == 2 and len(b.shape) == 3:  # the GEMM path's stacked steps
            return matrix_times_stack(a, b)
        return tf.matmul(a, b)

    def asarray(value: Any, dtype: Any = None, device: Any = None) -> Any:
        del device  # placement follows TensorFlow's device scope
        return tf.convert_to_tensor(value, dtype=dtype)

    def astype(x: Any, dtype: Any) -> Any:
        # tf.cast's gradient from complex to real warns on every step; tf.complex does not.
        if tf.as_dtype(dtype).is_complex and not x.dtype.is_complex:
            return tf.complex(x, tf.zeros_like(x))
        return tf.cast(x, dtype)

    def isdtype(dtype: Any, kind: str) -> bool:
        dtype = tf.as_dtype(dtype)
        return {
            "real floating": dtype.is_floating,
            "complex floating": dtype.is_complex,
            "integral": dtype.is_integer,
            "bool": dtype == tf.bool,
        }[kind]

    return SimpleNamespace(
        float32=tf.float32,
        float64=tf.float64,
        complex64=tf.complex64,
        complex128=tf.complex128,
        int32=tf.int32,
        asarray=asarray,
        arange=lambda stop, dtype=None, device=None: tf.range(stop, dtype=dtype),
        minimum=tf.minimum,
        remainder=tf.math.floormod,
        cos=tf.math.cos,
        sin=tf.math.sin,
        stack=lambda arrays, axis=0: tf.stack(list(arrays), axis=axis),
        isfinite=tf.math.is_finite,
        matrix_transpose=tf.linalg.matrix_transpose,
        matmul=matmul,
        permute_dims=lambda x, axes: tf.transpose(x, axes),
        zeros=lambda shape, dtype=None, device=None: tf.zeros(shape, dtype=dtype),
        astype=astype,
        concat=lambda arrays, axis=0: tf.concat(list(arrays), axis=axis),
        reshape=lambda x, shape: tf.reshape(x, shape),
        where=tf.where,
        sum=lambda x, axis=None: tf.reduce_sum(x, axis=axis),
        finfo=lambda dtype: SimpleNamespace(max=tf.as_dtype(dtype).max),
        isdtype=isdtype,
        fft=SimpleNamespace(rfftn=rfftn, irfftn=irfftn),
    )


class TensorFlowBackend(Backend):
    name = "tensorflow"
    module = "tensorflow"
    differentiable = True
    dynamic_shapes = True
    #: BatchMatMulV2 broadcasts a matrix against a stack without copying it, so the GEMM path
    #: needs no transposes (see ``diffstride._matmul.apply_separable``); ``method="auto"``
    #: takes the GEMMs up to 128 per axis: they beat TF's FFTs at every size measured (on
    #: the CPU; not where they would run in reduced precision, see ``exact_gemms``).
    tuning = Tuning(matmul_layouts=("stacked", "stacked"), auto_matmul_max_sizes=(128, 128))

    def __init__(self) -> None:
        self._namespace: SimpleNamespace | None = None

    def owns(self, x: Any) -> bool:
        tf = sys.modules.get("tensorflow")
        return tf is not None and isinstance(x, (tf.Tensor, tf.Variable))

    def namespace(self) -> SimpleNamespace:
        if self._namespace is None:
            self._namespace = _make_namespace()
        return self._namespace

    def stop_gradient(self, x: Any) -> Any:
        import tensorflow as tf

        return tf.stop_gradient(x)

    def size(self, x: Any, axis: int) -> Any:
        import tensorflow as tf

        return tf.shape(x)[axis]

    def cond(self, predicate: Any, if_true: Any, if_false: Any) -> Any:
        """One of two traced computations, chosen at run time by a 0-d boolean tensor: where
        the spatial sizes are symbolic (a DiffStride after another one, in a Keras graph),
        ``method="auto"`` picks the GEMMs or the FFTs by the sizes the graph sees."""
        import tensorflow as tf

        return tf.cond(predicate, if_true, if_false)

    def exact_gemms(self, x: Any) -> bool:
        """Not for float32 where a visible accelerator lowers float32 products: a GPU with
        TensorFloat-32 while it is on (TensorFlow's default), or a TPU. Where ``x`` lies does
        not say where its GEMMs run (TensorFlow places an op on a GPU and copies its inputs
        there), so any such device counts. Under ``tf.function`` the answer is taken when the
        graph is traced."""
        import tensorflow as tf

        if x.dtype != tf.float32:
            return True
        if tf.config.get_visible_devices("TPU"):
            return False
        tensor_float_32 = tf.config.experimental.tensor_float_32_execution_enabled()
        return not (tensor_float_32 and _tensor_float_32_gpus())

    def concrete(self, x: Any) -> np.ndarray | None:
        import tensorflow as tf

        if tf.executing_eagerly():
            return np.asarray(x)
        value = tf.get_static_value(x)  # None for variables and graph tensors
        return None if value is None else np.asarray(value)

    # Testing hooks, used by diffstride_conformance.
    def from_numpy(self, array: np.ndarray) -> Any:
        import tensorflow as tf

        return tf.constant(array)

    def vjp(self, fn: Any, primals: list[Any], cotangent: np.ndarray) -> Any:
        """``(fn(*primals), grads of sum(fn * cotangent))`` as numpy arrays."""
        import tensorflow as tf

        with tf.GradientTape() as tape:
            for primal in primals:
                tape.watch(primal)
            out = fn(*primals)
        grads = tape.gradient(out, primals, output_gradients=tf.constant(cotangent, out.dtype))
        return out.numpy(), [
            np.zeros(p.shape, p.dtype.as_numpy_dtype) if g is None else g.numpy()
            for p, g in zip(primals, grads, strict=False)
        ]


@functools.cache
def _tensor_float_32_gpus() -> bool:
    """Whether a visible GPU runs float32 products in TensorFloat-32 when allowed: NVIDIA's
    of compute capability 8.0 and later, and, on the safe side, any whose capability
    TensorFlow does not report. Visible devices are fixed once TensorFlow has started."""
    import tensorflow as tf

    for gpu in tf.config.get_visible_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability is None or tuple(capability) >= (8, 0):
            return True
    return False
