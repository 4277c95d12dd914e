"""The paper's complexity regularizer (section 3), written once against the Array API.

``J(S) = sum_i prod_{j <= i} 1 / (S_h^j * S_w^j)`` over the DiffStride layers in forward
order. Layer ``i`` reduces the area of its input by about ``S_h^i * S_w^i``, so the product
is the fraction of the input's area that reaches layer ``i + 1``; the cost of what follows each
layer scales with that area, so ``J`` is, up to per-layer constants, the compute the strides
leave behind. Adding ``lambda * J`` to the loss trades accuracy for compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["complexity_penalty_of"]


def complexity_penalty_of(strides: Sequence[Any], *, xp: Any) -> Any:
    """``J`` for a list of stride arrays (shape (2,), or (1,) for a shared stride)."""
    if len(strides) == 0:
        raise ValueError("complexity_penalty needs at least one DiffStride layer; received none")
    total = None
    reach = None
    for s in strides:
        area = s[0] * s[0] if s.shape[0] == 1 else s[0] * s[1]
        reach = 1.0 / area if reach is None else reach / area
        total = reach if total is None else total + reach
    return total
