"""Give any torch model learnable strides: ``diffstride.torch.convert``.

Each module that downsamples (a convolution or pooling with a stride > 1) keeps its weights and
runs at stride 1 inside a :class:`DiffStrided` wrapper, next to a spectral layer started at the
module's strides. Before the layer (``pool_first``) every convolution runs on the smaller map,
as the strided one did; after it, as the paper places it. A stride-1 module whose kernel would
shrink the map (a patchifying convolution, a 2x2 pooling) gets its input padded to keep the
size, so that the spectral layer alone decides the size, whatever the strides become.

Points whose outputs meet (a residual sum, a concatenation, a channel split's halves) must
keep equal sizes after their strides move: they share one stride parameter. They are found by
running the converted model once and watching where tensors from different points combine
(``_torch_lineage``); the same run checks the output shape, and a probe run per stride checks
that nothing downstream needs a fixed size.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffstride._options import Options
from diffstride._torch_lineage import ForwardError, evaluating, record_forward
from diffstride._validation import check_ramp, check_smoothness_factor

__all__ = ["DiffStrided", "convert", "downsampling_points"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
    nn.LPPool3d,
)
_RANKS = {
    **dict.fromkeys((nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d, nn.LPPool1d), 1),
    **dict.fromkeys((nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d), 2),
    **dict.fromkeys((nn.Conv3d, nn.MaxPool3d, nn.AvgPool3d, nn.LPPool3d), 3),
}
POOLINGS = ("diffstride", "spectral", "strided")


class DiffStrided(nn.Module):
    """A downsampling module run at stride 1, with a spectral layer doing its striding:
    ``layer(pad(pool(x)))`` when ``pool_first``, else ``pool(layer(pad(x)))``.

    ``padding`` (``F.pad`` order, last axis first) keeps the stride-1 layer from shrinking
    the map; ``padding_mode`` is ``F.pad``'s.
    """

    def __init__(
        self,
        pool: nn.Module,
        layer: nn.Module,
        *,
        pool_first: bool = True,
        padding: Sequence[int] = (),
        padding_mode: str = "constant",
    ) -> None:
        super().__init__()
        self.pool, self.layer, self.pool_first = pool, layer, bool(pool_first)
        self.padding, self.padding_mode = tuple(int(p) for p in padding), padding_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_first:
            x = self.pool(x)
        if any(self.padding):
            x = F.pad(x, self.padding, mode=self.padding_mode)
        y = self.layer(x)
        return y if self.pool_first else self.pool(y)

    def extra_repr(self) -> str:
        padding = f", padding={self.padding}" if any(self.padding) else ""
        return f"pool_first={self.pool_first}{padding}"


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * rank


def _strides_of(module: nn.Module) -> tuple[int, ...] | None:
    """The module's strides per spatial axis when it downsamples, else None."""
    if not isinstance(module, _CONVS + _POOLS):
        return None
    rank = _RANKS[type(module)] if type(module) in _RANKS else _rank_of(module)
    stride = module.stride if module.stride is not None else module.kernel_size
    strides = _tuple(stride, rank)
    return strides if any(s > 1 for s in strides) else None


def _rank_of(module: nn.Module) -> int:
    for kind, rank in _RANKS.items():
        if isinstance(module, kind):
            return rank
    raise TypeError(f"not a downsampling module: {type(module).__name__}")


def _keep_size_padding(module: nn.Module, rank: int) -> tuple[tuple[int, ...], str]:
    """``F.pad`` widths that keep the size through the stride-1 ``module``, and the mode."""
    kernel = _tuple(module.kernel_size, rank)
    dilation = _tuple(getattr(module, "dilation", 1), rank)
    own = getattr(module, "padding", 0)
    own = (0,) * rank if own in ("valid", None) else _tuple(own, rank)
    if isinstance(module, (nn.LPPool1d, nn.LPPool2d, nn.LPPool3d)):
        own = (0,) * rank
    widths: list[int] = []
    for k, d, p in zip(reversed(kernel), reversed(dilation), reversed(own), strict=True):
        missing = max(d * (k - 1) - 2 * p, 0)
        widths += [missing // 2, missing - missing // 2]
    if isinstance(module, _CONVS):
        mode = {"zeros": "constant"}.get(module.padding_mode, module.padding_mode)
    else:
        mode = "replicate"
    return tuple(widths), mode


def _at_stride_one(module: nn.Module, rank: int) -> nn.Module:
    """The module itself (it belongs to the copy), its stride set to 1."""
    if isinstance(module, _CONVS) or isinstance(module.stride, (tuple, list)):
        module.stride = (1,) * rank
    else:
        module.stride = 1
    return module


def _matches(name: str, module: nn.Module, selectors: Sequence[Any]) -> bool:
    for selector in selectors:
        if isinstance(selector, type) and isinstance(module, selector):
            return True
        if isinstance(selector, str) and (name == selector or name.startswith(selector + ".")):
            return True
    return False


def _selectors(value: Any, name: str) -> list[Any] | None:
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    for item in values:
        if not isinstance(item, (str, type)):
            raise TypeError(
                f"{name} must name modules by qualified name (str) or class (type), or be a "
                f"list of those; received {name}={value!r}"
            )
    return values


def _spectral_layer(pooling: str, rank: int, strides: tuple[int, ...], options: dict) -> nn.Module:
    from diffstride import torch as front

    initial = tuple(float(s) for s in strides)
    if pooling == "spectral":
        return getattr(front, f"FixedSpectralPooling{rank}d")(strides=initial)
    return getattr(front, f"DiffStride{rank}d")(strides=initial, **options)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _device_of(module: nn.Module, example_input: Any) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    first = example_input[0] if isinstance(example_input, (tuple, list)) else example_input
    return first.device


def _is_pool(module: nn.Module) -> bool:
    from diffstride._layers import DiffStrideMixin, FixedSpectralPoolingMixin

    return isinstance(module, (DiffStrideMixin, FixedSpectralPoolingMixin))


def _output_shapes(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        return type(output)(_output_shapes(o) for o in output)
    if isinstance(output, dict):
        return {k: _output_shapes(v) for k, v in output.items()}
    return None


def convert(
    model: nn.Module,
    example_input: Any,
    *,
    ramp: str = "inside",
    pool_first: bool = True,
    smoothness_factor: float = 4.0,
    include: Any = None,
    exclude: Any = None,
    pooling: str = "diffstride",
    strides: Sequence[Any] | None = None,
) -> nn.Module:
    """A copy of ``model`` whose downsampling is learned: every convolution
    (``Conv1d/2d/3d``, grouped and depthwise included) and pooling (``MaxPool``, ``AvgPool``,
    ``LPPool`` 1-3d) with a stride > 1 becomes its stride-1 self inside a
    :class:`DiffStrided`, next to a ``DiffStride`` of its rank started at its strides.
    ``model`` is left untouched; the copy keeps its weights, device and training mode.

    Parameters
    ----------
    model
        Any ``nn.Module`` taking channels-first inputs.
    example_input
        A batch the model accepts (a tensor, or a tuple of arguments): the copy is run on it
        to find the points that must share a stride and to check the output shape.
    ramp, smoothness_factor
        The DiffStride layers' options (``ramp="inside"``: the mask's ramp inside the crop,
        so a stride-2 layer halves the size).
    pool_first
        Put the spectral layer before the module (each convolution runs on the smaller map:
        the strided network's cost), or after it (the paper's order).
    include, exclude
        Convert only the modules named (qualified name, or a name prefix) or of the classes
        given, or all but those.
    pooling
        ``"diffstride"`` (learned strides), ``"spectral"`` (fixed spectral pooling, the
        baseline with the same placement) or ``"strided"`` (the model's own modules, their
        strides set from ``strides``: the searched baseline).
    strides
        The starting strides, one per downsampling point in forward order (a number, or one
        per axis); points that share a stride count once (see :func:`downsampling_points`).
        None: each module's own strides.

    Points whose outputs meet (residual sums, concatenations, channel splits) share one
    stride parameter, so the copy runs whatever its strides become. A module downstream that
    needs a fixed spatial size (a ``Linear`` after ``Flatten``), or one that reads a
    converted module's attributes, is a ``ValueError`` naming it: exclude the downsampling
    points above it.

    >>> import torch, torchvision
    >>> from diffstride.torch import convert
    >>> model = torchvision.models.resnet18(num_classes=10)
    >>> learned = convert(model, torch.zeros(2, 3, 32, 32))
    >>> learned(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; received {type(model).__name__}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; received pooling={pooling!r}")
    if not isinstance(pool_first, bool):
        raise TypeError(f"pool_first must be a bool; received pool_first={pool_first!r}")
    options = {
        "ramp": check_ramp(ramp),
        "smoothness_factor": check_smoothness_factor(smoothness_factor),
    }
    Options.from_kwargs(options, where="convert")
    include, exclude = _selectors(include, "include"), _selectors(exclude, "exclude")
    kind = "spectral" if pooling == "strided" else pooling
    converted, groups = _wrapped(model, example_input, kind, pool_first, options, include, exclude)
    if strides is not None:
        values = _group_strides(strides, groups, pooling)
        for group, value in zip(groups, values, strict=True):
            for name in group:
                wrapper = converted.get_submodule(name)
                rank = _rank_of(wrapper.layer)
                layer = _spectral_layer(kind, rank, _per_axis(value, rank), options)
                wrapper.pool = layer.to(_device_of(wrapper.layer, example_input))
    if pooling == "strided":
        restrided = copy.deepcopy(model)
        for group, value in zip(groups, values if strides is not None else [], strict=False):
            for name in group:
                module = restrided.get_submodule(name)
                module.stride = tuple(int(v) for v in _per_axis(value, _rank_of(module)))
        _check_shapes(model, restrided, example_input)
        return restrided
    if pooling == "diffstride":
        for group in groups:
            _share_strides(converted, group)
    _check_shapes(model, converted, example_input)
    if pooling == "diffstride":
        for group in groups:
            pools = [converted.get_submodule(name).pool for name in group]
            _record(converted, example_input, "once the strides move, the model", scale=pools)
    return converted


def downsampling_points(model: nn.Module, example_input: Any, **kwargs: Any) -> list[list[str]]:
    """The points :func:`convert` gives a stride, in forward order: each a list of the
    qualified names of the modules that share it (a residual layer's main path and
    shortcut, say). ``kwargs``: ``include``/``exclude`` as in :func:`convert`.

    >>> import torch, torchvision
    >>> from diffstride.torch import downsampling_points
    >>> model = torchvision.models.resnet18(num_classes=10)
    >>> downsampling_points(model, torch.zeros(1, 3, 32, 32))[:3]
    [['conv1'], ['maxpool'], ['layer2.0.conv1', 'layer2.0.downsample.0']]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; received {type(model).__name__}")
    include = _selectors(kwargs.pop("include", None), "include")
    exclude = _selectors(kwargs.pop("exclude", None), "exclude")
    if kwargs:
        raise TypeError(f"downsampling_points takes include and exclude; received {kwargs}")
    options = {"ramp": "inside", "smoothness_factor": 4.0}
    return _wrapped(model, example_input, "spectral", True, options, include, exclude)[1]


def _wrapped(
    model: nn.Module,
    example_input: Any,
    kind: str,
    pool_first: bool,
    options: dict[str, Any],
    include: Any,
    exclude: Any,
) -> tuple[nn.Module, list[list[str]]]:
    """A copy of ``model`` with every chosen module in a :class:`DiffStrided`, and the
    wrappers' names grouped by the points that meet, in forward order."""
    converted = copy.deepcopy(model)
    chosen = []
    for name, module in converted.named_modules():
        strides = _strides_of(module)
        if strides is None or any(_is_pool(m) for m in module.modules()):
            continue
        if include is not None and not _matches(name, module, include):
            continue
        if exclude is not None and _matches(name, module, exclude):
            continue
        if any(name.startswith(parent + ".") for parent, *_ in chosen):
            continue
        chosen.append((name, module, strides))
    for name, module, strides in chosen:
        rank = _rank_of(module)
        padding, mode = _keep_size_padding(module, rank)
        pool = _spectral_layer(kind, rank, strides, options)
        wrapper = DiffStrided(
            pool.to(_device_of(module, example_input)),
            _at_stride_one(module, rank),
            pool_first=pool_first,
            padding=padding,
            padding_mode=mode,
        )
        wrapper.train(module.training)
        _set_submodule(converted, name, wrapper)
    record = _record(converted, example_input, "the converted model")
    owners = {id(m.pool): n for n, m in converted.named_modules() if isinstance(m, DiffStrided)}
    groups = _meeting_groups(record.points, record.merges)
    return converted, [[owners[id(pool)] for pool in group] for group in groups]


def _per_axis(value: tuple, rank: int) -> tuple:
    if len(value) not in (1, rank):
        raise ValueError(f"strides must give 1 or {rank} values per point; received {value!r}")
    return value * rank if len(value) == 1 else value


def _group_strides(strides: Any, groups: list[list[str]], pooling: str) -> list[tuple]:
    """One per-axis stride tuple per group, checked (integers for strided modules)."""
    if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence):
        raise TypeError(
            f"strides must be a sequence with one stride per downsampling point; received "
            f"strides={strides!r}"
        )
    if len(strides) != len(groups):
        points = "; ".join(" + ".join(group) for group in groups)
        raise ValueError(
            f"strides must give one stride per downsampling point ({len(groups)} here: "
            f"{points}); received {len(strides)}: strides={list(strides)!r}"
        )
    values = []
    for group, value in zip(groups, strides, strict=True):
        value = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or any(
            not v >= 1 for v in value
        ):
            raise ValueError(f"strides must be numbers >= 1; received {value!r} for {group}")
        if pooling == "strided" and any(float(v) != int(v) for v in value):
            raise ValueError(
                f"strided modules need integer strides; received {value!r} for {group}"
            )
        values.append(value)
    return values


def _fault(error: ForwardError, what: str) -> ValueError:
    return ValueError(
        f"convert: {what} fails in module {error}. A module that needs a fixed spatial size "
        "(a Linear after Flatten), or that reads a converted module's attributes, cannot "
        "follow learned strides: exclude the downsampling modules above it (exclude=[...]) "
        "or use global pooling there"
    )


def _record(converted: nn.Module, example_input: Any, what: str, **kwargs: Any) -> Any:
    try:
        return record_forward(converted, example_input, _is_pool, count=False, **kwargs)
    except ForwardError as error:
        raise _fault(error, what) from error.error


def _meeting_groups(points: list[nn.Module], merges: list) -> list[list[nn.Module]]:
    """Points whose outputs meet, in groups (union-find over the recorded merges): where
    tensors from different branches combine, the last point on each branch."""
    leader = list(range(len(points)))

    def find(i: int) -> int:
        while leader[i] != i:
            leader[i] = leader[leader[i]]
            i = leader[i]
        return i

    for differing in merges:
        latest = [max(tags) for tags in differing]
        for other in latest[1:]:
            leader[find(other)] = find(latest[0])
    groups: dict[int, list[nn.Module]] = {}
    for i, point in enumerate(points):
        groups.setdefault(find(i), []).append(point)
    return list(groups.values())


def _share_strides(converted: nn.Module, group: list[str]) -> None:
    """One stride parameter for the points of ``group`` (wrapper names)."""
    group = [converted.get_submodule(name).pool for name in group]
    names = {id(m): n for n, m in converted.named_modules()}
    first = group[0]
    for layer in group[1:]:
        if tuple(first.initial_strides) != tuple(layer.initial_strides):
            raise ValueError(
                f"convert: {names[id(first)]} (strides {first.initial_strides}) and "
                f"{names[id(layer)]} (strides {layer.initial_strides}) meet downstream, so "
                "they must share one stride, but they start from different strides; exclude "
                "one of them"
            )
        layer.strides = first.strides


def _check_shapes(model: nn.Module, converted: nn.Module, example_input: Any) -> None:
    """The copy gives the original's output shapes."""
    args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    with evaluating(model):
        expected = _output_shapes(model(*args))
    try:
        with evaluating(converted):
            received = _output_shapes(converted(*args))
    except Exception as error:
        raise ValueError(f"convert: the converted model fails on example_input: {error}") from error
    if received != expected:
        raise ValueError(
            f"convert: the converted model returns shapes {received}, the original {expected}"
        )
