"""The original's ResNet in PyTorch, with a choice of downsampling (see ``_spec``).

>>> import torch
>>> from diffstride.models.torch import small_resnet
>>> model = small_resnet(pooling="diffstride", in_channels=1, num_classes=10)
>>> model.eval()(torch.randn(2, 1, 28, 28)).shape
torch.Size([2, 10])
>>> [layer.current_strides() for layer in model.diffstride_layers()][:2]
[(1.0, 1.0), (2.0, 2.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import diffstride.torch as ds_torch
from diffstride._validation import check_macs_budget
from diffstride.models._spec import (
    ResNetSpec,
    check_model_options,
    resnet18_spec,
    small_spec,
    stride_report,
)
from diffstride.torch import DiffStride, FixedSpectralPooling, SpatialPooling

__all__ = ["ResNet", "macs_penalty", "resnet18", "small_resnet"]


def _pooling_layer(pooling: str, stride: float, options: dict[str, Any]) -> nn.Module:
    if pooling == "diffstride":
        return DiffStride(strides=(stride, stride), **options)
    if pooling == "spectral":
        return FixedSpectralPooling(strides=(stride, stride))
    return SpatialPooling(strides=(_int_stride(stride), _int_stride(stride)))


def _int_stride(stride: float) -> int:
    if stride != int(stride):
        raise ValueError(
            f"strided convolutions and spatial pooling need integer strides; received {stride}"
        )
    return int(stride)


def _conv(c_in: int, c_out: int, kernel: int, stride: float = 1) -> nn.Conv2d:
    # padding k // 2 gives ceil(N / s) outputs for k in {1, 3}: the original's 'same' sizes.
    conv = nn.Conv2d(c_in, c_out, kernel, _int_stride(stride), kernel // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    return conv


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)  # Keras momentum 0.9


class ResidualLayer(nn.Module):
    """``conv -> [pool] -> BN -> ReLU -> conv -> BN`` + shortcut, ReLU; the pooling is shared
    by the main path and the shortcut of a projection layer (``pool_first``: it pools the
    input once, before both convolutions)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: float,
        project: bool,
        pooling: Any,
        options: dict[str, Any],
        pool_first: bool = False,
    ) -> None:
        super().__init__()
        self.pool_first = pool_first
        self.pool = _pooling_layer(pooling, stride, options) if project and pooling else None
        conv_stride = stride if project and self.pool is None else 1
        self.conv1 = _conv(c_in, c_out, kernel, conv_stride)
        self.bn1 = _batch_norm(c_out)
        self.conv2 = _conv(c_out, c_out, kernel)
        self.bn2 = _batch_norm(c_out)
        self.shortcut = (
            nn.ModuleList([_conv(c_in, c_out, 1, conv_stride), _batch_norm(c_out)])
            if project
            else None
        )

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.pool is None else self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_first:
            x = self._pool(x)
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            if self.shortcut is not None:
                conv, bn = self.shortcut
                x = bn(conv(x))
            return torch.relu(y + x)
        y = torch.relu(self.bn1(self._pool(self.conv1(x))))
        y = self.bn2(self.conv2(y))
        if self.shortcut is not None:
            conv, bn = self.shortcut
            x = bn(self._pool(conv(x)))
        return torch.relu(y + x)


class ResNet(nn.Module):
    """The original's CIFAR-style ResNet for an architecture ``spec`` and a ``pooling``
    in ``"diffstride" | "spectral" | "spatial" | None`` (None or "strided": strided convs).

    ``ramp`` and ``smoothness_factor`` configure every DiffStride layer (see
    ``diffstride.torch.DiffStride``); ``pool_first`` pools each stage's input before its
    convolutions instead of after the first one (see ``diffstride.models._spec``).
    """

    def __init__(
        self,
        spec: ResNetSpec,
        *,
        pooling: Any = "diffstride",
        in_channels: int = 3,
        num_classes: int = 10,
        ramp: str = "outside",
        smoothness_factor: float = 4.0,
        pool_first: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.pooling = check_model_options(pooling, ramp, smoothness_factor, pool_first)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.pool_first = bool(pool_first and self.pooling)
        options = {"ramp": ramp, "smoothness_factor": smoothness_factor}
        stem_conv = _conv(in_channels, spec.filters[0], 3, 1 if self.pooling else spec.strides[0])
        stem = [stem_conv]
        if self.pooling:
            pool = _pooling_layer(self.pooling, spec.strides[0], options)
            stem = [pool, stem_conv] if self.pool_first else [stem_conv, pool]
        self.stem = nn.Sequential(*stem, _batch_norm(spec.filters[0]), nn.ReLU())
        self.blocks = nn.Sequential(
            *(
                ResidualLayer(
                    c_in,
                    c_out,
                    spec.kernel_size,
                    stride,
                    project,
                    self.pooling,
                    options,
                    self.pool_first,
                )
                for _, c_in, c_out, stride, project in spec.layers()
            )
        )
        self.head = nn.Linear(spec.filters[-1], num_classes)
        nn.init.kaiming_normal_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        return self.head(y.mean(dim=(2, 3)))

    def pooling_layers(self) -> list[nn.Module]:
        """The pooling layers in forward order (stem, then each projection layer)."""
        layers = [
            m
            for m in self.stem
            if isinstance(m, (DiffStride, FixedSpectralPooling, SpatialPooling))
        ]
        return layers + [block.pool for block in self.blocks if block.pool is not None]

    def diffstride_layers(self) -> list[DiffStride]:
        return [m for m in self.pooling_layers() if isinstance(m, DiffStride)]

    def stride_report(self, input_size: tuple[int, int]) -> list[dict]:
        """Each pooling layer's strides and sizes for an ``input_size`` image."""
        return stride_report(self.pooling_layers(), input_size)

    def example_input(self, input_size: tuple[int, int]) -> torch.Tensor:
        """One zero image of ``input_size`` on the model's device: what the MAC counters run."""
        device = next(self.parameters()).device
        return torch.zeros(1, self.in_channels, *input_size, device=device)

    def macs(self, input_size: tuple[int, int]) -> int:
        """Multiply-accumulates per image at the current strides: ``diffstride.torch.macs``
        of one ``input_size`` image (convolutions and the dense layer).

        >>> from diffstride.models.torch import small_resnet
        >>> small_resnet(pooling=None, in_channels=1).macs((28, 28))
        6900192
        """
        return ds_torch.macs(self, self.example_input(input_size))

    def macs_estimate(self, input_size: tuple[int, int]) -> torch.Tensor:
        """:meth:`macs` as a differentiable function of the DiffStride strides
        (``diffstride.torch.macs_estimate``); in a training loop, build one
        ``diffstride.torch.MacsEstimator(model, model.example_input(size))`` instead.

        >>> from diffstride.models.torch import small_resnet
        >>> model = small_resnet(pooling="diffstride", ramp="inside", in_channels=1)
        >>> round(float(model.macs_estimate((28, 28)))) == model.macs((28, 28))
        True
        """
        return ds_torch.macs_estimate(self, self.example_input(input_size))


def resnet18(strides: Sequence[float] | None = None, **kwargs: Any) -> ResNet:
    """The original's ``resnet18`` (strides ``[1, 1, 2, 2, 2]`` by default)."""
    return ResNet(resnet18_spec(strides), **kwargs)


def small_resnet(strides: Sequence[float] | None = None, **kwargs: Any) -> ResNet:
    """A narrow ResNet that trains on a CPU in minutes (strides ``[1, 1, 2, 2, 2]``)."""
    return ResNet(small_spec(strides), **kwargs)


def macs_penalty(model: ResNet, input_size: tuple[int, int], macs_budget: float) -> torch.Tensor:
    """``max(MACs / budget - 1, 0)`` with :meth:`ResNet.macs_estimate`: zero under
    ``macs_budget`` (multiply-accumulates per image), the relative excess above.

    >>> from diffstride.models.torch import small_resnet, macs_penalty
    >>> model = small_resnet(pooling="diffstride", ramp="inside", in_channels=1)
    >>> float(macs_penalty(model, (28, 28), 1e9))
    0.0
    """
    check_macs_budget(macs_budget)  # named as in this signature, before any forward pass
    return ds_torch.macs_penalty(model, model.example_input(input_size), macs_budget)
