"""diffstride: learnable strides for every major deep-learning framework.

``import diffstride`` imports no framework. The math is written once against the Array API
standard (``diffstride._agnostic``); framework adapters are plugins (entry-point group
``diffstride.backends``); the front-ends ``diffstride.numpy``, ``.torch``, ``.tf`` and ``.jax``
add layers and autodiff-friendly functions for each framework.
"""

from diffstride._api import diffstride, spectral_pooling
from diffstride._backend import Backend, Tuning
from diffstride._complexity import complexity_penalty_of as _penalty
from diffstride._options import Options
from diffstride._registry import (
    available_backends,
    get_backend,
    register_backend,
    registered_backends,
)
from diffstride._sizes import output_size, spectral_pooling_output_size

__all__ = [
    "Backend",
    "Options",
    "Tuning",
    "available_backends",
    "complexity_penalty",
    "diffstride",
    "get_backend",
    "output_size",
    "register_backend",
    "registered_backends",
    "spectral_pooling",
    "spectral_pooling_output_size",
]

__version__ = "0.1.0"


def complexity_penalty(strides: object) -> object:
    """The paper's ``J(S) = sum_i prod_{j<=i} 1 / (S_h^j S_w^j)`` for a list of strides in
    forward order: pairs of numbers (a float), or arrays of one library (an array, with
    gradients in that library).

    >>> import diffstride
    >>> diffstride.complexity_penalty([(2.0, 2.0), (2.0, 2.0)])
    0.3125
    """
    import numpy as np

    from diffstride._registry import backend_for

    strides = list(strides)  # type: ignore[call-overload]
    if strides and all(isinstance(s, (tuple, list)) for s in strides):
        arrays = [np.asarray(s, dtype=np.float64) for s in strides]
        return float(_penalty(arrays, xp=np))
    xp = backend_for(strides[0]).namespace() if strides else np
    return _penalty(strides, xp=xp)
