"""Project test set-up: JAX in float64 mode so float64 checks run (see the conformance conftest)."""

import importlib.util

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)


def pytest_collection_modifyitems(items: list) -> None:
    """The slow tail (over ~30 s each on 2 cores): JAX compiles every primitive per shape in
    eager mode, and these checks run dozens of shapes. They still run in CI."""
    import pytest

    slow = (
        "jax-fft-check_golden_gradients",
        "jax-matmul-check_golden_gradients",
        "jax-fft-check_random_configurations",
        "jax-matmul-check_random_configurations",
    )
    for item in items:
        if any(name in item.nodeid for name in slow):
            item.add_marker(pytest.mark.slow)
