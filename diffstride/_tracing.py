"""Workarounds for frameworks that trace Python into a graph in which a value read splits it.

Under ``torch.compile`` a read of the strides' values (to decide the crop) breaks the graph,
and dynamo traced the numpy steps of the decision one by one, splitting the graph at each. The
decision therefore runs as one call outside the tracer (``Backend.untraced``): one break,
however much numpy it runs. The wrappers are made outside any trace, because one made while
tracing broke the graph itself: when a front-end is imported, and (where an adapter could not
make them then) at an eager call, which asks for the wrapper it will need once compiled.
Frameworks that cannot read values at all under their tracer (jax ``jit``) need no
workaround: there, a static ``output_size`` is required.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from diffstride._backend import Backend

__all__ = ["outside_tracer", "prepare"]


def prepare(backend: Backend, functions: Iterable[Callable[..., Any]]) -> None:
    """Make the untraced wrappers of ``functions`` now, outside any trace."""
    for fn in functions:
        backend.untraced(fn)


def outside_tracer(backend: Backend, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, run outside the framework's tracer while it is tracing. The wrapper is asked
    for eagerly too, so that an adapter that had to defer it makes it before a trace does."""
    untraced = backend.untraced(fn)
    return untraced if backend.tracing() else fn
