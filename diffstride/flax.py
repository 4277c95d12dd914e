"""Flax NNX front-end: ``DiffStride`` and ``FixedSpectralPooling`` as ``nnx.Module``.

The strides are an ``nnx.Param``: ``nnx.grad`` differentiates them and ``nnx.Optimizer``
updates them with the rest of the model. The crop (the output's spatial size) is not a
function of traced values, so under ``nnx.jit`` it cannot follow the strides. Each layer keeps
it as a static attribute instead, ``crops``: input spatial sizes -> output spatial sizes,
plain Python that NNX treats as part of the graph's structure, so a jitted step reads it as a
constant and retraces when it changes. The strides still learn through the mask within that
crop, as with a static ``output_size`` in ``diffstride.jax``.

A crop is computed from the current strides the first time a layer sees an input size where
the strides can be read: an eager call, or :func:`update_crops` with example inputs. Under a
trace, a size without a crop is an error that says so. Between epochs (outside ``jit``),
:func:`update_crops` recomputes every crop from the strides learned since; the next jitted
call retraces with the new output sizes where a crop changed, and reuses its compiled step
where none did.

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
from diffstride._layers import DiffStrideMixin, FixedSpectralPoolingMixin, _LayoutMixin
from diffstride._options import document_options, with_options
from diffstride._validation import check_input

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


class _Layout(_LayoutMixin):
    def _checked_sizes(self, x: Any, backend: Any) -> tuple[Any, ...]:
        # The channel count is recorded eagerly only: recorded under ``nnx.jit``, it would
        # change the graph's static part after the first step, and the second would retrace.
        if self._channels is None and isinstance(x, jax.core.Tracer):
            return check_input(x, self.data_format, backend, rank=self.spatial_rank)
        return super()._checked_sizes(x, backend)


class DiffStride(_Layout, DiffStrideMixin, nnx.Module):
    """DiffStride (Riad et al., ICLR 2022) as a Flax NNX module, for 1, 2 or 3 spatial axes
    (as many as ``strides`` has entries; any with ``shared_stride``).

    ``strides`` is an ``nnx.Param`` of float32 values. ``layer(x)`` crops to ``crops[sizes]``
    for ``x``'s spatial sizes, computed from the strides the first time those sizes are seen
    outside a trace (see the module docstring); :func:`update_crops` refreshes it.
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
        #: Input spatial sizes -> output spatial sizes: static, the crop of each traced call.
        self.crops: dict[tuple[int, ...], tuple[int, ...]] = {}

    def _stride_values(self) -> Any:
        return _read(self.strides)

    def __call__(self, x: Any) -> Any:
        backend = _api.get_backend("jax")
        sizes = self._checked_sizes(x, backend)
        strides = _read(self.strides)
        crop = self.crops.get(sizes)
        if crop is None:
            crop = self._new_crop(sizes, strides)
        if not self.trainable:
            strides = jax.lax.stop_gradient(strides)
        return _api.diffstride_on(
            backend,
            x,
            strides,
            self.options,
            output_size=crop,
            sizes=sizes,
            check_values="finite",
            name=self._stride_name(),
        )

    def _new_crop(self, sizes: tuple[int, ...], strides: Any) -> tuple[int, ...]:
        values = _concrete(strides)
        if values is None:
            raise ValueError(
                f"{type(self).__name__} has no crop for inputs of spatial sizes {sizes} and "
                "cannot compute one under a trace (nnx.jit) from traced strides. Call the "
                "model once outside jit on inputs of this shape, or "
                "diffstride.flax.update_crops(model, example_inputs) (which accepts "
                "jax.ShapeDtypeStruct), before the jitted step; known sizes: "
                f"{sorted(self.crops) or 'none'}"
            )
        check_read_strides(values, len(sizes), "finite", self._stride_name())
        crop = tuple(int(n) for n in self._output_size_with(sizes, values.reshape(-1)))
        # A new dict, never one changed in place: the old one may be a jit cache's key.
        self.crops = {**self.crops, sizes: crop}
        return crop

    def refresh_crops(self) -> None:
        """Recompute every stored crop from the current strides (outside a trace)."""
        self.crops = self._current_crops(self.crops)

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


class FixedSpectralPooling(_Layout, FixedSpectralPoolingMixin, nnx.Module):
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


def diffstride_layers(model: Any) -> list[tuple[Any, DiffStride]]:
    """``(path, layer)`` for every :class:`DiffStride` in ``model`` (an NNX graph)."""
    return [(path, node) for path, node in nnx.iter_graph(model) if isinstance(node, DiffStride)]


def update_crops(model: Any, *args: Any, **kwargs: Any) -> None:
    """Recompute every DiffStride crop in ``model`` from the current strides; call it outside
    ``jit`` (between epochs, say). Jitted calls after it retrace where a crop changed.

    With example inputs, ``model(*args, **kwargs)`` is also traced once, abstractly
    (``jax.eval_shape``: nothing runs, and ``jax.ShapeDtypeStruct`` inputs do), so that the
    layers compute the crops of the sizes they would see, as an eager call would; ``model``'s
    state is left as it was.
    """
    for _, layer in diffstride_layers(model):
        layer.refresh_crops()
    if not args and not kwargs:
        return
    graphdef, state = nnx.split(model)
    found: dict[Any, dict[tuple[int, ...], tuple[int, ...]]] = {}

    def run(*inputs: Any, **named: Any) -> None:
        # The state is closed over, not traced: the layers read their strides' values.
        copy = nnx.merge(graphdef, state)
        copy(*inputs, **named)
        found.update((path, layer.crops) for path, layer in diffstride_layers(copy))

    jax.eval_shape(run, *args, **kwargs)
    for path, layer in diffstride_layers(model):
        new = found.get(path, {})
        if any(sizes not in layer.crops for sizes in new):
            layer.crops = {**new, **layer.crops}
