"""JAX front-end: pure functions that compose with ``jax.grad`` and ``jax.jit``.

``DiffStride`` is a parameter-free description of the layer whose ``init``/``apply``/
``project`` are pure functions of a parameter pytree, so it composes with optax.

Under ``jax.jit`` the crop size cannot come from traced strides: pass a static
``output_size=(h, w)`` (``diffstride.output_size`` computes it, and ``functools.partial`` or
``static_argnames`` keeps it static).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffstride import _api
from diffstride._layers import DiffStrideMixin, diffstride_init
from diffstride._options import document_options

__all__ = ["DiffStride", "diffstride", "spectral_pooling"]

diffstride, spectral_pooling = _api.bind("jax")


class DiffStride(DiffStrideMixin):
    """DiffStride as pure functions over a parameter pytree ``{"strides": array}``, for 1, 2 or
    3 spatial axes (as many as ``strides`` has entries; any with ``shared_stride``).

    ``init()`` makes the parameters, ``apply(params, x, output_size=None)`` runs the layer
    (pass ``output_size`` under ``jax.jit``; :meth:`output_size` computes it), and
    ``project(params, input_shape)`` applies the original's projection
    ``S <- clip(max(S, N / (N - R)), lower, upper)`` (with ``ramp="inside"``, only the clip);
    call it after each optimizer step. The layer holds no state: the parameters are yours.

    Parameters
    ----------
    strides
        Initial strides, each >= 1, one per spatial axis.
    trainable
        Whether ``apply`` lets gradients reach ``params["strides"]``.
    shared_stride
        One stride for every axis (equal initial strides required).
    {options}

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from diffstride.jax import DiffStride
    >>> layer = DiffStride(strides=(2.0, 2.0))
    >>> params = layer.init()
    >>> x = jnp.ones((4, 3, 32, 32))
    >>> layer.apply(params, x).shape
    (4, 3, 24, 24)
    >>> grads = jax.grad(lambda p: layer.apply(p, x).sum())(params)
    >>> grads["strides"].shape
    (2,)
    >>> audio = DiffStride(strides=(4.0,))
    >>> audio.apply(audio.init(), jnp.ones((1, 1, 64))).shape
    (1, 1, 24)
    """

    __init__ = diffstride_init()

    def init(self) -> dict[str, Any]:
        """Fresh parameters ``{"strides": float32 array}`` (one entry per axis, or one)."""
        return {"strides": jnp.asarray(self.initial_value, dtype=jnp.float32)}

    def apply(
        self, params: dict[str, Any], x: Any, output_size: Sequence[int] | None = None
    ) -> Any:
        strides = params["strides"]
        if not self.trainable:
            strides = jax.lax.stop_gradient(strides)
        backend = _api.get_backend("jax")
        return _api.diffstride_on(
            backend,
            x,
            strides,
            self.options,
            output_size=output_size,
            sizes=self._checked_sizes(x, backend),
            check_values=True,
            name=self._stride_name(),
        )

    __call__ = apply

    def project(self, params: dict[str, Any], input_shape: Sequence[int]) -> dict[str, Any]:
        """Parameters after the original's projection for an input of ``input_shape``."""
        sizes = self._check_input_shape(tuple(input_shape))
        return {**params, "strides": self._projected(params["strides"], sizes, clip=True, xp=jnp)}

    def current_strides(self, params: dict[str, Any] | None = None) -> tuple[float, ...]:
        """The strides in ``params`` (by default the initial ones), one per axis."""
        values = self.initial_value if params is None else params["strides"]
        return tuple(float(v) for v in np.asarray(values).reshape(-1))

    def output_size(
        self, input_size: Sequence[int], params: dict[str, Any] | None = None
    ) -> tuple[int, ...]:
        """The spatial sizes :meth:`apply` returns for ``input_size`` with ``params``' strides
        (by default the initial ones): the static ``output_size`` to pass under ``jax.jit``."""
        return self._output_size_with(input_size, self.current_strides(params))

    def __repr__(self) -> str:
        return f"DiffStride({self._extra_repr()})"


DiffStride.__doc__ = document_options(DiffStride.__doc__)
