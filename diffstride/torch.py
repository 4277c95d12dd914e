"""PyTorch front-end: functions for torch tensors and ``nn.Module`` layers per spatial rank.

The layers are the neutral mixins of ``diffstride._layers`` plus a ``forward``, named as torch
names its own (``DiffStride1d``, ``DiffStride2d`` = ``DiffStride``, ``DiffStride3d``).
``DiffStride*`` holds its stride as an ``nn.Parameter`` named ``strides`` (one per spatial
axis, or one with ``shared_stride``); in training mode each forward pass projects it in place
(no autograd) as the original does after each call, ``S <- max(S, N / (N - R))``, and then
clips it to the limits (the original leaves that to a Keras constraint at the next optimizer
step; torch has no constraints, so the clip happens here). With ``ramp="inside"`` there is no
projection, only the clip. Eval mode mutates nothing.

Export (``torch.export``, ONNX, ``torch.jit.trace``) records a graph whose crop is fixed from
the strides held then; ``torch.compile`` reads the strides in one graph break, or under
``fullgraph=True`` takes the crop of the last eager call; ``torch.func`` transforms read the
wrapped strides. How each tracer is recognised lives in ``_torch_tracing``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffstride import _api, _torch_tracing, _tracing
from diffstride._complexity import complexity_penalty_of
from diffstride._layers import (
    DiffStrideMixin,
    FixedSpectralPoolingMixin,
    SpatialPoolingMixin,
    diffstride_init,
    per_rank,
)
from diffstride._torch_convert import DiffStrided, convert, downsampling_points
from diffstride._torch_macs import MacsEstimator, macs, macs_estimate, macs_penalty

__all__ = [
    "DiffStride",
    "DiffStride1d",
    "DiffStride2d",
    "DiffStride3d",
    "DiffStrided",
    "FixedSpectralPooling",
    "FixedSpectralPooling1d",
    "FixedSpectralPooling2d",
    "FixedSpectralPooling3d",
    "MacsEstimator",
    "SpatialPooling",
    "complexity_penalty",
    "convert",
    "diffstride",
    "diffstride_layers",
    "downsampling_points",
    "macs",
    "macs_estimate",
    "macs_penalty",
    "spectral_pooling",
]

diffstride, spectral_pooling = _api.bind("torch")
_BACKEND = _api.get_backend("torch")  # loaded by bind: no entry-point lookup while tracing
_HOST_DTYPES = (torch.float32, torch.float64)


class _DiffStride(_torch_tracing.TracedLayer, DiffStrideMixin, nn.Module):
    """Spectral pooling with learnable strides (Riad et al., ICLR 2022) over {rank} spatial
    axes: input ``{layout}``.

    Parameters
    ----------
    strides
        Initial strides, each >= 1: one per spatial axis, or one number for every axis.
    trainable
        Whether ``strides`` receives gradients (``requires_grad``).
    shared_stride
        One stride parameter for every axis (equal initial strides required).
    {options}

    In training mode, ``strides`` stores what the layer acted with: with the outside ramp the
    original's projection ``max(S, N / (N - R))``, clipped to the limits; with the inside
    ramp only the clip to the limits (any ``S >= 1`` fits). ``forward(x, output_size=None)``
    takes a static ``output_size`` that fixes the crop (then nothing is projected).

    Examples
    --------
    {example}
    """

    __init__ = diffstride_init(strides=2.0)

    def _start(self, trainable: bool, options: dict[str, Any]) -> None:
        nn.Module.__init__(self)

    def _make_strides(self, trainable: bool) -> None:
        # Setting it starts the host copy of the strides (``fixed_crops``), unread.
        self.strides = nn.Parameter(
            torch.tensor(self.initial_value, dtype=torch.float32), requires_grad=trainable
        )

    def reset_parameters(self) -> None:
        """Set the strides back to their initial value, in place (``nn.Module``'s convention:
        meta-device construction, ``to_empty`` and this give the layer it was built as)."""
        with torch.no_grad():
            initial = torch.tensor(self.initial_value, dtype=torch.float32)
            self.strides.copy_(initial.to(self.strides.device, self.strides.dtype))
        self._forget_crops()

    def _stride_values(self) -> Any:
        if self.strides.is_meta:
            # No values yet: those of the layer as built (to_empty + reset_parameters).
            return self.initial_value
        if _torch_tracing.exporting():
            return _torch_tracing.read_outside_trace(self._live_strides(), _BACKEND.concrete)
        return _BACKEND.concrete(self.strides)  # also under torch.func transforms

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        """A loaded stride must be finite and >= 1, one per axis (or one shared)."""
        key = f"{prefix}strides"
        if isinstance(state_dict.get(key), torch.Tensor):
            self._check_stored_strides(state_dict[key].detach().cpu().float().numpy(), key)
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._remember_strides()  # load_state_dict(assign=True) replaces the parameter
        self._forget_crops()

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        sizes = self._checked_sizes(x, _BACKEND)
        if _torch_tracing.exporting():
            return self._exported(x, sizes, output_size)
        output_size, compiling = self._traced_output_size(x, sizes, output_size)
        project = self.training and output_size is None
        crop = None if output_size is not None or compiling else self._eager_crop(sizes, x)
        # The projection decided from the host copy, in the parameter's (numpy) precision.
        on_host = project and crop is not None and self.strides.dtype in _HOST_DTYPES
        projected = self._host_projection(sizes) if on_host else None
        y = _api.diffstride_on(
            _BACKEND,
            x,
            self._strides_for_call(project and (projected is not None or not on_host)),
            self.options,
            output_size=output_size if crop is None else crop,
            sizes=sizes,
            # Below the bound is clipped (an optimizer step may leave it); loads check all.
            check_values="finite" if output_size is None and crop is None else False,
            name=self._stride_name(),
            host_strides=None if crop is None else self.fixed_crops.strides,
        )
        if projected is not None:
            self._write_projection(projected)
        elif project and not on_host:
            _BACKEND.untraced(_DiffStride._project_in_place)(self, sizes)
        return y

    def _project_in_place(self, sizes: Sequence[Any]) -> None:
        """Outside any compiled graph (see ``forward``)."""
        with torch.no_grad():
            xp = _BACKEND.namespace()
            self.strides.copy_(self._projected(self.strides, sizes, clip=True, xp=xp))

    def extra_repr(self) -> str:
        return self._extra_repr()


class _FixedSpectralPooling(FixedSpectralPoolingMixin, nn.Module):
    """Fixed spectral pooling (the original's ``FixedSpectralPooling``) over {rank} spatial
    axes: input ``{layout}``; no parameter. ``method`` as for ``DiffStride``.

    {example}
    """

    def __init__(
        self, strides: Any = 2.0, data_format: str = "channels_first", method: str = "auto"
    ) -> None:
        nn.Module.__init__(self)
        self._init_spectral(strides, data_format, method)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = self._checked_sizes(x, _BACKEND)
        return _api.spectral_pooling_on(
            _BACKEND,
            x,
            self.strides_value,
            data_format=self.data_format,
            # An exporter records the GEMMs (the same map): every exporter translates them.
            method="matmul" if _torch_tracing.exporting() else self.method,
            sizes=sizes,
        )

    def extra_repr(self) -> str:
        return self._extra_repr()


DiffStride1d, DiffStride2d, DiffStride3d = per_rank(
    _DiffStride,
    "DiffStride{rank}d",
    {
        1: """>>> import torch
    >>> from diffstride.torch import DiffStride1d
    >>> DiffStride1d(strides=4.0)(torch.randn(2, 1, 1000)).shape
    torch.Size([2, 1, 258])""",
        2: """>>> import torch
    >>> from diffstride.torch import DiffStride
    >>> layer = DiffStride(strides=(2.0, 2.0))
    >>> layer(torch.randn(8, 3, 32, 32)).shape
    torch.Size([8, 3, 24, 24])
    >>> DiffStride((2.0, 2.0), ramp="inside").output_size((32, 32))
    (16, 16)""",
        3: """>>> import torch
    >>> from diffstride.torch import DiffStride3d
    >>> DiffStride3d(strides=(1.0, 2.0, 2.0))(torch.randn(1, 2, 8, 32, 32)).shape
    torch.Size([1, 2, 8, 24, 24])""",
    },
    module=__name__,
    data_format="channels_first",
)
FixedSpectralPooling1d, FixedSpectralPooling2d, FixedSpectralPooling3d = per_rank(
    _FixedSpectralPooling,
    "FixedSpectralPooling{rank}d",
    {
        1: """>>> import torch
    >>> from diffstride.torch import FixedSpectralPooling1d
    >>> FixedSpectralPooling1d(4)(torch.randn(1, 3, 100)).shape
    torch.Size([1, 3, 25])""",
        2: """>>> import torch
    >>> from diffstride.torch import FixedSpectralPooling
    >>> FixedSpectralPooling((2, 2))(torch.randn(1, 3, 32, 32)).shape
    torch.Size([1, 3, 16, 16])""",
        3: """>>> import torch
    >>> from diffstride.torch import FixedSpectralPooling3d
    >>> FixedSpectralPooling3d(2)(torch.randn(1, 3, 8, 8, 8)).shape
    torch.Size([1, 3, 4, 4, 4])""",
    },
    module=__name__,
    data_format="channels_first",
)
DiffStride = DiffStride2d
FixedSpectralPooling = FixedSpectralPooling2d
# The layers' untraced steps, wrapped now rather than while tracing (see Backend.untraced).
_tracing.prepare(_BACKEND, [torch.clone, _DiffStride._project_in_place])


class SpatialPooling(SpatialPoolingMixin, nn.Module):
    """Strided average pooling with TensorFlow's 'same' padding (the original's choice).

    >>> import torch
    >>> from diffstride.torch import SpatialPooling
    >>> SpatialPooling(pool_size=(3, 3), strides=(2, 2))(torch.randn(1, 3, 15, 15)).shape
    torch.Size([1, 3, 8, 8])
    """

    def __init__(
        self, pool_size: Any = (1, 1), strides: Any = (2, 2), data_format: str = "channels_first"
    ) -> None:
        nn.Module.__init__(self)
        self._init_spatial(pool_size, strides, data_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = self._check_input_shape(x.shape)
        if self.data_format == "channels_last":
            x = x.permute(0, 3, 1, 2)
        top, bottom, left, right = self._same_padding(sizes)
        if top or bottom or left or right:
            # 'same' averages over the valid cells only: divide by the pooled ones-mask.
            padded = F.pad(x, (left, right, top, bottom))
            ones = F.pad(torch.ones_like(x[:1, :1]), (left, right, top, bottom))
            y = F.avg_pool2d(padded, self.pool_size, self.strides_value) / F.avg_pool2d(
                ones, self.pool_size, self.strides_value
            )
        else:
            y = F.avg_pool2d(x, self.pool_size, self.strides_value)
        return y.permute(0, 2, 3, 1) if self.data_format == "channels_last" else y

    def extra_repr(self) -> str:
        return self._extra_repr()


def complexity_penalty(model_or_layers: nn.Module | Sequence[_DiffStride]) -> torch.Tensor:
    """The paper's complexity regularizer over the DiffStride layers of a model, in the
    order they were registered (the forward order for ``nn.Sequential`` and most models);
    differentiable with respect to their strides.

    >>> import torch
    >>> from diffstride.torch import DiffStride, complexity_penalty
    >>> complexity_penalty(torch.nn.Sequential(DiffStride((2.0, 2.0)), DiffStride((2.0, 2.0))))
    tensor(0.3125, grad_fn=<AddBackward0>)
    """
    layers = diffstride_layers(model_or_layers)
    ranks = [layer.rank for layer in layers]
    return complexity_penalty_of([layer.strides for layer in layers], xp=torch, ranks=ranks)


def diffstride_layers(model_or_layers: nn.Module | Sequence[_DiffStride]) -> list[_DiffStride]:
    """The DiffStride layers of a model (nested ones too), in the order they were
    registered; or a given list, unchanged."""
    if isinstance(model_or_layers, nn.Module):
        return [m for m in model_or_layers.modules() if isinstance(m, _DiffStride)]
    return list(model_or_layers)
