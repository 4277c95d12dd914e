"""What a torch model's forward pass does at its downsampling points, read off one run.

``convert`` and the MAC counter of ``diffstride.torch`` both need to know, for any model,
which downsampling layers lie upstream of each operation: ``convert`` to find the points whose
outputs meet (a residual sum, a concatenation) and so must share one stride, the counter to
know which strides an operation's cost follows. Neither can be read from the module tree (a
``forward`` adds and concatenates in plain Python), and ``torch.fx`` does not trace many
real models. So one eager pass runs under a dispatch mode that tags every tensor with the set
of downsampling layers it descends from: an operation's outputs get the union of its inputs'
sets, a downsampling layer adds itself.

Multiply-accumulates are counted by torch's own ``FlopCounterMode`` (its formulas, its list of
operations); each count is logged with the tags of the operation's inputs. Operations inside
the spectral layers themselves are counted by ``FlopCounterMode`` but logged apart: the MACs
of a model are those of its own operations.

A *probe* scales the output of chosen layers (nearest-neighbour, by 2 on each spatial axis):
comparing an operation's count with and without it gives the power of that layer's output
area the operation's cost follows (a convolution 1, a dense layer after global pooling 0, a
token-mixing product 2), and a probe that fails names the module that needs a fixed size.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["ForwardError", "ForwardRecord", "record_forward"]

_NONE: frozenset[int] = frozenset()


@dataclasses.dataclass
class ForwardRecord:
    """One forward pass. ``points`` are the watched layers in the order they first ran;
    tags are indices into it."""

    points: list[nn.Module]
    #: ``(flops, tags of the inputs)`` of every counted operation outside the watched layers.
    operations: list[tuple[int, frozenset[int]]]
    #: Per merging operation, the tags of its inputs that not all of them share.
    merges: list[list[frozenset[int]]]
    #: Per watched layer (index), ``(input spatial sizes, output spatial sizes)`` of its call.
    sizes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]]
    batch: int

    def macs(self) -> int:
        """Multiply-accumulates per example (a FLOP counted by torch is half a MAC)."""
        return round(sum(flops for flops, _ in self.operations) / 2 / self.batch)


class ForwardError(RuntimeError):
    """The model raised inside ``module_name`` (the innermost module running)."""

    def __init__(self, module_name: str, module: nn.Module, error: BaseException) -> None:
        super().__init__(f"{module_name or 'the model'} ({type(module).__name__}): {error}")
        self.module_name, self.module, self.error = module_name, module, error


class _Lineage(TorchDispatchMode):
    """Tags each tensor with the watched layers upstream of it (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.inside = 0  # > 0 while a watched layer runs: its operations are its own
        self.merges: list[list[frozenset[int]]] = []

    def tags_of(self, values: Iterable[Any]) -> list[frozenset[int]]:
        return [self.tags.get(v, _NONE) for v in values if isinstance(v, torch.Tensor)]

    def tag(self, values: Any, tags: frozenset[int]) -> None:
        for value in tree_leaves(values):
            if isinstance(value, torch.Tensor):
                self.tags[value] = tags

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        out = func(*args, **(kwargs or {}))
        if self.inside:
            return out
        tags = self.tags_of(tree_leaves((args, kwargs)))
        union = frozenset().union(*tags) if tags else _NONE
        if len(tags) > 1:
            shared = frozenset.intersection(*tags)
            differing = [t - shared for t in tags if t - shared]
            if len(differing) > 1:
                self.merges.append(differing)
        if union:
            self.tag(out, union)
        return out


def _scaled(y: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    for axis in axes:
        y = y.repeat_interleave(2, dim=axis)
    return y


@contextmanager
def _innermost_module(model: nn.Module) -> Iterator[list[nn.Module]]:
    """The stack of modules running now (the innermost last), kept by global hooks."""
    stack: list[nn.Module] = []
    members = {id(m) for m in model.modules()}

    def enter(module: nn.Module, args: Any) -> None:
        if id(module) in members:
            stack.append(module)

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        if stack and stack[-1] is module:
            stack.pop()

    hooks = [
        nn.modules.module.register_module_forward_pre_hook(enter),
        nn.modules.module.register_module_forward_hook(leave),
    ]
    try:
        yield stack
    finally:
        for hook in hooks:
            hook.remove()


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for a pass that must change nothing (batch-norm statistics,
    the strides' in-place projection), every module's mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes:
            module.train(training)


def _as_args(example_input: Any) -> tuple[Any, ...]:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def batch_size(example_input: Any) -> int:
    """The batch size of an example input (a tensor, or a tuple whose first item is one)."""
    first = _as_args(example_input)[0] if _as_args(example_input) else None
    if not isinstance(first, torch.Tensor) or first.ndim < 2:
        raise TypeError(
            "example_input must be a batched tensor (or a tuple of arguments whose first "
            f"is one); received {type(first).__name__}"
            + (f" of shape {tuple(first.shape)}" if isinstance(first, torch.Tensor) else "")
        )
    if first.shape[0] == 0:
        raise ValueError("example_input must hold at least one example; received batch 0")
    return int(first.shape[0])


def record_forward(
    model: nn.Module,
    example_input: Any,
    watched: Callable[[nn.Module], bool],
    *,
    scale: Iterable[nn.Module] = (),
    count: bool = True,
) -> ForwardRecord:
    """Run ``model(*example_input)`` once in eval mode without autograd and record it.

    ``watched`` picks the downsampling layers to tag by; the outputs of those in ``scale``
    are doubled along their spatial axes. A failure inside the model is raised as
    :class:`ForwardError` naming the innermost module that was running.
    """
    args = _as_args(example_input)
    batch = batch_size(example_input)
    names = {id(m): name for name, m in model.named_modules()}
    points = [m for m in model.modules() if watched(m)]
    index = {id(m): i for i, m in enumerate(points)}
    scaled = {id(m) for m in scale}
    lineage = _Lineage()
    sizes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    operations: list[tuple[int, frozenset[int]]] = []

    def before(module: nn.Module, inputs: Any) -> None:
        lineage.inside += 1

    def after(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        lineage.inside -= 1
        axes = module._axes(output.ndim)
        sizes.setdefault(
            index[id(module)],
            (tuple(inputs[0].shape[a] for a in axes), tuple(output.shape[a] for a in axes)),
        )
        if id(module) in scaled:
            output = _scaled(output, axes)
        lineage.tag(output, frozenset().union(*lineage.tags_of(inputs[:1])) | {index[id(module)]})
        return output

    hooks = list(
        itertools.chain.from_iterable(
            (m.register_forward_pre_hook(before), m.register_forward_hook(after)) for m in points
        )
    )
    counter = _logging_counter(lineage, operations) if count else None
    try:
        with evaluating(model), _innermost_module(model) as stack:
            try:
                with counter or _nothing(), lineage:
                    model(*args)
            except Exception as error:
                if not stack:
                    raise
                raise ForwardError(names.get(id(stack[-1]), ""), stack[-1], error) from error
    finally:
        for hook in hooks:
            hook.remove()
    return ForwardRecord(points, operations, lineage.merges, sizes, batch)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _flop_counter_mode() -> Any:
    """torch's ``FlopCounterMode`` class; without triton (every CPU build) its module warns
    at import that triton kernels cannot be counted, which concerns no model here."""
    import logging

    log = logging.getLogger("torch.utils.flop_counter")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.flop_counter import FlopCounterMode
    finally:
        log.setLevel(level)
    return FlopCounterMode


def _logging_counter(lineage: _Lineage, log: list[tuple[int, frozenset[int]]]) -> Any:
    """A ``FlopCounterMode`` whose formulas also log each count with its inputs' tags."""
    counter = _flop_counter_mode()(display=False)

    def logged(formula: Callable[..., int]) -> Callable[..., int]:
        def count(*args: Any, **kwargs: Any) -> int:
            flops = formula(*args, **kwargs)
            if not lineage.inside:
                inputs = (args, {k: v for k, v in kwargs.items() if k != "out_val"})
                tags = lineage.tags_of(tree_leaves(inputs))
                log.append((int(flops), frozenset().union(*tags) if tags else _NONE))
            return flops

        return count

    counter.flop_registry = {op: logged(f) for op, f in counter.flop_registry.items()}
    return counter
