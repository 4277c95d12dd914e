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

import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffstride import _api
from diffstride._crop import check_read_strides
from diffstride._layers import (
    DiffStrideMixin,
    FixedCrops,
    FixedSpectralPoolingMixin,
    diffstride_init,
)
from diffstride._options import document_options

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

    __init__ = diffstride_init(data_format="channels_last")  # Flax's layout

    def _make_strides(self, trainable: bool) -> None:
        self.trainable = trainable
        self.strides = nnx.Param(jnp.asarray(self.initial_value, dtype=jnp.float32))
        # Static: a jitted call derives its crop from this copy, never from traced strides.
        self.fixed_crops = FixedCrops(self.initial_value)

    @property
    def crops(self) -> dict[tuple[int, ...], tuple[int, ...]]:
        """Input spatial sizes seen -> output spatial sizes, from the host copy of the strides."""
        return dict(self.fixed_crops.crops)

    def _stride_values(self) -> Any:
        return _read(self.strides)

    def __call__(self, x: Any) -> Any:
        backend = _api.get_backend("jax")
        sizes = self._checked_sizes(x, backend)
        strides = _read(self.strides)
        values = _concrete(strides)
        if values is not None:  # eager: the strides are checked and the copy follows them
            check_read_strides(values, len(sizes), "finite", self._stride_name())
            self._refresh_fixed_crops(values, sizes)
        crop = self._fixed_crop(sizes)
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

    def update_crops(self) -> bool:
        """Refresh the host copy of the strides, and so the crops (outside a trace); whether
        a crop changed."""
        values = _concrete(_read(self.strides))
        if values is None:
            raise ValueError(
                f"{type(self).__name__}.update_crops() reads the strides, which are traced "
                "here: call it (or diffstride.flax.update_crops) outside nnx.jit"
            )
        check_read_strides(values, self.spatial_rank or 1, "finite", self._stride_name())
        return self._refresh_fixed_crops(values)

    def refresh_crops(self) -> bool:
        """Deprecated name of :meth:`update_crops`."""
        warnings.warn(
            "DiffStride.refresh_crops() is deprecated; call update_crops()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.update_crops()

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


def _with_paths(model: Any) -> list[tuple[Any, DiffStride]]:
    return [(path, node) for path, node in nnx.iter_graph(model) if isinstance(node, DiffStride)]


def diffstride_layers(model: Any) -> list[DiffStride]:
    """Every :class:`DiffStride` in ``model`` (an NNX graph), in graph order."""
    return [layer for _, layer in _with_paths(model)]


def update_crops(model: Any, *args: Any, **kwargs: Any) -> None:
    """Refresh every DiffStride's host copy of its strides in ``model`` from the current
    strides, where that changes a crop; call it outside ``jit`` (between epochs, say). Jitted
    calls after it retrace where a crop changed.

    With example inputs, ``model(*args, **kwargs)`` is also traced once, abstractly
    (``jax.eval_shape``: nothing runs, and ``jax.ShapeDtypeStruct`` inputs do), so that the
    layers refresh their copies for the sizes they would see, as an eager call would;
    ``model``'s state is left as it was.
    """
    for layer in diffstride_layers(model):
        layer.update_crops()
    if not args and not kwargs:
        return
    graphdef, state = nnx.split(model)
    found: dict[Any, FixedCrops] = {}

    def run(*inputs: Any, **named: Any) -> None:
        # The state is closed over, not traced: the layers read their strides' values.
        copy = nnx.merge(graphdef, state)
        copy(*inputs, **named)
        found.update((path, layer.fixed_crops) for path, layer in _with_paths(copy))

    jax.eval_shape(run, *args, **kwargs)
    for path, layer in _with_paths(model):
        if path in found:
            layer.fixed_crops = found[path]
