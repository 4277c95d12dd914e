"""Framework-neutral halves of the layers: arguments, validation, config, projection, repr.

As in einops, each framework's layer is this mixin plus a few lines (a torch ``forward``, a
Keras ``build``/``call``/``get_config``, a jax ``init``/``apply``): the arguments are checked
once, here, with the same messages everywhere, and the projection of the stride parameter
(the original's in-place ``assign`` after each call) is computed here from concrete values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from diffstride import _agnostic, _sizes
from diffstride._validation import (
    check_data_format,
    check_limits,
    check_method,
    check_ramp,
    check_smoothness_factor,
    check_spatial_sizes,
    check_stride_values,
    spatial_axes,
)

__all__ = ["DiffStrideMixin", "FixedSpectralPoolingMixin", "SpatialPoolingMixin"]


def _pair_of_strides(strides: Any) -> tuple[float, float]:
    values = check_stride_values(strides)
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


class _LayoutMixin:
    data_format: str
    _channels: int | None = None

    def _check_input_shape(
        self, shape: Sequence[Any], *, allow_unknown: bool = False
    ) -> tuple[Any, Any]:
        """Rank 4, spatial sizes >= 2 (static unless ``allow_unknown``), and the channel count
        of the first call (as a Keras ``InputSpec`` would) for the declared ``data_format``."""
        sizes = check_spatial_sizes(tuple(shape), self.data_format, allow_unknown=allow_unknown)
        channels = shape[1] if self.data_format == "channels_first" else shape[3]
        if channels is not None:
            if self._channels is None:
                self._channels = int(channels)
            elif int(channels) != self._channels:
                axis = 1 if self.data_format == "channels_first" else 3
                raise ValueError(
                    f"{type(self).__name__} was first called with {self._channels} channels on "
                    f"axis {axis} (data_format={self.data_format!r}); received an input of shape "
                    f"{tuple(shape)}. Is the data_format right?"
                )
        return sizes

    @property
    def _axes(self) -> tuple[int, int]:
        return spatial_axes(self.data_format)


class DiffStrideMixin(_LayoutMixin):
    """Arguments and stride bookkeeping of ``DiffStride`` (the original's
    ``LearnableSpectralPooling``), with its names and defaults."""

    def _init_diffstride(
        self,
        strides: Any = (2.0, 2.0),
        smoothness_factor: float = 4.0,
        cropping: bool = True,
        shared_stride: bool = False,
        lower_limit_stride: float | None = None,
        upper_limit_stride: float | None = None,
        data_format: str = "channels_first",
        method: str = "auto",
        ramp: str = "outside",
    ) -> None:
        pair = _pair_of_strides(strides)
        if shared_stride and pair[0] != pair[1]:
            raise ValueError(
                "shared_stride=True needs equal initial strides; received "
                f"strides={tuple(strides) if isinstance(strides, Sequence) else strides!r}"
            )
        self.initial_strides = pair
        self.smoothness_factor = check_smoothness_factor(smoothness_factor)
        self.cropping = bool(cropping)
        self.shared_stride = bool(shared_stride)
        self.lower_limit_stride, self.upper_limit_stride = check_limits(
            lower_limit_stride, upper_limit_stride
        )
        self.data_format = check_data_format(data_format)
        self.method = check_method(method)
        self.ramp = check_ramp(ramp)

    @property
    def stride_shape(self) -> tuple[int]:
        return (1,) if self.shared_stride else (2,)

    @property
    def initial_value(self) -> list[float]:
        return [self.initial_strides[0]] if self.shared_stride else list(self.initial_strides)

    def _functional_kwargs(self) -> dict[str, Any]:
        return {
            "smoothness_factor": self.smoothness_factor,
            "cropping": self.cropping,
            "data_format": self.data_format,
            "lower_limit_stride": self.lower_limit_stride,
            "upper_limit_stride": self.upper_limit_stride,
            "method": self.method,
            "ramp": self.ramp,
        }

    def _diffstride_config(self) -> dict[str, Any]:
        return {
            "strides": self.initial_strides,
            "shared_stride": self.shared_stride,
            **self._functional_kwargs(),
        }

    def current_strides(self) -> tuple[float, float]:
        """The stride values now held, as ``(s_h, s_w)`` floats."""
        values = [float(v) for v in np.asarray(self._stride_values()).reshape(-1)]
        return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])

    def _stride_values(self) -> Any:
        raise NotImplementedError

    def output_size(self, input_size: Sequence[int]) -> tuple[int, int]:
        """``(h, w)`` this layer returns for an ``(H, W)`` input, with the current strides.

        An optimizer step may leave the stored strides outside the limits (below 1, say) until
        the next call clips them, as the forward pass does: they are clipped here too."""
        low, high = self.stride_bounds
        return _sizes.output_size(
            input_size,
            tuple(min(max(value, low), high) for value in self.current_strides()),
            smoothness_factor=self.smoothness_factor,
            cropping=self.cropping,
            lower_limit_stride=self.lower_limit_stride,
            upper_limit_stride=self.upper_limit_stride,
            ramp=self.ramp,
        )

    @property
    def stride_bounds(self) -> tuple[float, float]:
        """``(lower_limit_stride or 1, upper_limit_stride or inf)``."""
        low = 1.0 if self.lower_limit_stride is None else self.lower_limit_stride
        high = float("inf") if self.upper_limit_stride is None else self.upper_limit_stride
        return low, high

    def _projected(self, strides: Any, sizes: Sequence[Any], *, clip: bool, xp: Any) -> Any:
        """The parameter after a training call (see ``_agnostic.projected_parameter``)."""
        return _agnostic.projected_parameter(
            strides,
            tuple(sizes),
            smoothness_factor=self.smoothness_factor,
            bounds=self.stride_bounds if clip else None,
            inside=self.ramp == "inside",
            xp=xp,
        )

    def _extra_repr(self) -> str:
        current = ", ".join(f"{v:.4g}" for v in self.current_strides())
        parts = [f"strides=({current})", f"smoothness_factor={self.smoothness_factor:g}"]
        if not self.cropping:
            parts.append("cropping=False")
        if self.shared_stride:
            parts.append("shared_stride=True")
        for name in ("lower_limit_stride", "upper_limit_stride"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name):g}")
        parts.append(f"data_format={self.data_format!r}")
        if self.method != "auto":
            parts.append(f"method={self.method!r}")
        if self.ramp != "outside":
            parts.append(f"ramp={self.ramp!r}")
        return ", ".join(parts)


class FixedSpectralPoolingMixin(_LayoutMixin):
    """Arguments of ``FixedSpectralPooling``: fixed strides >= 1, no parameter."""

    def _init_spectral(
        self, strides: Any = (2.0, 2.0), data_format: str = "channels_first", method: str = "auto"
    ) -> None:
        self.strides_value = _pair_of_strides(strides)
        self.data_format = check_data_format(data_format)
        self.method = check_method(method)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, int]:
        return _sizes.spectral_pooling_output_size(input_size, self.strides_value)

    def _extra_repr(self) -> str:
        return f"strides={self.strides_value}, data_format={self.data_format!r}"


class SpatialPoolingMixin(_LayoutMixin):
    """Arguments of ``SpatialPooling``: the original's strided average pooling, 'same' padding."""

    def _init_spatial(
        self, pool_size: Any = (1, 1), strides: Any = (2, 2), data_format: str = "channels_first"
    ) -> None:
        self.pool_size = _int_pair(pool_size, "pool_size")
        self.strides_value = _int_pair(strides, "strides")
        self.data_format = check_data_format(data_format)

    def output_size(self, input_size: Sequence[int]) -> tuple[int, int]:
        """'same' padding: ``ceil(N / stride)`` per axis."""
        return tuple(-(-int(n) // s) for n, s in zip(input_size, self.strides_value, strict=False))

    def _same_padding(self, sizes: tuple[int, int]) -> tuple[int, int, int, int]:
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
