"""Keras 3 front-end: DiffStride layers for every Keras backend (TensorFlow, jax, torch).

The layers are the neutral mixins of ``diffstride._layers`` plus ``build``/``call``/
``get_config``, registered as serializable (package ``diffstride``), so a model saved to
``.keras`` loads back without ``custom_objects``. ``DiffStride*`` keeps its stride in a
float32 variable named ``strides`` with a :class:`StrideConstraint` for the limits (as the
original); ``training=True`` calls project it in place, ``S <- max(S, N / (N - R))``.

A call runs on the adapter of the active Keras backend. Where the crop can follow the strides
at every call, it does: eagerly (torch's default, TensorFlow eager) it is read from their
values, and in a TensorFlow graph (``fit``) it is computed in the graph, so the output's
spatial size is dynamic there (convolutions, global pooling, further DiffStride and fixed
spectral pooling layers accept that; a ``Dense`` after ``Flatten`` cannot, and is refused).
jax compiles with static shapes: there each layer takes its crop per input size from a host
copy of its strides (``_layers.FixedCrops``, the policy Flax shares; inside ``fit`` Keras
detaches the variables from their values), which eager calls refresh; the strides keep
learning through the mask, and :func:`update_crops` (or the :class:`UpdateCrops` callback,
once per epoch by default) sets the crops from the current strides and makes the compiled
steps retrace where one moved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from diffstride import _api
from diffstride._backend import Backend
from diffstride._complexity import complexity_penalty_of
from diffstride._layers import (
    DiffStrideMixin,
    FixedCrops,
    FixedSpectralPoolingMixin,
    SpatialPoolingMixin,
    diffstride_init,
    per_rank,
)
from diffstride._options import NAMES as OPTION_NAMES

if TYPE_CHECKING:  # loaded on first use, by the module __getattr__ at the end
    from diffstride._keras_convert import (
        MacsReference,
        convert,
        macs,
        macs_estimate,
        macs_penalty,
        macs_reference,
    )

__all__ = [
    "DiffStride",
    "DiffStride1D",
    "DiffStride2D",
    "DiffStride3D",
    "FixedSpectralPooling",
    "FixedSpectralPooling1D",
    "FixedSpectralPooling2D",
    "FixedSpectralPooling3D",
    "MacsReference",
    "SpatialPooling",
    "StrideConstraint",
    "StrideHistory",
    "UpdateCrops",
    "complexity_penalty",
    "convert",
    "diffstride_layers",
    "macs",
    "macs_estimate",
    "macs_penalty",
    "macs_reference",
    "update_crops",
]

_PACKAGE = "diffstride"
#: The diffstride backend behind each Keras backend.
_ADAPTERS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def _adapter() -> Backend:
    """The adapter of the active Keras backend; a clear error for the others."""
    name = keras.backend.backend()
    if name not in _ADAPTERS:
        raise RuntimeError(
            f"diffstride.keras layers run on the Keras backends {sorted(_ADAPTERS)}; received "
            f"KERAS_BACKEND={name!r}"
        )
    return _api.get_backend(_ADAPTERS[name])


def _static_crops() -> bool:
    """Whether the backend compiles with static shapes, so that a crop is fixed per trace."""
    return keras.backend.backend() == "jax"


def _default_format(data_format: str | None) -> str:
    return keras.config.image_data_format() if data_format is None else data_format


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StrideConstraint(keras.constraints.Constraint):
    """Keeps strides in ``[lower or 1, upper or float32 max]`` after each optimizer step."""

    def __init__(self, lower_limit: float | None = None, upper_limit: float | None = None):
        self.lower_limit = lower_limit
        self.upper_limit = upper_limit

    def __call__(self, w: Any) -> Any:
        low = 1.0 if self.lower_limit is None else self.lower_limit
        high = float(np.finfo(np.float32).max) if self.upper_limit is None else self.upper_limit
        return keras.ops.clip(w, low, high)

    def get_config(self) -> dict[str, Any]:
        return {"lower_limit": self.lower_limit, "upper_limit": self.upper_limit}


def _eager_value(variable: Any) -> np.ndarray | None:
    """A variable's value as numpy where a call can read it now; None inside a trace."""
    try:
        return keras.ops.convert_to_numpy(variable)
    except Exception:  # a tracer or a graph tensor
        return None


def _concrete_value(variable: Any) -> np.ndarray | None:
    """A variable's value as numpy, or None where it has none to read: inside a traced
    step (a tracer or a graph tensor) or detached by the Keras jax trainer."""
    value = _eager_value(variable)
    if value is not None:
        return value
    raw = getattr(variable, "_value", None)  # traced: it may still hold its last value
    try:
        return None if raw is None else np.asarray(raw)
    except Exception:  # a tracer or a symbolic tensor
        return None


class _DiffStride(DiffStrideMixin, keras.layers.Layer):
    """Spectral pooling with learnable strides (Riad et al., ICLR 2022) over {rank} spatial
    axes, as a Keras 3 layer: input ``{layout}``.

    Arguments as ``diffstride.torch.DiffStride{rank}d``; ``data_format`` defaults to
    ``keras.config.image_data_format()``. ``training=True`` calls store the original's
    projection in ``strides`` with the outside ramp; with ``ramp="inside"`` they store nothing
    and the constraint keeps the strides within the limits.

    Parameters
    ----------
    strides
        Initial strides, each >= 1: one per spatial axis, or one number for every axis.
    trainable
        Whether ``strides`` is trained.
    shared_stride
        One stride weight for every axis (equal initial strides required).
    {options}

    Examples
    --------
    {example}
    """

    # ``data_format=None``: Keras's configured layout.
    __init__ = diffstride_init(strides=2.0, data_format=None)

    def _start(self, trainable: bool, options: dict[str, Any]) -> None:
        """``keras.layers.Layer``'s own keywords (``name``, ``dtype``...) go to it."""
        _adapter()
        layer_kwargs = {k: options.pop(k) for k in list(options) if k not in OPTION_NAMES}
        options["data_format"] = _default_format(options.get("data_format"))
        keras.layers.Layer.__init__(self, trainable=trainable, **layer_kwargs)

    def _make_strides(self, trainable: bool) -> None:
        """The weight is made in ``build``; the host copy of its values now."""
        self.fixed_crops = FixedCrops(self.initial_value)
        self._crops_moved_eagerly = False
        self._checked_nodes = 0

    def build(self, input_shape: Any) -> None:
        # Unknown sizes are read per call (TensorFlow graphs) or per trace (jax).
        self._check_input_shape(input_shape, allow_unknown=True)
        self.strides = self.add_weight(
            name="strides",
            shape=self.stride_shape,
            initializer=keras.initializers.Constant(self.initial_value),
            trainable=self.trainable,
            dtype="float32",
            constraint=StrideConstraint(*self.options.limits),
            autocast=False,  # strides stay float32 under a mixed precision policy
        )

    def _stride_values(self) -> Any:
        """The stride values held now; inside a compiled step, where they cannot be read,
        the last values read (Keras on jax detaches variables from their values during
        ``fit`` and ``predict``), which the crops are fixed from anyway."""
        if not self.built:
            return self.initial_value
        values = _concrete_value(self.strides)
        return self.fixed_crops.strides if values is None else values

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(store)
        values = np.asarray(self._stride_values())
        self._check_stored_strides(values, self._stride_name())
        self._refresh_fixed_crops(values, always=True)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        backend = _adapter()
        sizes = self._checked_sizes(inputs, backend)
        self._check_consumers()
        strides = keras.ops.convert_to_tensor(self.strides.value)
        if training and not self.options.inside:
            xp = backend.namespace()
            self.strides.assign(self._projected(strides, sizes, clip=False, xp=xp))
        outputs = _api.diffstride_on(
            backend,
            inputs,
            strides,
            self.options,
            output_size=self._static_crop(sizes) if _static_crops() else None,
            sizes=sizes,
            check_values=True,
            name=self._stride_name(),
        )
        if backend.name != "tensorflow":
            return outputs
        import tensorflow as tf

        # In graph mode the spatial sizes depend on the stride's value; the rest is static.
        shape = list(inputs.shape)
        for axis in self._axes(len(shape)):
            shape[axis] = None
        return tf.ensure_shape(outputs, shape)

    def _check_consumers(self) -> None:
        """Refuse a layer with weights sized by a flattened DiffStride output (``Flatten`` then
        ``Dense``): that size follows the learned strides, so the layer breaks once they move.
        Checked at the first call of each model graph the layer belongs to."""
        nodes = self._outbound_nodes
        if not self.trainable or len(nodes) == self._checked_nodes:
            return
        self._checked_nodes = len(nodes)
        pending = [(node.operation, None) for node in nodes]
        seen: set[int] = set()
        while pending:
            layer, flattened_by = pending.pop()
            if id(layer) in seen or type(layer).__name__.startswith("Global"):
                continue  # global pooling makes the size independent of the strides
            seen.add(id(layer))
            if isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)):
                flattened_by = layer
            elif flattened_by is not None and layer.weights:
                raise ValueError(
                    f"{type(layer).__name__} {layer.name!r} has weights sized by the output of "
                    f"{type(self).__name__} {self.name!r} through {type(flattened_by).__name__} "
                    f"{flattened_by.name!r}, but that output's spatial size follows the learned "
                    "strides, so those weights stop fitting once the strides move. Use global "
                    "pooling (keras.layers.GlobalAveragePooling2D) before the layer, or freeze "
                    "the strides (trainable=False)."
                )
            pending += [(node.operation, flattened_by) for node in layer._outbound_nodes]

    def _static_crop(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """The crop on a static-shape backend: from the strides in an eager call (which
        refreshes the host copy; a step compiled before keeps its crop until
        :func:`update_crops`), from the host copy in a compiled step."""
        values = _eager_value(self.strides)
        if values is not None and self._refresh_fixed_crops(values, sizes):
            self._crops_moved_eagerly = True
        return self._fixed_crop(sizes)

    def update_crops(self) -> bool:
        """Set the fixed crops (static-shape backends) from the current strides; whether one
        changed since the model's steps were compiled. Call it outside a compiled step."""
        values = _concrete_value(self.strides) if self.built else None
        changed = values is not None and self._refresh_fixed_crops(values)
        moved, self._crops_moved_eagerly = self._crops_moved_eagerly, False
        return changed or moved

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        shape = list(input_shape)
        axes = self._axes(len(shape))
        sizes = [shape[a] for a in axes]
        if None in sizes:
            outputs = [None] * len(axes)
        elif _static_crops():
            outputs = self._fixed_crop(tuple(sizes))
        else:
            outputs = self.output_size(sizes)
        for axis, size in zip(axes, outputs, strict=True):
            shape[axis] = size
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._config()}


class _FixedSpectralPooling(FixedSpectralPoolingMixin, keras.layers.Layer):
    """Fixed spectral pooling (the original's ``FixedSpectralPooling``) over {rank} spatial
    axes: input ``{layout}``; no weight. ``method`` as for ``DiffStride``.

    {example}
    """

    def __init__(
        self,
        strides: Any = 2.0,
        data_format: str | None = None,
        method: str = "auto",
        **kwargs: Any,
    ) -> None:
        _adapter()
        super().__init__(**kwargs)
        self._init_spectral(strides, _default_format(data_format), method)

    def call(self, inputs: Any) -> Any:
        backend = _adapter()
        sizes = self._checked_sizes(inputs, backend)
        return _api.spectral_pooling_on(
            backend,
            inputs,
            self.strides_value,
            data_format=self.data_format,
            method=self.method,
            sizes=sizes,
        )

    def compute_output_shape(self, input_shape: Any) -> tuple[Any, ...]:
        shape = list(input_shape)
        axes = self._axes(len(shape))
        sizes = [shape[a] for a in axes]
        outputs = [None] * len(axes) if None in sizes else self.output_size(sizes)
        for axis, size in zip(axes, outputs, strict=True):
            shape[axis] = size
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "strides": self.strides_value,
            "data_format": self.data_format,
            "method": self.method,
        }


DiffStride1D, DiffStride2D, DiffStride3D = per_rank(
    _DiffStride,
    "DiffStride{rank}D",
    {
        1: """>>> import numpy as np
    >>> from diffstride.keras import DiffStride1D
    >>> tuple(DiffStride1D(4.0, data_format="channels_last")(np.zeros((2, 1000, 1))).shape)
    (2, 258, 1)""",
        2: """>>> import numpy as np
    >>> from diffstride.keras import DiffStride
    >>> layer = DiffStride(strides=(2.0, 2.0), data_format="channels_last")
    >>> tuple(layer(np.zeros((8, 32, 32, 3), "float32")).shape)
    (8, 24, 24, 3)
    >>> layer.current_strides(), layer.compute_output_shape((None, 32, 32, 3))
    ((2.0, 2.0), (None, 24, 24, 3))""",
        3: """>>> import numpy as np
    >>> from diffstride.keras import DiffStride3D
    >>> layer = DiffStride3D((1.0, 2.0, 2.0), data_format="channels_last")
    >>> tuple(layer(np.zeros((1, 8, 32, 32, 2), "float32")).shape)
    (1, 8, 24, 24, 2)""",
    },
    module=__name__,
    data_format="channels_last",
    register=keras.saving.register_keras_serializable(package=_PACKAGE),
)
FixedSpectralPooling1D, FixedSpectralPooling2D, FixedSpectralPooling3D = per_rank(
    _FixedSpectralPooling,
    "FixedSpectralPooling{rank}D",
    {
        1: """>>> import numpy as np
    >>> from diffstride.keras import FixedSpectralPooling1D
    >>> layer = FixedSpectralPooling1D(4, data_format="channels_last")
    >>> tuple(layer(np.zeros((1, 100, 3), "float32")).shape)
    (1, 25, 3)""",
        2: """>>> import numpy as np
    >>> from diffstride.keras import FixedSpectralPooling
    >>> layer = FixedSpectralPooling((2, 2), data_format="channels_first")
    >>> tuple(layer(np.zeros((1, 3, 32, 32), "float32")).shape)
    (1, 3, 16, 16)""",
        3: """>>> import numpy as np
    >>> from diffstride.keras import FixedSpectralPooling3D
    >>> layer = FixedSpectralPooling3D(2, data_format="channels_last")
    >>> tuple(layer(np.zeros((1, 8, 8, 8, 3), "float32")).shape)
    (1, 4, 4, 4, 3)""",
    },
    module=__name__,
    data_format="channels_last",
    register=keras.saving.register_keras_serializable(package=_PACKAGE),
)

#: The 2-D layers under the original's names; ``.keras`` files saved with those names load.
DiffStride = DiffStride2D
FixedSpectralPooling = FixedSpectralPooling2D
keras.saving.get_custom_objects().update(
    {
        f"{_PACKAGE}>DiffStride": DiffStride2D,
        f"{_PACKAGE}>FixedSpectralPooling": FixedSpectralPooling2D,
    }
)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpatialPooling(SpatialPoolingMixin, keras.layers.AveragePooling2D):
    """The original's ``SpatialPooling``: average pooling with 'same' padding.

    >>> import numpy as np
    >>> from diffstride.keras import SpatialPooling
    >>> tuple(SpatialPooling(data_format="channels_last")(np.zeros((1, 15, 15, 3))).shape)
    (1, 8, 8, 3)
    """

    def __init__(
        self,
        pool_size: Any = (1, 1),
        strides: Any = (2, 2),
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        padding = kwargs.pop("padding", "same")
        if padding != "same":
            raise ValueError(f"SpatialPooling pads 'same'; received padding={padding!r}")
        self._init_spatial(pool_size, strides, _default_format(data_format))
        super().__init__(
            pool_size=self.pool_size,
            strides=self.strides_value,
            padding="same",
            data_format=self.data_format,
            **kwargs,
        )


def diffstride_layers(model_or_layers: Any) -> list[_DiffStride]:
    """The DiffStride layers of a Keras model (nested ones too), in the order Keras tracks
    them, which is the order they were created; or a given list, unchanged."""
    if isinstance(model_or_layers, (list, tuple)):
        return list(model_or_layers)
    layers = model_or_layers._flatten_layers(include_self=False, recursive=True)
    return [layer for layer in layers if isinstance(layer, _DiffStride)]


def complexity_penalty(model_or_layers: Any) -> Any:
    """The paper's complexity regularizer over a model's DiffStride layers (forward order),
    differentiable with respect to their strides; add ``lambda * J`` to the loss.

    >>> from diffstride.keras import DiffStride, complexity_penalty
    >>> layers = [DiffStride((2.0, 2.0)), DiffStride((2.0, 2.0))]
    >>> for layer in layers:
    ...     layer.build((None, 8, 8, 1))
    >>> float(complexity_penalty(layers))
    0.3125
    """
    layers = diffstride_layers(model_or_layers)
    strides = [keras.ops.convert_to_tensor(layer.strides.value) for layer in layers]
    xp = _adapter().namespace()
    return complexity_penalty_of(strides, xp=xp, ranks=[layer.rank for layer in layers])


class StrideHistory(keras.callbacks.Callback):
    """Records every DiffStride layer's strides at the end of each epoch (and at the start).

    ``history`` is a list (one entry per record) of lists of ``(s_h, s_w)`` per layer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: list[list[tuple[float, float]]] = []

    def _record(self) -> None:
        self.history.append([layer.current_strides() for layer in diffstride_layers(self.model)])

    def on_train_begin(self, logs: Any = None) -> None:
        self._record()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._record()


def update_crops(model_or_layers: Any) -> bool:
    """Set every DiffStride layer's fixed crop from its current strides, where the backend
    fixes crops per trace (jax), and make the model's next call retrace if one changed.
    Elsewhere the crop follows the strides at every call, and this does nothing. Returns
    whether a crop changed. Call it outside a compiled step (between epochs:
    :class:`UpdateCrops`)."""
    changed = False
    for layer in diffstride_layers(model_or_layers):
        changed = layer.update_crops() or changed
    if changed and isinstance(model_or_layers, keras.Model):
        for make in ("make_train_function", "make_test_function", "make_predict_function"):
            if getattr(model_or_layers, make.replace("make_", ""), None) is not None:
                getattr(model_or_layers, make)(force=True)
    return changed


class UpdateCrops(keras.callbacks.Callback):
    """Calls :func:`update_crops` during ``fit``: at the end of every epoch (default), or
    every ``every`` training batches.

    The strides learn through the mask in between, so a crop lags the strides by at most that
    long. Where the crop follows the strides at every call (TensorFlow, torch), it does
    nothing."""

    def __init__(self, every: str | int = "epoch") -> None:
        super().__init__()
        if every != "epoch" and not (isinstance(every, int) and every >= 1):
            raise ValueError(f"every must be 'epoch' or an int >= 1; received every={every!r}")
        self.every = every
        self.updates = 0

    def _update(self) -> None:
        self.updates += int(update_crops(self.model))

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.every != "epoch" and (batch + 1) % self.every == 0:
            self._update()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if self.every == "epoch":
            self._update()


#: Bring your own network: it builds on the layers above, so it loads on first use
#: (a module ``__getattr__``), and importing either module first works.
_CONVERT_NAMES = frozenset(
    {"MacsReference", "convert", "macs", "macs_estimate", "macs_penalty", "macs_reference"}
)


def __getattr__(name: str) -> Any:
    if name in _CONVERT_NAMES:
        from diffstride import _keras_convert

        return getattr(_keras_convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
