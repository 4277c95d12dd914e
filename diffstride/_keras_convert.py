"""Bring your own network: put DiffStride into a Keras 3 model, and count what it costs.

:func:`convert` copies a functional or Sequential model (``keras.applications`` included) and
replaces each strided convolution or pooling layer by its stride-1 self plus a DiffStride layer
that starts at the layer's strides. Why it is built as it is:

- The copy is made by Keras itself, ``keras.models.clone_model`` with a ``clone_function``
  (stride-1 clones) and a ``call_function`` (the DiffStride calls around them), so every layer
  and operation of the graph is rebuilt the way Keras rebuilds it; the weights are copied after,
  and the original keeps its own layers and weights. A Sequential model has no graph to call
  through, and no merge, so it is rebuilt as a new Sequential.
- Tensors that meet in a merge (the two paths of a residual block, a concatenation) must keep
  equal sizes while the strides learn, so the downsampling points that make them differ share
  ONE DiffStride instance, called at each place (where two of them pool the same tensor first,
  the one output is reused). The points are found by a static walk of the original graph: each
  tensor carries the set of points upstream of it, and at a merge the points by which its
  inputs differ are joined (union-find). Anything else (a chain of two points facing one, a
  fixed-stride path facing a learned one, a flattened size feeding a fixed-size layer) cannot
  follow the strides, and is refused before anything is built, naming the layer.
- Costs are counted from shapes, not by profiling: :func:`macs` walks the graph again with
  each layer's ``compute_output_spec``, so a DiffStride layer reports the size its current
  strides give (as its forward pass does), not the size cached when the model was built.
  :func:`macs_estimate` is the smooth relaxation of that step function around a reference
  point: each layer's MACs times, for each DiffStride layer upstream, its reach ``1 / prod S``
  relative to the reach at the reference (``_complexity.weighted_reach_of``). At the reference
  it equals :func:`macs`; away from it, it moves with the strides as the compute does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers as kl

from diffstride._complexity import _area_factor, budget_penalty_of, weighted_reach_of
from diffstride._validation import (
    channel_axis,
    check_ramp,
    check_smoothness_factor,
)
from diffstride.keras import (
    DiffStride1D,
    DiffStride2D,
    DiffStride3D,
    FixedSpectralPooling1D,
    FixedSpectralPooling2D,
    FixedSpectralPooling3D,
    _DiffStride,
)

__all__ = ["MacsReference", "convert", "macs", "macs_estimate", "macs_penalty", "macs_reference"]

#: Layers whose strides :func:`convert` learns.
_DOWNSAMPLING = (
    kl.Conv1D,
    kl.Conv2D,
    kl.Conv3D,
    kl.DepthwiseConv1D,
    kl.DepthwiseConv2D,
    kl.SeparableConv1D,
    kl.SeparableConv2D,
    kl.MaxPooling1D,
    kl.MaxPooling2D,
    kl.MaxPooling3D,
    kl.AveragePooling1D,
    kl.AveragePooling2D,
    kl.AveragePooling3D,
)
#: Their outputs no longer depend on the spatial sizes.
_GLOBAL_POOLING = (
    kl.GlobalAveragePooling1D,
    kl.GlobalAveragePooling2D,
    kl.GlobalAveragePooling3D,
    kl.GlobalMaxPooling1D,
    kl.GlobalMaxPooling2D,
    kl.GlobalMaxPooling3D,
)
#: Their outputs fold the spatial sizes into the feature axis.
_FLATTENING = (kl.Flatten, kl.Reshape)
_ZERO_PADDING = (kl.ZeroPadding1D, kl.ZeroPadding2D, kl.ZeroPadding3D)
_SPECTRAL_LAYERS = {
    "diffstride": {1: DiffStride1D, 2: DiffStride2D, 3: DiffStride3D},
    "spectral": {1: FixedSpectralPooling1D, 2: FixedSpectralPooling2D, 3: FixedSpectralPooling3D},
}


def _describe(op: Any) -> str:
    return f"{type(op).__name__} {op.name!r}"


def _graph(model: Any, what: str = "model") -> Any:
    """The functional graph of a functional or built Sequential model."""
    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:
            raise ValueError(
                f"{what} {model.name!r} is a Sequential model without an input shape; start it "
                "with keras.Input(shape) (or build it) so that its graph exists"
            )
        return model._functional
    if not isinstance(model, keras.Model) or getattr(model, "_nodes_by_depth", None) is None:
        raise TypeError(
            f"{what} must be a functional or Sequential keras.Model; received "
            f"{what}={type(model).__name__}"
        )
    return model


def _nodes(graph: Any) -> list[Any]:
    """The nodes of a functional graph in the order Keras runs them (deepest first)."""
    return [
        node
        for depth in sorted(graph._nodes_by_depth, reverse=True)
        for node in graph._nodes_by_depth[depth]
        if node.operation is not None and not node.is_input
    ]


def _merged(dependencies: list[frozenset | None]) -> frozenset | None:
    known = [d for d in dependencies if d is not None]
    return frozenset().union(*known) if known else None


def _after(op: Any, points: frozenset | None, outputs: Sequence[Any]) -> frozenset | None:
    """What a node's outputs depend on, given the union over its inputs: nothing after
    global pooling or another reduction to ``(batch, features)``."""
    if isinstance(op, _GLOBAL_POOLING):
        return None
    if isinstance(op, _FLATTENING) or points is None:
        return points
    return None if all(len(t.shape) <= 2 for t in outputs) else points


# -- convert ------------------------------------------------------------------------------


def _as_selector(value: Any, name: str, layer_names: set[str]) -> tuple[Any, ...] | None:
    """``include``/``exclude``: None, or layer names and layer classes."""
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple, set)) else [value]
    for item in items:
        if not isinstance(item, (str, type)):
            raise TypeError(
                f"{name} takes layer names (str) and layer classes (type), or a list of them; "
                f"received {name}={value!r}"
            )
        if isinstance(item, str) and item not in layer_names:
            raise ValueError(f"{name} names no layer of the model: {item!r} (in {name}={value!r})")
    return tuple(items)


def _matches(layer: Any, selector: tuple[Any, ...]) -> bool:
    return any(
        layer.name == item if isinstance(item, str) else isinstance(layer, item)
        for item in selector
    )


def _is_downsampling(layer: Any) -> bool:
    return isinstance(layer, _DOWNSAMPLING) and any(s > 1 for s in layer.strides)


class _Points:
    """The downsampling points of a model and the groups that must share one stride."""

    def __init__(self, graph: Any, selected: dict[int, Any]) -> None:
        self.layers = selected
        self.parent = {key: key for key in selected}
        #: The ZeroPadding layer that pads only for a point (keras.applications' strided
        #: "valid" layers): pooling before it keeps the sizes of a "same" layer.
        self.padding: dict[int, Any] = {}
        self._walk(graph)

    def find(self, key: int) -> int:
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def _walk(self, graph: Any) -> None:
        points: dict[int, frozenset | None] = {id(t): frozenset() for t in graph.inputs}
        flattened: dict[int, str | None] = {id(t): None for t in graph.inputs}
        nodes = _nodes(graph)
        uses = Counter(id(t) for node in nodes for t in node.input_tensors)
        uses.update(id(t) for t in graph.outputs)
        for node in nodes:
            op = node.operation
            inputs = [id(t) for t in node.input_tensors]
            if isinstance(op, keras.Model) and any(
                id(layer) in self.layers for layer in op._flatten_layers(include_self=False)
            ):
                raise ValueError(
                    f"convert does not enter nested models: {_describe(op)} holds downsampling "
                    "layers; convert it on its own first, or exclude= them"
                )
            flat = next((flattened[i] for i in inputs if flattened[i]), None)
            if flat and isinstance(op, kl.Layer) and op.weights:
                raise ValueError(
                    f"{_describe(op)} has a fixed input size, but it follows {flat}, whose output "
                    "size follows the learned strides: use global pooling before it (e.g. "
                    "GlobalAveragePooling2D instead of Flatten), or exclude= the downsampling "
                    "layers upstream"
                )
            dependencies = [points[i] for i in inputs]
            self._tie(op, [d for d in dependencies if d is not None])
            after = _merged(dependencies)
            if id(op) in self.layers:
                after = (after or frozenset()) | {id(op)}
                producer = node.input_tensors[0]._keras_history.operation
                if (
                    isinstance(producer, _ZERO_PADDING)
                    and uses[id(node.input_tensors[0])] == 1
                    and len(producer._inbound_nodes) == 1
                    and producer.data_format == op.data_format
                ):
                    self.padding[id(op)] = producer
            after = _after(op, after, node.outputs)
            if isinstance(op, _FLATTENING) and after:
                if isinstance(op, kl.Reshape) and -1 not in op.target_shape:
                    raise ValueError(
                        f"{_describe(op)} reshapes to the fixed shape {op.target_shape}, but its "
                        "input size follows the learned strides: use global pooling before it, "
                        "or exclude= the downsampling layers upstream"
                    )
                flat = flat or _describe(op)
            for t in node.outputs:
                points[id(t)], flattened[id(t)] = after, flat

    def _tie(self, op: Any, dependencies: list[frozenset]) -> None:
        """Join the points by which the inputs of a merge differ (they must keep equal sizes)."""
        roots = [frozenset(self.find(p) for p in d) for d in dependencies]
        if len(set(roots)) < 2:
            return
        common = frozenset.intersection(*roots)
        differences = [r - common for r in roots]
        if any(len(d) != 1 for d in differences):
            names = [sorted(self.layers[p].name for p in d) for d in differences]
            raise ValueError(
                f"{_describe(op)} merges tensors that must keep equal sizes, but its inputs "
                f"reach it through different downsampling layers {names} that one shared stride "
                "cannot keep equal (each input needs exactly one learned downsampling of its "
                "own): exclude= them"
            )
        first = next(iter(differences[0]))
        for difference in differences[1:]:
            self.parent[self.find(next(iter(difference)))] = self.find(first)

    def groups(self) -> dict[int, list[Any]]:
        """Each group's layers in graph order, with the same rank, layout and strides."""
        groups: dict[int, list[Any]] = {}
        for key, layer in self.layers.items():
            groups.setdefault(self.find(key), []).append(layer)
        for members in groups.values():
            kinds = {(tuple(m.strides), m.data_format) for m in members}
            if len(kinds) > 1:
                found = ", ".join(f"{m.name}: strides={tuple(m.strides)}" for m in members)
                raise ValueError(
                    f"downsampling layers whose outputs meet in a merge share one learned stride, "
                    f"so they need equal strides and data_format; received {found}"
                )
        return groups


def _selected_layers(model: Any, include: Any, exclude: Any) -> dict[int, Any]:
    layers = model._flatten_layers(include_self=False, recursive=True)
    names = {layer.name for layer in layers}
    include = _as_selector(include, "include", names)
    exclude = _as_selector(exclude, "exclude", names)
    return {  # nested models' layers too, to refuse them by name
        id(layer): layer
        for layer in layers
        if _is_downsampling(layer)
        and (include is None or _matches(layer, include))
        and not (exclude and _matches(layer, exclude))
    }


def _unique(name: str, taken: set[str]) -> str:
    candidate, count = name, 1
    while candidate in taken:
        count += 1
        candidate = f"{name}_{count}"
    taken.add(candidate)
    return candidate


def convert(
    model: keras.Model,
    *,
    ramp: str = "inside",
    pool_first: bool = True,
    smoothness_factor: float = 4.0,
    include: Any = None,
    exclude: Any = None,
    pooling: str = "diffstride",
) -> keras.Model:
    """A copy of ``model`` whose downsampling layers learn their strides.

    Each Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D, MaxPooling1D/2D/3D and
    AveragePooling1D/2D/3D with a stride > 1 becomes its stride-1 self (same weights) and a
    ``DiffStride{1,2,3}D`` started at its strides, before it (``pool_first=True``: the cost of
    the strided network; before the ZeroPadding layer that pads only for it, if any, so that
    the sizes stay those of a "same" layer) or after it (the paper's order). Layers whose
    outputs meet in a merge (a residual ``Add``, a ``Concatenate``) share one DiffStride
    layer, whatever their channel counts. ``model`` is left as it was.

    Parameters
    ----------
    model
        A functional or built Sequential Keras 3 model.
    ramp, smoothness_factor
        The DiffStride layers' options.
    pool_first
        Whether the DiffStride layer comes before the layer it replaces the stride of.
    include, exclude
        Layer names or classes (or lists of them): convert only those in ``include`` (all by
        default), none of those in ``exclude``.
    pooling
        ``"diffstride"`` (learned strides) or ``"spectral"`` (``FixedSpectralPooling{1,2,3}D``
        at the same places and strides: the fixed baseline of the same layout).

    Examples
    --------
    >>> import keras
    >>> from diffstride.keras import convert
    >>> model = keras.Sequential(
    ...     [keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, strides=2, padding="same"),
    ...      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
    ... )
    >>> [type(layer).__name__ for layer in convert(model).layers]
    ['DiffStride2D', 'Conv2D', 'GlobalAveragePooling2D', 'Dense']
    """
    graph = _graph(model)
    if not isinstance(pooling, str) or pooling not in _SPECTRAL_LAYERS:
        raise ValueError(
            f"pooling must be one of {tuple(_SPECTRAL_LAYERS)}; received pooling={pooling!r}"
        )
    check_ramp(ramp)
    smoothness_factor = check_smoothness_factor(smoothness_factor)
    if not isinstance(pool_first, bool):
        raise TypeError(f"pool_first must be a bool; received pool_first={pool_first!r}")
    points = _Points(graph, _selected_layers(model, include, exclude))
    taken = {layer.name for layer in model._flatten_layers(include_self=False, recursive=True)}
    spectral = {}
    for root, members in points.groups().items():
        first = members[0]
        options = {"ramp": ramp, "smoothness_factor": smoothness_factor}
        spectral[root] = _SPECTRAL_LAYERS[pooling][len(first.strides)](
            strides=tuple(float(s) for s in first.strides),
            data_format=first.data_format,
            name=_unique(f"{first.name}_{pooling}", taken),
            **(options if pooling == "diffstride" else {}),
        )

    clones: list[tuple[Any, Any]] = []
    original_of: dict[int, Any] = {}

    def clone_function(op: Any) -> Any:
        config = op.get_config()
        if id(op) in points.layers:
            config["strides"] = (1,) * len(op.strides)
        clone = type(op).from_config(config)
        clones.append((op, clone))
        original_of[id(clone)] = op
        return clone

    pooled: dict[tuple[int, int], Any] = {}

    padded = {id(pad): point for point, pad in points.padding.items()}

    def inserted(original: Any) -> tuple[Any, bool]:
        """The DiffStride layer to call with ``original`` (or None), and whether before it:
        before a point's own ZeroPadding rather than between the two."""
        if original is None:
            return None, False
        if id(original) in padded:
            root = points.find(padded[id(original)])
            return (spectral[root], True) if pool_first else (None, False)
        if id(original) not in points.layers:
            return None, False
        root = points.find(id(original))
        if pool_first and id(original) in points.padding:
            return None, False
        return spectral[root], pool_first

    def call_function(clone: Any, *args: Any, **kwargs: Any) -> Any:
        layer, first = inserted(original_of.get(id(clone)))
        if layer is None:
            return clone(*args, **kwargs)
        if not first:
            return layer(clone(*args, **kwargs))
        x, *rest = args
        key = (id(layer), id(x))
        if key not in pooled:  # the same input pooled by the same layer: one output
            pooled[key] = layer(x)
        return clone(pooled[key], *rest, **kwargs)

    try:
        if isinstance(model, keras.Sequential):
            converted = _convert_sequential(model, clone_function, inserted)
        else:
            converted = keras.models.clone_model(
                model, clone_function=clone_function, call_function=call_function
            )
    except ValueError as error:
        raise ValueError(
            f"the converted model does not build at the input shape of {model.name!r} ({error}); "
            "give it a larger input, or exclude= the downsampling layers before the failing layer"
        ) from error
    for original, clone in clones:
        if isinstance(original, kl.Layer) and original.weights:
            clone.set_weights(original.get_weights())
    return converted


def _convert_sequential(model: Any, clone_function: Callable, inserted: Callable) -> Any:
    """A new Sequential: each layer's clone, with its DiffStride layer before or after it."""
    layers: list[Any] = [
        keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
    ]
    for layer in model.layers:
        clone, (pooling, first) = clone_function(layer), inserted(layer)
        if pooling is None:
            layers.append(clone)
        else:
            layers += [pooling, clone] if first else [clone, pooling]
    converted = keras.Sequential(layers, name=model.name, trainable=model.trainable)
    if model.compiled:
        converted.compile_from_config(model.get_compile_config())
    return converted


# -- MACs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    op: Any
    input_shape: tuple
    output_shape: tuple
    #: The DiffStride layers upstream whose strides scale this layer's output (in order).
    upstream: tuple[Any, ...]


def _walk_shapes(graph: Any, specs: list[Any], upstream: list[Any], records: list) -> tuple:
    """Each node's shapes at the current strides (``compute_output_spec`` at every node, so a
    DiffStride layer gives the size its strides give now) and, per tensor, the DiffStride
    layers upstream whose strides scale it (None: none can)."""
    values = {id(t): s for t, s in zip(graph.inputs, specs, strict=True)}
    reach: dict[int, Any] = {id(t): u for t, u in zip(graph.inputs, upstream, strict=True)}
    for node in _nodes(graph):
        op = node.operation
        inputs = [values[id(t)] for t in node.input_tensors]
        dependencies = [reach[id(t)] for t in node.input_tensors]
        if isinstance(op, keras.Model):  # a nested model: its layers are counted one by one
            outputs, after = _walk_shapes(
                _graph(op, "a nested model"), inputs, dependencies, records
            )
        else:
            args, kwargs = node.arguments.fill_in(values)
            outputs = keras.tree.flatten(op.compute_output_spec(*args, **kwargs))
            ordered = dict.fromkeys(u for d in dependencies if d for u in d)
            if isinstance(op, _DiffStride):
                ordered[op] = None
            known = any(d is not None for d in dependencies) or isinstance(op, _DiffStride)
            kept = _after(op, frozenset(ordered) if known else None, outputs)
            after = [None if kept is None else tuple(ordered)] * len(outputs)
            if inputs and outputs:
                shapes = tuple(inputs[0].shape), tuple(outputs[0].shape)
                records.append(_Record(op, *shapes, tuple(ordered) if kept else ()))
        for t, value, u in zip(node.outputs, outputs, after, strict=True):
            values[id(t)], reach[id(t)] = value, u
    return [values[id(t)] for t in graph.outputs], [reach[id(t)] for t in graph.outputs]


def _records(model: keras.Model) -> list[_Record]:
    graph = _graph(model)
    records: list[_Record] = []
    _walk_shapes(graph, list(graph.inputs), [()] * len(graph.inputs), records)
    return records


def _static(shape: tuple, op: Any) -> tuple[int, ...]:
    if any(size is None for size in shape[1:]):
        raise ValueError(
            f"macs needs static shapes, but {_describe(op)} sees the shape {shape}: give the "
            "model's Input a fixed shape (e.g. keras.Input((224, 224, 3)))"
        )
    return tuple(int(size) for size in shape[1:])


def _layer_macs(record: _Record) -> int:
    """Multiply-accumulates per example of a convolution or Dense layer (0 for the others)."""
    op = record.op
    if isinstance(op, kl.Dense):
        return math.prod(_static(record.input_shape, op)) * op.units
    convolution = (kl.Conv1D, kl.Conv2D, kl.Conv3D, kl.DepthwiseConv1D, kl.DepthwiseConv2D)
    if not isinstance(op, (*convolution, kl.SeparableConv1D, kl.SeparableConv2D)):
        return 0
    inputs, outputs = _static(record.input_shape, op), _static(record.output_shape, op)
    axis = channel_axis(op.data_format, len(inputs) + 1) - 1
    channels = inputs[axis]
    positions = math.prod(outputs) // outputs[axis]
    kernel = math.prod(op.kernel_size)
    if isinstance(op, (kl.Conv1D, kl.Conv2D, kl.Conv3D)):
        return positions * op.filters * kernel * channels // op.groups
    depthwise = positions * channels * op.depth_multiplier * kernel
    if isinstance(op, (kl.DepthwiseConv1D, kl.DepthwiseConv2D)):
        return depthwise
    return depthwise + positions * channels * op.depth_multiplier * op.filters


def macs(model: keras.Model) -> int:
    """Multiply-accumulates per example of the model's Conv1D/2D/3D, DepthwiseConv1D/2D,
    SeparableConv1D/2D and Dense layers (Dense per position on a > 2-D input) at the current
    strides, from static shapes; the DiffStride layers' own cost is left out.

    >>> import keras
    >>> from diffstride.keras import macs
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, 2, "same")])
    >>> macs(model) == 4 * 4 * 4 * 3 * 3 * 3
    True
    """
    return sum(_layer_macs(record) for record in _records(model))


@dataclass(frozen=True)
class MacsReference:
    """The point :func:`macs_estimate` relaxes around: the MACs per example that scale with
    each set of DiffStride layers' reach, divided by that reach then, and the MACs that do not
    scale (``constant``). Take it from :func:`macs_reference` (eagerly, outside a compiled
    step: it reads shapes and stride values)."""

    constant: float
    terms: tuple[tuple[tuple[Any, ...], float], ...]


def macs_reference(model: keras.Model) -> MacsReference:
    """The reference of :func:`macs_estimate` at the current strides."""
    weights: dict[tuple[Any, ...], float] = {}
    for record in _records(model):
        count = _layer_macs(record)
        if count:
            weights[record.upstream] = weights.get(record.upstream, 0.0) + count
    constant = weights.pop((), 0.0)
    terms = []
    for layers, weight in weights.items():
        for layer in layers:  # per unit reach: times the area each stride divides by now
            now = np.asarray(keras.ops.convert_to_numpy(layer.strides), dtype=np.float64)
            weight *= float(_area_factor(now, layer.rank))
        terms.append((layers, weight))
    return MacsReference(constant, tuple(terms))


def macs_estimate(model: keras.Model, *, reference: MacsReference | None = None) -> Any:
    """MACs per example as a differentiable function of the DiffStride strides (a 0-d tensor).

    Each counted layer's MACs at the reference, times, for every DiffStride layer upstream of
    it, ``reach(S) / reach(S_ref)`` with ``reach(S) = 1 / prod_a S_a``; equal to :func:`macs`
    at the reference, which is the current strides unless ``reference`` (from
    :func:`macs_reference`) is given. Pass one computed eagerly into a compiled step.

    >>> import keras
    >>> from diffstride.keras import DiffStride, macs, macs_estimate
    >>> model = keras.Sequential(
    ...     [keras.Input((16, 16, 1)), DiffStride((2.0, 2.0), ramp="inside"),
    ...      keras.layers.Conv2D(4, 3, padding="same")]
    ... )
    >>> round(float(macs_estimate(model))) == macs(model) == 8 * 8 * 4 * 9
    True
    """
    reference = macs_reference(model) if reference is None else reference
    total: Any = keras.ops.convert_to_tensor(reference.constant, dtype="float32")
    for layers, weight in reference.terms:
        strides = [keras.ops.convert_to_tensor(layer.strides) for layer in layers]
        weights = [0.0] * (len(layers) - 1) + [weight]
        total = total + weighted_reach_of(strides, weights, [layer.rank for layer in layers])
    return total


def macs_penalty(
    model: keras.Model, budget: float, *, reference: MacsReference | None = None
) -> Any:
    """``max(macs_estimate / budget - 1, 0)``: zero under ``budget`` (MACs per example), the
    relative excess above; add ``lambda *`` it to the loss."""
    estimate = macs_estimate(model, reference=reference)
    return budget_penalty_of(estimate, budget, xp=keras.ops, name="budget")
