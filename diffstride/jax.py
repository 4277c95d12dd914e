"""JAX front-end: pure functions that compose with ``jax.grad`` and ``jax.jit``.

Under ``jax.jit`` the crop size cannot come from traced strides: pass a static
``output_size=(h, w)`` (``diffstride.output_size`` computes it, and ``functools.partial`` or
``static_argnames`` keeps it static).
"""

from __future__ import annotations

from diffstride import _api

__all__ = ["diffstride", "spectral_pooling"]

diffstride, spectral_pooling = _api.bind("jax")
