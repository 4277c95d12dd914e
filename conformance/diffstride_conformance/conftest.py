"""pytest set-up for ``pytest --pyargs diffstride_conformance``: JAX in float64 mode, so that
the float64 checks run (JAX is float32-only unless told otherwise)."""

import importlib.util

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)
