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

from diffstride import _api
from diffstride._layers import DiffStrideMixin

__all__ = ["DiffStride", "diffstride", "spectral_pooling"]

diffstride, spectral_pooling = _api.bind("jax")


class DiffStride(DiffStrideMixin):
    """DiffStride as pure functions over a parameter pytree ``{"strides": array}``.

    ``init()`` makes the parameters, ``apply(params, x, output_size=None)`` runs the layer
    (pass ``output_size`` under ``jax.jit``; :meth:`output_size` computes it), and
    ``project(params, input_shape)`` applies the original's projection
    ``S <- clip(max(S, N / (N - R)), lower, upper)`` (with ``ramp="inside"``, only the clip);
    call it after each optimizer step.

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
    """

    def __init__(
        self,
        strides: Any = (2.0, 2.0),
        smoothness_factor: float = 4.0,
        cropping: bool = True,
        trainable: bool = True,
        shared_stride: bool = False,
        lower_limit_stride: float | None = None,
        upper_limit_stride: float | None = None,
        data_format: str = "channels_first",
        method: str = "auto",
        ramp: str = "outside",
    ) -> None:
        self._init_diffstride(
            strides,
            smoothness_factor,
            cropping,
            shared_stride,
            lower_limit_stride,
            upper_limit_stride,
            data_format,
            method,
            ramp,
        )
        self.trainable = bool(trainable)
        self._params: dict[str, Any] | None = None

    def init(self) -> dict[str, Any]:
        """Fresh parameters ``{"strides": float32 array of shape (2,) or (1,)}``."""
        self._params = {"strides": jnp.asarray(self.initial_value, dtype=jnp.float32)}
        return self._params

    def apply(
        self, params: dict[str, Any], x: Any, output_size: Sequence[int] | None = None
    ) -> Any:
        strides = params["strides"]
        if not self.trainable:
            strides = jax.lax.stop_gradient(strides)
        return _api.diffstride_on(
            _api.get_backend("jax"),
            x,
            strides,
            output_size=output_size,
            check_values=False,
            **self._functional_kwargs(),
        )

    __call__ = apply

    def project(self, params: dict[str, Any], input_shape: Sequence[int]) -> dict[str, Any]:
        """Parameters after the original's projection for an input of ``input_shape``."""
        sizes = self._check_input_shape(tuple(input_shape))
        projected = self._projected(params["strides"], sizes, clip=True, xp=jnp)
        self._params = {**params, "strides": projected}
        return self._params

    def _stride_values(self) -> Any:
        return self.initial_value if self._params is None else self._params["strides"]

    def __repr__(self) -> str:
        return f"DiffStride({self._extra_repr()})"
