"""The crop decision: which bins of the spectrum a DiffStride call keeps.

The crop is a :class:`~diffstride._agnostic.Window`, decided in one of four ways, cheapest
first: from a static ``output_size`` (no value read, so it traces under ``jax.jit``), as the
full spectrum (``cropping=False``), from the concrete thresholds (one device read of the
strides and thresholds together, then the ramp's "mask > 0" count in numpy, in the input's
precision, bit-identical to the same count in the framework), or, where values are symbolic
and the framework slices with symbolic sizes (TensorFlow graph mode), counted in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from diffstride import _agnostic, _sizes, _tracing
from diffstride._backend import Backend
from diffstride._options import Options
from diffstride._validation import check_stride_values

__all__ = ["check_read_strides", "decide", "read_window"]


def _static(sizes: Sequence[Any]) -> bool:
    return all(isinstance(n, int) for n in sizes)


def check_read_strides(values: Any, rank: int, check: bool | str, name: str) -> None:
    """Strides read from an array: ``check=True``, finite and >= 1 (they were given, or
    stored and loaded); ``"finite"``, only finite (a training layer's parameter, which an
    optimizer step may leave below its bound until the layer clips it); ``False``, nothing."""
    floats = [float(v) for v in np.asarray(values).reshape(-1)]
    if check == "finite":
        if not all(np.isfinite(floats)):
            raise ValueError(
                f"{name} must be finite (a diverged step?); received {name}={tuple(floats)}"
            )
    elif check:
        check_stride_values(floats, rank=rank, name=name)


def read_window(
    backend: Backend,
    strides: Any,
    thresholds: Sequence[Any],
    sizes: tuple[int, ...],
    options: Options,
    check_values: bool | str,
    name: str,
) -> _agnostic.Window | None:
    """The window from the concrete thresholds, read with the strides in one device read;
    the strides are checked on the way (``name`` is how the error calls them). ``None``
    where the values are symbolic."""
    xp = backend.namespace()
    values = backend.concrete(xp.concat([strides, xp.stack(thresholds)], axis=0))
    if values is None:
        return None
    values = np.asarray(values)
    count = strides.shape[0]
    check_read_strides(values[:count], len(sizes), check_values, name)
    return _sizes.window_from_thresholds(
        [values[count + axis, ...] for axis in range(len(sizes))],
        sizes,
        options.smoothness_factor,
        inside=options.inside,
    )


def decide(
    backend: Backend,
    sizes: tuple[Any, ...],
    thresholds: Sequence[Any],
    strides: Any,
    options: Options,
    output_size: Any,
    *,
    check_values: bool | str,
    name: str,
) -> _agnostic.Window:
    """The crop of one call (see the module docstring)."""
    if output_size is not None:
        # Eager, the values are still checked; a tracer (jit, torch.compile) reads nothing.
        if check_values and not backend.tracing():
            values = backend.concrete(strides)
            if values is not None:
                check_read_strides(values, len(sizes), check_values, name)
        if not _static(sizes):
            raise ValueError(
                f"output_size needs static spatial sizes; received output_size={output_size!r} "
                "for an input whose spatial sizes are only known at run time"
            )
        return _sizes.window_for_size(sizes, output_size)
    if not options.cropping:
        return _sizes.full_window(sizes)
    if _static(sizes):
        read = _tracing.outside_tracer(backend, read_window)
        window = read(backend, strides, thresholds, sizes, options, check_values, name)
        if window is not None:
            return window
    if backend.dynamic_shapes:
        xp = backend.namespace()
        counts = _agnostic.kept_counts(
            thresholds, sizes, options.smoothness_factor, inside=options.inside, xp=xp
        )
        return _sizes.window_for_counts(counts)
    raise ValueError(
        "strides are traced (for instance under jax.jit) or batched (torch.func.vmap over "
        "the strides), so the crop size is unknown: pass a static output_size (one size per "
        "spatial axis); diffstride.output_size(input_size, strides, ...) computes it. "
        "Received output_size=None"
    )
