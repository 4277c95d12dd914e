"""diffstride: learnable strides for every major deep-learning framework.

``import diffstride`` imports no framework. The math is written once against the Array API
standard (``diffstride._agnostic``); framework adapters are plugins (entry-point group
``diffstride.backends``); the front-ends ``diffstride.numpy``, ``.torch``, ``.tf`` and ``.jax``
add layers and autodiff-friendly functions for each framework.
"""

from diffstride._api import diffstride, spectral_pooling
from diffstride._registry import available_backends, get_backend, registered_backends
from diffstride._sizes import output_size, spectral_pooling_output_size

__all__ = [
    "available_backends",
    "diffstride",
    "get_backend",
    "output_size",
    "registered_backends",
    "spectral_pooling",
    "spectral_pooling_output_size",
]

__version__ = "0.1.0"
