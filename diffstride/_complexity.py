"""The paper's complexity regularizer (section 3), written once against the Array API.

``J(S) = sum_i prod_{j <= i} 1 / (S_h^j * S_w^j)`` over the DiffStride layers in forward
order (for k spatial axes, the product of the k strides). Layer ``i`` reduces the area of its
input by about ``S_h^i * S_w^i``, so the product is the fraction of the input's area that
reaches layer ``i + 1``; the cost of what follows each
layer scales with that area, so ``J`` is, up to per-layer constants, the compute the strides
leave behind. Adding ``lambda * J`` to the loss trades accuracy for compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffstride._validation import check_macs_budget

__all__ = ["budget_penalty_of", "complexity_penalty_of", "weighted_reach_of"]


def complexity_penalty_of(
    strides: Sequence[Any], *, xp: Any, ranks: Sequence[int] | None = None
) -> Any:
    """``J`` for a list of stride arrays (one stride per spatial axis, or a shared one used
    on ``ranks[i]`` axes; 2 where not given)."""
    del xp  # the arithmetic is the arrays' own operators
    if len(strides) == 0:
        raise ValueError("complexity_penalty needs at least one DiffStride layer; received none")
    return weighted_reach_of(strides, [1.0] * len(strides), ranks=ranks)


def _area_factor(s: Any, rank: int) -> Any:
    """The product of a layer's strides over its axes (a shared stride ``rank`` times)."""
    count = rank if s.shape[0] == 1 else s.shape[0]
    product = s[0]
    for axis in range(1, count):
        product = product * s[0 if s.shape[0] == 1 else axis]
    return product


def weighted_reach_of(
    strides: Sequence[Any | None], weights: Sequence[float], ranks: Sequence[int] | None = None
) -> Any:
    """``sum_i weights[i] * prod_{j <= i} 1 / (S_h^j S_w^j)`` over layers in forward order; a
    layer whose stride is None (fixed) keeps the product as it is. With unit weights and no
    fixed layer it is ``J``; with each layer's MACs per unit of reach as weights it estimates
    the MACs the strides leave (``diffstride.models``' ``macs_estimate``). The arithmetic is
    the stride arrays' own operators, so the result is differentiable in their framework."""
    total: Any = 0.0
    reach: Any = 1.0
    ranks = [2] * len(strides) if ranks is None else list(ranks)
    for s, weight, rank in zip(strides, weights, ranks, strict=True):
        if s is not None:
            reach = reach / _area_factor(s, rank)
        total = total + reach * weight
    return total


def budget_penalty_of(
    estimate: Any, macs_budget: float, *, xp: Any, name: str = "macs_budget"
) -> Any:
    """``max(estimate / budget - 1, 0)``: zero under the budget, the relative excess above
    (``name``: the budget argument's name in the caller's signature, for errors)."""
    excess = estimate / check_macs_budget(macs_budget, name) - 1.0
    return xp.where(excess > 0, excess, excess - excess)  # +0.0 under the budget
