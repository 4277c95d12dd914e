"""diffstride_dask: a third-party diffstride backend for ``dask.array``.

Registered in the ``diffstride.backends`` entry-point group (see ``pyproject.toml``), so that
``diffstride.diffstride(dask_array, strides)`` runs the core lazily on dask. Each member:

* ``owns`` finds ``dask.array`` in ``sys.modules`` and never imports it: if dask was not
  imported, no dask array can exist, and ``import diffstride`` stays free of dask;
* ``namespace`` is array-api-compat's wrapper of ``dask.array`` (dask is not itself an Array
  API namespace: ``astype``, ``concat``, ``permute_dims``... come from the wrapper), completed
  with FFTs that first merge the chunks of the axes they transform: dask's FFTs refuse an axis
  split in chunks, and the core's crop (a ``concat`` of two slices) splits the spectrum's;
* ``stop_gradient`` is the identity: dask has no autodiff, so nothing flows back and
  ``differentiable`` keeps its default ``False`` (the suite skips the gradient checks);
* ``concrete`` computes its argument: the core calls it on a few numbers only (strides,
  thresholds, kept counts), never on the input, so the graph of ``x`` is not computed;
* ``from_numpy`` makes one chunk; ``test_inputs`` gives the suite the same values in several
  chunkings (one chunk, the batch split, every other axis split, so a spatial axis whatever
  the data_format) to show that the chunking never changes the result.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

from diffstride import Backend

__all__ = ["DaskBackend"]


_TRANSFORMS = ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft", "fftn", "ifftn", "rfftn", "irfftn")


class _Completed:
    """``base`` with some of its members replaced."""

    def __init__(self, base: Any, **members: Any) -> None:
        self.__dict__.update(members, _base=base)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def _on_whole_axes(transform: Any, n_dimensional: bool) -> Any:
    """``transform`` run after merging the chunks of the axes it acts on (the standard passes
    them as keywords: ``axes``, all by default, for the n-d ones; ``axis``, -1, for the rest)."""

    @functools.wraps(transform)
    def wrapped(x: Any, **kwargs: Any) -> Any:
        axes = (kwargs.get("axes") or range(x.ndim)) if n_dimensional else [kwargs.get("axis", -1)]
        return transform(x.rechunk(dict.fromkeys([a % x.ndim for a in axes], -1)), **kwargs)

    return wrapped


@functools.cache
def _namespace() -> Any:
    import array_api_compat.dask.array as xp

    fft = {name: _on_whole_axes(getattr(xp.fft, name), name.endswith("n")) for name in _TRANSFORMS}
    return _Completed(xp, fft=_Completed(xp.fft, **fft))


class DaskBackend(Backend):
    name = "dask"
    module = "dask"

    def owns(self, x: Any) -> bool:
        array = sys.modules.get("dask.array")
        return array is not None and isinstance(x, array.Array)

    def namespace(self) -> Any:
        return _namespace()

    def stop_gradient(self, x: Any) -> Any:
        return x

    def concrete(self, x: Any) -> np.ndarray:
        return np.asarray(x.compute() if hasattr(x, "compute") else x)

    # Testing hooks, used by diffstride_conformance.
    def from_numpy(self, array: np.ndarray) -> Any:
        import dask.array as da

        return da.from_array(array, chunks=-1)

    def test_inputs(self, array: np.ndarray) -> list[Any]:
        import dask.array as da

        halves = tuple(max(1, n // 2) for n in array.shape)
        layouts = [array.shape, halves[:1] + array.shape[1:], array.shape[:1] + halves[1:]]
        return [da.from_array(array, chunks=chunks) for chunks in layouts]
