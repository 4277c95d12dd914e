"""Flax NNX front-end: ``DiffStride`` and ``FixedSpectralPooling`` as ``nnx.Module``.

The strides are an ``nnx.Param``: ``nnx.grad`` differentiates them and ``nnx.Optimizer``
updates them with the rest of the model. The crop (the output's spatial size) is not a
function of traced values, so under ``nnx.jit`` it cannot follow the strides. Each layer keeps
a host copy of its strides instead, a static attribute (plain Python, part of the graph's
structure, so a jitted step reads it as a constant and retraces when it changes), and derives
the crop of any input size from it, under a trace too: the first jitted step of a fresh model
works. The strides still learn through the mask within that crop, as with a static
``output_size`` in ``diffstride.jax``.

An eager call (where the strides can be read) and :func:`update_crops` (between epochs,
outside ``jit``) refresh the host copy from the strides where that changes the crop of a size
the layer has seen (or of the size at hand): the next jitted call retraces where a crop
changed, and reuses its compiled step where none did.

Flax's convolutions are channels_last, and so are these layers by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffstride import _api
from diffstride._crop import check_read_strides
from diffstride._layers import DiffStrideMixin, FixedSpectralPoolingMixin
from diffstride._options import document_options, with_options

__all__ = ["DiffStride", "FixedSpectralPooling", "diffstride_layers", "update_crops"]


def _read(variable: nnx.Variable) -> Any:
    getter = getattr(variable, "get_value", None)
    return getter() if getter is not None else variable.value


def _write(variable: nnx.Variable, value: Any) -> None:
    setter = getattr(variable, "set_value", None)
    if setter is not None:
        setter(value)
    else:  # flax < 0.12
        variable.value = value


def _concrete(value: Any) -> np.ndarray | None:
    """``value``'s numbers, or None under a trace that hides them (``jit``)."""
    try:
        return np.asarray(value)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        pass
    return _api.get_backend("jax").concrete(value)  # a JVP tracer (eager ``nnx.grad``)


class _Crops:
    """A layer's host copy of its strides (compared and hashed: the jit cache's key) and the
    crops derived from it, a cache of the sizes seen (eager or traced) that is no part of the
    key: a crop is a function of the copy, so a cached trace stays right for its key."""

    __slots__ = ("crops", "strides")

    def __init__(self, strides: tuple[float, ...], crops: dict | None = None) -> None:
        self.strides = strides
        self.crops: dict[tuple[int, ...], tuple[int, ...]] = dict(crops or {})

    def __eq__(self, other: object) -> bool:
        return type(other) is _Crops and other.strides == self.strides

    def __hash__(self) -> int:
        return hash(self.strides)

    def __repr__(self) -> str:
        return f"_Crops(strides={self.strides}, crops={self.crops})"


class DiffStride(DiffStrideMixin, nnx.Module):
    """DiffStride (Riad et al., ICLR 2022) as a Flax NNX module, for 1, 2 or 3 spatial axes
    (as many as ``strides`` has entries; any with ``shared_stride``).

    ``strides`` is an ``nnx.Param`` of float32 values. ``layer(x)`` crops to the output size
    that the layer's host copy of its strides gives for ``x``'s spatial sizes, under
    ``nnx.jit`` too; an eager call and :func:`update_crops` refresh that copy (see the module
    docstring). ``crops`` maps the sizes seen to their output sizes.
    :meth:`project` applies the original's projection ``S <- clip(max(S, N / (N - R)), lower,
    upper)`` (with ``ramp="inside"``, only the clip) in place: call it after each optimizer
    step, inside the jitted step or not. Eager calls check that the strides are finite.

    Parameters
    ----------
    strides
        Initial strides, each >= 1, one per spatial axis.
    trainable
        Whether gradients reach ``strides`` (False: ``stop_gradient``; the ``nnx.Param`` is
        still there, so leave it out of a weight-decaying optimizer).
    shared_stride
        One stride for every axis (equal initial strides required).
    {options}

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from diffstride.flax import DiffStride, update_crops
    >>> layer = DiffStride(strides=(2.0, 2.0))
    >>> x = jnp.ones((4, 32, 32, 3))
    >>> layer(x).shape
    (4, 24, 24, 3)
    >>> nnx.jit(lambda m, a: m(a))(layer, x).shape
    (4, 24, 24, 3)
    >>> layer.strides[...] = jnp.array([4.0, 4.0])
    >>> update_crops(layer)
    >>> layer(x).shape
    (4, 16, 16, 3)
    """

    def __init__(
        self,
        strides: Any = (2.0, 2.0),
        *,
        trainable: bool = True,
        shared_stride: bool = False,
        **options: Any,
    ) -> None:
        options.setdefault("data_format", "channels_last")
        self._init_diffstride(strides, shared_stride, options)
        self.trainable = bool(trainable)
        self.strides = nnx.Param(jnp.asarray(self.initial_value, dtype=jnp.float32))
        # Static: a jitted call derives its crop from this copy, never from traced strides.
        self._host = _Crops(_host_strides(self.initial_value))

    @property
    def crops(self) -> dict[tuple[int, ...], tuple[int, ...]]:
        """Input spatial sizes seen -> output spatial sizes, from the host copy of the strides."""
        return dict(self._host.crops)

    def _stride_values(self) -> Any:
        return _read(self.strides)

    def __call__(self, x: Any) -> Any:
        backend = _api.get_backend("jax")
        sizes = self._checked_sizes(x, backend)
        strides = _read(self.strides)
        values = _concrete(strides)
        if values is not None:  # eager: the strides are checked and the copy follows them
            check_read_strides(values, len(sizes), "finite", self._stride_name())
            self._refresh(values, sizes)
        crop = self._crop(sizes)
        if not self.trainable:
            strides = jax.lax.stop_gradient(strides)
        return _api.diffstride_on(
            backend,
            x,
            strides,
            self.options,
            output_size=crop,
            sizes=sizes,
            check_values=False,
            name=self._stride_name(),
        )

    def _crop(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        host = self._host
        crop = host.crops.get(sizes)
        if crop is None:
            # Recorded in place, not by assignment: under a trace that would change the
            # graph's structure, and the next step would retrace.
            crop = host.crops[sizes] = self._output_size_with(sizes, host.strides)
        return crop

    def _refresh(self, values: Any, sizes: tuple[int, ...] | None = None) -> bool:
        """Take ``values`` (the strides, concrete) as the host copy where that changes the
        crop of a size seen or of ``sizes``, or where no size has been seen; whether it did."""
        host = self._host
        strides = _host_strides(values)
        if strides == host.strides:
            return False
        seen = {*host.crops, *([sizes] if sizes is not None else [])}
        crops = {each: self._output_size_with(each, strides) for each in seen}
        if seen and all(self._crop(each) == crop for each, crop in crops.items()):
            return False  # the compiled steps stay right: keep their key
        self._host = _Crops(strides, crops)
        return True

    def refresh_crops(self) -> None:
        """Refresh the host copy of the strides, and so the crops (outside a trace)."""
        values = _concrete(_read(self.strides))
        if values is None:
            raise ValueError(
                f"{type(self).__name__}.refresh_crops() reads the strides, which are traced "
                "here: call it (or diffstride.flax.update_crops) outside nnx.jit"
            )
        check_read_strides(values, self.spatial_rank or 1, "finite", self._stride_name())
        self._refresh(values)

    def project(self, input_size: Sequence[int] | None = None) -> None:
        """Store the original's projection of the strides for inputs of spatial sizes
        ``input_size`` (by default the sizes this layer has seen, if there is one)."""
        if input_size is None:
            if len(self.crops) != 1:
                raise ValueError(
                    f"{type(self).__name__}.project() needs input_size: the layer has seen "
                    f"{len(self.crops)} input sizes ({sorted(self.crops)})"
                )
            (sizes,) = self.crops
        else:
            sizes = tuple(int(n) for n in input_size)
        projected = self._projected(_read(self.strides), sizes, clip=True, xp=jnp)
        _write(self.strides, jax.lax.stop_gradient(projected))

    def __repr__(self) -> str:
        values = _concrete(_read(self.strides))
        if values is None:
            return f"{type(self).__name__}(traced strides, data_format={self.data_format!r})"
        return f"{type(self).__name__}({self._extra_repr()})"


# The options in the signature and the docs, with Flax's layout as the default.
with_options(DiffStride.__init__, defaults={"data_format": "channels_last"})
DiffStride.__doc__ = document_options(DiffStride.__doc__ or "")


class FixedSpectralPooling(FixedSpectralPoolingMixin, nnx.Module):
    """Fixed spectral pooling (the original's ``FixedSpectralPooling``): a crop of the
    spectrum to ``N // S`` per axis, no parameter; 1, 2 or 3 spatial axes (as many as
    ``strides`` has entries).

    >>> import jax.numpy as jnp
    >>> from diffstride.flax import FixedSpectralPooling
    >>> FixedSpectralPooling((2, 3))(jnp.zeros((2, 33, 17, 4))).shape
    (2, 16, 5, 4)
    """

    def __init__(
        self, strides: Any = (2, 2), *, data_format: str = "channels_last", method: str = "auto"
    ) -> None:
        self._init_spectral(strides, data_format, method)

    def __call__(self, x: Any) -> Any:
        backend = _api.get_backend("jax")
        return _api.spectral_pooling_on(
            backend,
            x,
            self.strides_value,
            data_format=self.data_format,
            method=self.method,
            sizes=self._checked_sizes(x, backend),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._extra_repr()})"


def _host_strides(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float32).reshape(-1))


def diffstride_layers(model: Any) -> list[tuple[Any, DiffStride]]:
    """``(path, layer)`` for every :class:`DiffStride` in ``model`` (an NNX graph)."""
    return [(path, node) for path, node in nnx.iter_graph(model) if isinstance(node, DiffStride)]


def update_crops(model: Any, *args: Any, **kwargs: Any) -> None:
    """Refresh every DiffStride's host copy of its strides in ``model`` from the current
    strides, where that changes a crop; call it outside ``jit`` (between epochs, say). Jitted
    calls after it retrace where a crop changed.

    With example inputs, ``model(*args, **kwargs)`` is also traced once, abstractly
    (``jax.eval_shape``: nothing runs, and ``jax.ShapeDtypeStruct`` inputs do), so that the
    layers refresh their copies for the sizes they would see, as an eager call would;
    ``model``'s state is left as it was.
    """
    for _, layer in diffstride_layers(model):
        layer.refresh_crops()
    if not args and not kwargs:
        return
    graphdef, state = nnx.split(model)
    found: dict[Any, _Crops] = {}

    def run(*inputs: Any, **named: Any) -> None:
        # The state is closed over, not traced: the layers read their strides' values.
        copy = nnx.merge(graphdef, state)
        copy(*inputs, **named)
        found.update((path, layer._host) for path, layer in diffstride_layers(copy))

    jax.eval_shape(run, *args, **kwargs)
    for path, layer in diffstride_layers(model):
        if path in found:
            layer._host = found[path]
