"""One host read of a network's strides after an optimizer step, not one per layer.

A torch DiffStride layer decides its crop from a host copy of its strides, which it reads
again only where the parameter changed since (``_torch_tracing.value_key``): after each
optimizer step, every layer of a network read once. On a GPU a read waits until the device
has run everything queued before it, so reads spread through a forward pass stall the host
once per layer, and the device idles while the host catches up. Here the first layer that
reads also reads every other layer whose strides changed since its last read, in one read
(a concatenation, then one copy to the host), and those find their copy current.

Only layers whose last read ran on the same thread, device, dtype and (on CUDA) current
stream are read together, as in one training loop: a tensor used on another stream or
thread may be written there with no ordering against this stream, so such a layer reads its
own strides where it is called.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np
import torch

from diffstride._layers import FixedCrops

__all__ = ["host_copy", "read_together"]

#: The layers that have read their strides, and where (``_scope``) each last did.
_LAST_READ: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _scope(strides: torch.Tensor) -> tuple[Any, ...]:
    device = strides.device
    stream = torch.cuda.current_stream(device).stream_id if device.type == "cuda" else None
    return (threading.get_ident(), device, strides.dtype, stream)


def host_copy(values: np.ndarray, key: Any) -> FixedCrops:
    """A layer's host copy of stride ``values`` read at parameter version ``key``."""
    return FixedCrops(values, key=key, dtype="float64" if values.dtype == np.float64 else "float32")


def read_together(layer: Any, concrete: Any) -> np.ndarray | None:
    """``concrete(layer.strides)``, read with the strides of every other layer of the same
    scope whose copy is out of date, which each keep theirs (``_refresh_copy``), where
    finite: a layer refuses its bad strides itself, where it is called."""
    from diffstride._torch_tracing import value_key

    strides = layer.strides
    here = _scope(strides)
    with _LOCK:
        _LAST_READ[layer] = here
        others = [other for other, scope in _LAST_READ.items() if scope == here]
    stale = []
    for other in others:
        key = value_key(other.strides)  # before the read: a later write shows as a change
        if other is not layer and key is not None and key != other.fixed_crops.key:
            stale.append((other, key))
    if not stale:
        return concrete(strides)
    tensors = [strides, *(other.strides for other, _ in stale)]
    values = concrete(torch.cat([t.detach().reshape(-1) for t in tensors]))
    pieces = np.split(values, np.cumsum([t.numel() for t in tensors])[:-1])
    for (other, key), piece in zip(stale, pieces[1:], strict=True):
        if np.all(np.isfinite(piece)):
            other._refresh_copy(piece, key)
    return pieces[0].reshape(tuple(strides.shape))
