"""Framework-neutral halves of the layers: arguments, validation, config, projection, repr.

As in einops, each framework's layer is this mixin plus a few lines (a torch ``forward``, a
Keras ``build``/``call``/``get_config``, a jax ``init``/``apply``): the arguments are checked
once, here, into an :class:`~diffstride._options.Options` the layer holds, with the same
messages everywhere, and the projection of the stride parameter (the original's in-place
``assign`` after each call) is computed here from concrete values. A layer class has a fixed
spatial ``rank`` (torch and Keras name them per rank, as their own layers) or takes it from
its strides (jax, numpy: the rank-generic layers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from diffstride import _agnostic, _sizes
from diffstride._backend import Backend
from diffstride._crop import check_read_strides
from diffstride._options import Options, with_options
from diffstride._validation import (
    check_data_format,
    check_input,
    check_method,
    check_spatial_sizes,
    check_stride_values,
    spatial_axes,
)

__all__ = [
    "DiffStrideMixin",
    "FixedCrops",
    "FixedSpectralPoolingMixin",
    "SpatialPoolingMixin",
    "diffstride_init",
    "per_rank",
]


class _LayoutMixin:
    #: The number of spatial axes (None: taken from the strides given, for generic layers).
    rank: ClassVar[int | None] = None
    data_format: str

    @property
    def spatial_rank(self) -> int | None:
        return self.rank

    # No channel count is recorded: a layer has no weight per channel, so one instance takes
    # any channel count, and its result never depends on the inputs it saw before.
    def _check_input_shape(
        self, shape: Sequence[Any], *, allow_unknown: bool = False
    ) -> tuple[Any, ...]:
        """The rank and spatial sizes >= 2 (static unless ``allow_unknown``) of ``shape`` for
        the ``data_format``."""
        return check_spatial_sizes(
            tuple(shape), self.data_format, allow_unknown=allow_unknown, rank=self.spatial_rank
        )

    def _checked_sizes(self, x: Any, backend: Backend) -> tuple[Any, ...]:
        """:meth:`_check_input_shape` for an array, with its dtype: the call's one check."""
        return check_input(x, self.data_format, backend, rank=self.spatial_rank)

    def _axes(self, ndim: int) -> tuple[int, ...]:
        return spatial_axes(self.data_format, ndim)


def _initial_strides(strides: Any, rank: int | None, shared: bool) -> tuple[float, ...]:
    """The strides a layer starts from: one per axis (a single number is used on every axis
    of a fixed-rank layer), or one shared (``shared_stride``, all values equal)."""
    values = check_stride_values(strides, rank=rank)
    if shared:
        if len(set(values)) != 1:
            raise ValueError(
                f"shared_stride=True needs equal initial strides; received strides={strides!r}"
            )
        return values[:1]
    if rank is not None and len(values) == 1:
        return values * rank
    return values


class DiffStrideMixin(_LayoutMixin):
    """Arguments and stride bookkeeping of ``DiffStride`` (the original's
    ``LearnableSpectralPooling``), with its names and defaults."""

    options: Options
    #: The layer's name across frameworks and ranks (reports, the models' specs).
    kind: ClassVar[str] = "DiffStride"
    #: Where a trace cannot read the strides: their host copy and the crops it gives.
    fixed_crops: FixedCrops

    def _start(self, trainable: bool, options: dict[str, Any]) -> None:
        """The framework's own ``__init__``, before the arguments are checked; it takes the
        keywords that are the framework's out of ``options``."""

    def _make_strides(self, trainable: bool) -> None:
        """The layer's strides, from ``self.initial_value``, after the arguments are checked."""
        self.trainable = trainable

    def _init_diffstride(self, strides: Any, shared_stride: bool, options: dict[str, Any]) -> None:
        self.options = Options.from_kwargs(options, where=type(self).__name__)
        self.shared_stride = bool(shared_stride)
        self.initial_strides = _initial_strides(strides, self.rank, self.shared_stride)
        self.data_format = self.options.data_format

    @property
    def spatial_rank(self) -> int | None:
        if self.rank is not None or self.shared_stride:
            return self.rank
        return len(self.initial_strides)

    @property
    def stride_shape(self) -> tuple[int]:
        return (len(self.initial_strides),)

    @property
    def initial_value(self) -> list[float]:
        return list(self.initial_strides)

    def _stride_name(self) -> str:
        return f"{type(self).__name__}.strides"

    def _config(self) -> dict[str, Any]:
        """The arguments that rebuild this layer (for ``get_config``)."""
        return {
            "strides": self.initial_strides,
            "shared_stride": self.shared_stride,
            **self.options.as_dict(),
        }

    def current_strides(self) -> tuple[float, ...]:
        """The stride values now held, one per spatial axis (one if shared and the rank is
        not fixed)."""
        values = tuple(float(v) for v in np.asarray(self._stride_values()).reshape(-1))
        rank = self.rank
        return values * rank if rank is not None and len(values) == 1 else values

    def _stride_values(self) -> Any:
        raise NotImplementedError

    def _check_stored_strides(self, values: np.ndarray, name: str) -> None:
        """Loaded strides (a checkpoint, a saved model): the layer's shape, finite, >= 1."""
        if tuple(values.shape) != self.stride_shape:
            raise ValueError(
                f"{name} must have shape {self.stride_shape} for {type(self).__name__}; "
                f"received shape {tuple(values.shape)}"
            )
        check_read_strides(values, self.spatial_rank or len(values), True, name)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """The spatial sizes this layer returns for ``input_size``, with the current strides.

        An optimizer step may leave the stored strides outside the limits (below 1, say) until
        the next call clips them, as the forward pass does: they are clipped here too."""
        return self._output_size_with(input_size, self.current_strides())

    def _fixed_crop(self, sizes: tuple[int, ...], precision: str = "float32") -> tuple[int, ...]:
        """The crop of ``sizes`` (for inputs of ``precision``) from the host copy of the
        strides (``self.fixed_crops``), recorded in place: under a trace, replacing the copy
        would change the graph."""
        fixed = self.fixed_crops
        table = fixed.table(precision)
        crop = table.get(sizes)
        if crop is None:
            crop = table[sizes] = self._output_size_with(sizes, fixed.strides, precision)
        return crop

    def _refresh_fixed_crops(
        self, values: Any, sizes: tuple[int, ...] | None = None, *, always: bool = False
    ) -> bool:
        """Take the concrete stride ``values`` as the host copy where that changes the crop
        of a size seen or of ``sizes`` (or where none was seen, or ``always``), so compiled
        steps stay valid where no crop moves; whether the crops changed."""
        fixed = FixedCrops(values)
        if fixed == self.fixed_crops and not always:
            return False
        seen = {*self.fixed_crops.crops, *([sizes] if sizes is not None else [])}
        fixed.crops = {each: self._output_size_with(each, fixed.strides) for each in seen}
        old = {each: self._fixed_crop(each) for each in seen}
        if seen and fixed.crops == old and not always:
            return False
        self.fixed_crops = fixed
        return fixed.crops != old

    def _output_size_with(
        self, input_size: Sequence[int], strides: Sequence[float], dtype: str = "float32"
    ) -> tuple[int, ...]:
        """The output size for ``strides`` (clipped to the limits, as the forward pass does),
        decided in the input's precision ``dtype``."""
        low, high = self.stride_bounds
        options = self.options
        return _sizes.output_size(
            input_size,
            tuple(min(max(float(value), low), high) for value in strides),
            smoothness_factor=options.smoothness_factor,
            cropping=options.cropping,
            lower_limit_stride=options.lower_limit_stride,
            upper_limit_stride=options.upper_limit_stride,
            dtype=dtype,
            ramp=options.ramp,
        )

    @property
    def stride_bounds(self) -> tuple[float, float]:
        """``(lower_limit_stride or 1, upper_limit_stride or inf)``."""
        low, high = self.options.limits
        return (1.0 if low is None else low), (float("inf") if high is None else high)

    def _projected(self, strides: Any, sizes: Sequence[Any], *, clip: bool, xp: Any) -> Any:
        """The parameter after a training call (see ``_agnostic.projected_parameter``)."""
        return _agnostic.projected_parameter(
            strides,
            tuple(sizes),
            smoothness_factor=self.options.smoothness_factor,
            bounds=self.stride_bounds if clip else None,
            inside=self.options.inside,
            xp=xp,
        )

    def _extra_repr(self) -> str:
        current = ", ".join(f"{v:.4g}" for v in self.current_strides())
        parts = [f"strides=({current})"]
        if self.shared_stride:
            parts.append("shared_stride=True")
        options = {"smoothness_factor": self.options.smoothness_factor}
        options.update(self.options.non_defaults())
        options["data_format"] = self.data_format
        parts += [
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v!r}" for k, v in options.items()
        ]
        return ", ".join(parts)


class FixedCrops:
    """The crops of a layer whose calls cannot always read its strides: a host copy of the
    strides, compared and hashed (a jit cache may key on it), and the crop of each input size
    seen, derived from it. The crops are a cache, not part of the key: a crop is a function
    of the copy, so a trace compiled for one copy stays right for it.

    Keras on jax and Flax NNX refresh the copy where a crop moves (a trace hides the
    strides). torch reads its parameter again only where it changed since the copy: ``key``
    is the parameter's identity and version counter at the read (``_torch_tracing.value_key``;
    None: the copy is not known to hold the parameter's values), so a repeat call reads
    nothing and ``strides`` are the parameter's values while the key holds. ``dtype`` is the
    precision the copy holds them in (the parameter's: float32, or float64); ``crops`` are
    decided for float32 inputs, ``crops64`` for float64 ones (torch decides in the input's
    precision)."""

    __slots__ = ("crops", "crops64", "key", "strides")

    def __init__(
        self, strides: Any, crops: dict | None = None, *, key: Any = None, dtype: str = "float32"
    ) -> None:
        values = np.asarray(strides, dtype=np.float64 if dtype == "float64" else np.float32)
        self.strides = tuple(float(v) for v in values.reshape(-1))
        self.crops: dict[tuple[int, ...], tuple[int, ...]] = dict(crops or {})
        self.crops64: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.key = key

    def table(self, precision: str) -> dict[tuple[int, ...], tuple[int, ...]]:
        """The crops decided for inputs of ``precision``."""
        return self.crops64 if precision == "float64" else self.crops

    def __eq__(self, other: object) -> bool:
        return type(other) is FixedCrops and other.strides == self.strides

    def __hash__(self) -> int:
        return hash(self.strides)

    def __repr__(self) -> str:
        return f"FixedCrops(strides={self.strides}, crops={self.crops})"


def _option_property(name: str) -> property:
    return property(lambda self: getattr(self.options, name), doc=f"``options.{name}``")


# The options read as the layer's own attributes, as before there was an Options object.
for _name in ("smoothness_factor", "cropping", "lower_limit_stride", "upper_limit_stride"):
    setattr(DiffStrideMixin, _name, _option_property(_name))
for _name in ("method", "ramp"):
    setattr(DiffStrideMixin, _name, _option_property(_name))


class FixedSpectralPoolingMixin(_LayoutMixin):
    """Arguments of ``FixedSpectralPooling``: fixed strides >= 1, no parameter."""

    kind: ClassVar[str] = "FixedSpectralPooling"

    def _init_spectral(self, strides: Any, data_format: str, method: str) -> None:
        self.strides_value = _initial_strides(strides, self.rank, shared=False)
        self.data_format = check_data_format(data_format)
        self.method = check_method(method)

    @property
    def spatial_rank(self) -> int | None:
        return self.rank if self.rank is not None else len(self.strides_value)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        return _sizes.spectral_pooling_output_size(input_size, self.strides_value)

    def _extra_repr(self) -> str:
        return f"strides={self.strides_value}, data_format={self.data_format!r}"


class SpatialPoolingMixin(_LayoutMixin):
    """Arguments of ``SpatialPooling``: the original's strided average pooling, 'same' padding."""

    rank = 2
    kind: ClassVar[str] = "SpatialPooling"

    def _init_spatial(self, pool_size: Any, strides: Any, data_format: str) -> None:
        self.pool_size = _int_pair(pool_size, "pool_size")
        self.strides_value = _int_pair(strides, "strides")
        self.data_format = check_data_format(data_format)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, ...]:
        """'same' padding: ``ceil(N / stride)`` per axis."""
        return tuple(-(-int(n) // s) for n, s in zip(input_size, self.strides_value, strict=False))

    def _same_padding(self, sizes: Sequence[int]) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) zero padding of TensorFlow's 'same' rule."""
        pads = []
        for n, k, s in zip(sizes, self.pool_size, self.strides_value, strict=False):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            pads.append((total // 2, total - total // 2))
        return (*pads[0], *pads[1])

    def _extra_repr(self) -> str:
        return (
            f"pool_size={self.pool_size}, strides={self.strides_value}, "
            f"data_format={self.data_format!r}"
        )


def _int_pair(value: Any, name: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(values, Sequence)
        or len(values) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)
    ):
        raise ValueError(f"{name} must be an int >= 1 or a pair of them; received {name}={value!r}")
    return (values[0], values[1])


def diffstride_init(*, strides: Any = (2.0, 2.0), **defaults: Any) -> Callable[..., None]:
    """A front-end's DiffStride ``__init__``, written once: ``(self, strides=strides, *,
    trainable=True, shared_stride=False, <the options>)``, the options with their defaults
    (``defaults`` overrides some: Flax is channels_last; Keras takes ``data_format=None`` as
    its configured layout) in the signature ``help()`` shows. It runs the layer's
    ``_start(trainable, options)`` (the framework's own ``__init__``), checks the arguments,
    then ``_make_strides(trainable)``."""

    def __init__(  # noqa: N807 (it becomes the layer's __init__)
        self,
        strides: Any = strides,
        *,
        trainable: bool = True,
        shared_stride: bool = False,
        **options: Any,
    ) -> None:
        for name, value in defaults.items():
            options.setdefault(name, value)
        self._start(bool(trainable), options)
        self._init_diffstride(strides, shared_stride, options)
        self._make_strides(bool(trainable))

    return with_options(__init__, defaults=defaults)


def per_rank(
    base: type,
    name: str,
    examples: Mapping[int, str],
    *,
    module: str,
    data_format: str,
    register: Callable[[type], type] = lambda cls: cls,
) -> tuple[type, ...]:
    """The 1-D, 2-D and 3-D layers of ``base``, as frameworks name their own (``name`` with
    the rank in it: ``"DiffStride{rank}d"``): a fixed ``rank``, and ``base``'s docstring with
    the rank's layout and ``examples[rank]``; ``register`` is applied to each (a framework's
    serialization registry)."""
    from diffstride._options import document_layer

    layers = []
    for rank, example in examples.items():
        qualname = name.format(rank=rank)
        namespace = {
            "rank": rank,
            "__module__": module,
            "__qualname__": qualname,
            "__doc__": document_layer(base.__doc__ or "", rank, data_format, example),
        }
        layers.append(register(type(qualname, (base,), namespace)))
    return tuple(layers)
