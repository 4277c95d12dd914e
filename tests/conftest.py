"""Project test set-up: JAX in float64 mode so float64 checks run (see the conformance conftest)."""

import importlib.util

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)
