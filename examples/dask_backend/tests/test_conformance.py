"""The dask backend, held to diffstride's conformance suite as a third party holds its own."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
from diffstride_conformance import parametrize_with_checks

import diffstride


@parametrize_with_checks(["dask"])
def test_dask(backend: Any, check: Any) -> None:
    check(backend)


def test_diffstride_dispatches_to_dask() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 12)).astype(np.float32)
    assert type(diffstride.get_backend("dask")).__module__ == "diffstride_dask"
    for chunks in [-1, (1, 3, 8, 6)]:
        y = diffstride.diffstride(da.from_array(x, chunks=chunks), (2.0, 2.0))
        assert isinstance(y, da.Array)
        expected = diffstride.diffstride(x, (2.0, 2.0))
        assert y.dtype == expected.dtype
        np.testing.assert_allclose(y.compute(), expected, rtol=1e-5, atol=1e-6)


def test_input_stays_lazy() -> None:
    """Only the strides are computed: no block of ``x`` until the result is."""
    blocks: list[tuple[int, ...]] = []

    def record(block: np.ndarray) -> np.ndarray:
        blocks.append(block.shape)
        return block

    x = da.from_array(np.ones((2, 3, 16, 12), np.float32), chunks=(1, 3, 8, 6))
    x = x.map_blocks(record, dtype=np.float32, meta=np.empty((0,) * 4, np.float32))
    for method in ("fft", "matmul"):
        y = diffstride.diffstride(x, (2.0, 2.0), method=method)
    assert blocks == []
    y.compute()
    assert set(blocks) == {(1, 3, 8, 6)}
