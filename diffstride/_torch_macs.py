"""Multiply-accumulates of any torch model, and their smooth function of the strides.

``macs`` is ``FlopCounterMode``'s count of one forward pass, halved, per example, without
the operations inside the spectral layers themselves. ``MacsEstimator`` generalises the
paper's complexity term ``J`` to any graph: each counted operation's MACs, times, for every
DiffStride stride upstream of it, ``(reach(S) / reach(S_now)) ** degree``, where
``reach(S) = prod_axes 1 / S`` and ``degree`` is the power of that layer's output area the
operation's cost follows (measured once by a probe, see ``_torch_lineage``). At the current
strides the estimate *is* the count; its gradient is ``-degree * cost / S`` per axis, never
positive. Layers that share a stride parameter are one variable.

During training the estimator reads the sizes the training step's own forward pass saw (one
hook per DiffStride layer) and rescales each term by how much its upstream layers' area
ratios moved since the probe: no second forward pass and no read of the stride values. The
powers hold near the probe only: where a map sits at a layer's minimum size, or a branch's
sizes round, an operation's cost stops following the area. So once some layer's area ratio
has moved more than ``refresh_ratio`` from the probe's, the estimator probes again at the
current strides (``1 + groups`` passes of the example input). A probe runs in Python dispatch
and can cost several training steps (more so on a GPU, where the steps are fast), so probes
are spaced to take at most ``refresh_share`` of the wall time: the overhead stays bounded
whatever the network and device, and the estimate may lag the count while the strides move
fast.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from diffstride._complexity import budget_penalty_of
from diffstride._layers import DiffStrideMixin, FixedSpectralPoolingMixin, SpatialPoolingMixin
from diffstride._torch_lineage import ForwardError, ForwardRecord, record_forward
from diffstride._validation import check_macs_budget

__all__ = ["MacsEstimator", "macs", "macs_estimate", "macs_penalty"]


def _is_spectral_layer(module: nn.Module) -> bool:
    return isinstance(module, (DiffStrideMixin, FixedSpectralPoolingMixin, SpatialPoolingMixin))


def _is_diffstride(module: nn.Module) -> bool:
    return isinstance(module, DiffStrideMixin)


def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; received {type(model).__name__}")
    return model


def _record(model: nn.Module, example_input: Any, **kwargs: Any) -> ForwardRecord:
    try:
        return record_forward(_check_model(model), example_input, _is_spectral_layer, **kwargs)
    except ForwardError as fault:
        raise ValueError(
            f"the model fails on example_input in {fault}; give an input the model accepts"
        ) from fault.error


def macs(model: nn.Module, example_input: Any) -> int:
    """Multiply-accumulates per example of one forward pass of ``model`` on
    ``example_input`` at the current strides: its convolutions, linear layers and products
    (``matmul``, ``bmm``, ``einsum``, attention), as ``torch.utils.flop_counter`` counts
    them (FLOPs / 2 / batch). The DiffStride, spectral and spatial pooling layers' own
    operations are left out. The pass runs in eval mode without autograd and changes nothing.

    >>> import torch
    >>> from diffstride.torch import macs
    >>> macs(torch.nn.Conv2d(3, 8, 3, padding=1), torch.zeros(1, 3, 16, 16))
    55296
    """
    return _record(model, example_input).macs()


def _area(sizes: Sequence[int]) -> int:
    return math.prod(sizes)


def _reach(strides: torch.Tensor, rank: int) -> torch.Tensor:
    """``prod_axes 1 / S`` (a shared one-element stride on every one of ``rank`` axes)."""
    product = strides.prod() if strides.numel() > 1 else strides.reshape(()) ** rank
    return 1.0 / product


class MacsEstimator:
    """The MACs of ``model`` as a differentiable function of its DiffStride strides.

    Built once from ``example_input`` (``1 + groups`` forward passes: the count and one probe
    per stride parameter); then each call returns a 0-dim tensor, equal to :func:`macs` at the
    strides of the latest forward pass, whose gradient flows to every stride parameter. Call
    it after a training step's forward pass to add a MAC budget without a second pass. When a
    layer's area ratio has moved more than ``refresh_ratio`` from the latest probe's, the call
    probes again first (:meth:`refresh`) unless probing would take more than
    ``refresh_share`` of the time since the latest probe (None: no such cap); ``macs`` is the
    count at the latest probe.

    >>> import torch
    >>> from diffstride.torch import DiffStride, MacsEstimator
    >>> model = torch.nn.Sequential(DiffStride(strides=2.0, ramp="inside"),
    ...                             torch.nn.Conv2d(3, 8, 3, padding=1))
    >>> estimate = MacsEstimator(model, torch.zeros(1, 3, 16, 16))
    >>> float(estimate()) == estimate.macs
    True
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: Any,
        *,
        refresh_ratio: float = 1.1,
        refresh_share: float | None = 0.05,
    ) -> None:
        if isinstance(refresh_ratio, bool) or not (
            isinstance(refresh_ratio, (int, float)) and refresh_ratio > 1
        ):
            raise ValueError(
                f"refresh_ratio must be a number > 1; received refresh_ratio={refresh_ratio!r}"
            )
        if refresh_share is not None and (
            isinstance(refresh_share, bool)
            or not isinstance(refresh_share, (int, float))
            or not 0 < refresh_share <= 1
        ):
            raise ValueError(
                f"refresh_share must be None or in (0, 1]; received refresh_share={refresh_share!r}"
            )
        self._model, self._example = model, example_input
        self._refresh_ratio, self._refresh_share = refresh_ratio, refresh_share
        self._hooks: list[Any] = []
        self.refresh()

    def refresh(self) -> None:
        """Count and probe again at the current strides (``1 + groups`` forward passes). If
        a pass fails, the estimator is left as it was."""
        started = time.perf_counter()
        model, example_input = self._model, self._example
        if isinstance(example_input, torch.Tensor):  # follow the model to its device
            anchor = next(itertools.chain(model.parameters(), model.buffers()), None)
            if anchor is not None and anchor.device != example_input.device:
                example_input = self._example = example_input.to(anchor.device)
        record = _record(model, example_input)
        members_of: dict[int, list[int]] = defaultdict(list)  # stride parameter -> points
        for i, module in enumerate(record.points):
            if _is_diffstride(module):
                members_of[id(module.strides)].append(i)
        groups = [(record.points[members[0]], members) for members in members_of.values()]
        degrees = [self._degrees(model, example_input, record, members) for _, members in groups]
        terms: dict[tuple[float, ...], float] = defaultdict(float)
        for op, (flops, _) in enumerate(record.operations):
            terms[tuple(d[op] for d in degrees)] += flops / 2 / record.batch
        self.remove()
        self.macs = record.macs()
        self._layers = [m for m in record.points if _is_diffstride(m)]
        self._groups = groups
        self._terms = [(cost, powers) for powers, cost in terms.items() if cost]
        self._planned = [self._area_ratio(record.sizes, members) for _, members in groups]
        self._latest = list(self._planned)
        # The strides each group's latest forward pass ran with (a device copy, no host read).
        self._seen = [layer.strides.detach().clone() for layer, _ in groups]
        self._hooks = [
            record.points[members[0]].register_forward_hook(self._watch(g))
            for g, (_, members) in enumerate(groups)
        ]
        self._refreshed_at = time.perf_counter()
        self._refresh_seconds = self._refreshed_at - started

    @staticmethod
    def _area_ratio(sizes: dict, members: list[int]) -> float:
        seen = sizes.get(members[0])
        return 1.0 if seen is None else _area(seen[1]) / _area(seen[0])

    @staticmethod
    def _degrees(
        model: nn.Module, example_input: Any, record: ForwardRecord, members: list[int]
    ) -> list[float]:
        """Per operation, the power of the group's output area its cost follows."""
        rank = len(record.sizes[members[0]][1]) if members[0] in record.sizes else 2
        probe = _record(model, example_input, scale=[record.points[i] for i in members])
        if len(probe.operations) != len(record.operations):
            # The model's operations depend on the sizes: fall back to one power per layer
            # the operation descends from.
            return [float(bool(set(members) & tags)) for _, tags in record.operations]
        degrees = []
        for (base, _), (scaled, _) in zip(record.operations, probe.operations, strict=True):
            power = math.log2(scaled / base) / rank if base and scaled else 0.0
            degrees.append(max(0.0, round(2 * power) / 2))
        return degrees

    def _watch(self, group: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            axes = module._axes(output.ndim)
            before = _area([inputs[0].shape[a] for a in axes])
            self._latest[group] = _area([output.shape[a] for a in axes]) / before
            self._seen[group] = module.strides.detach().clone()

        return hook

    def _stale(self) -> bool:
        moved = any(
            max(latest / planned, planned / latest) > self._refresh_ratio
            for latest, planned in zip(self._latest, self._planned, strict=True)
        )
        if not moved or self._refresh_share is None:
            return moved
        since = time.perf_counter() - self._refreshed_at
        return self._refresh_seconds <= self._refresh_share * since

    def __call__(self) -> torch.Tensor:
        """The estimate at the current stride parameters (a 0-dim float32 tensor)."""
        if self._stale():
            self.refresh()
        factors = []
        for (layer, _), planned, latest, seen in zip(
            self._groups, self._planned, self._latest, self._seen, strict=True
        ):
            rank = layer.spatial_rank or 1
            factors.append(_reach(layer.strides, rank) / _reach(seen, rank) * (latest / planned))
        total: Any = 0.0
        for cost, powers in self._terms:
            term: Any = cost
            for factor, power in zip(factors, powers, strict=True):
                if power:
                    term = term * factor**power
            total = total + term
        if not isinstance(total, torch.Tensor):
            device = self._layers[0].strides.device if self._layers else None
            total = torch.tensor(float(total), device=device)
        return total.to(torch.float32)

    def penalty(self, budget: float) -> torch.Tensor:
        """``max(estimate / budget - 1, 0)`` at the current strides (see :func:`macs_penalty`)."""
        return budget_penalty_of(self(), budget, xp=torch, name="budget")

    def remove(self) -> None:
        """Detach the hooks the estimator keeps on the model's DiffStride layers."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def macs_estimate(model: nn.Module, example_input: Any) -> torch.Tensor:
    """:func:`macs` as a 0-dim tensor differentiable w.r.t. every DiffStride stride (see
    :class:`MacsEstimator`; in a training loop, build one estimator and call it per step)."""
    estimator = MacsEstimator(model, example_input)
    try:
        return estimator()
    finally:
        estimator.remove()


def macs_penalty(model: nn.Module, example_input: Any, budget: float) -> torch.Tensor:
    """``max(macs_estimate / budget - 1, 0)``: zero under ``budget`` (MACs per example), the
    relative excess above it, differentiable w.r.t. the strides."""
    check_macs_budget(budget, "budget")  # before the passes the estimate runs
    return budget_penalty_of(macs_estimate(model, example_input), budget, xp=torch, name="budget")
