"""The original's ResNet in PyTorch, with a choice of downsampling (see ``_spec``).

>>> import torch
>>> from diffstride.models.torch import small_resnet
>>> model = small_resnet(pooling="diffstride", in_channels=1, num_classes=10)
>>> model(torch.randn(2, 1, 28, 28)).shape
torch.Size([2, 10])
>>> [layer.current_strides() for layer in model.diffstride_layers()][:2]
[(1.0, 1.0), (1.0, 1.0)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from diffstride.models._spec import (
    ResNetSpec,
    check_pooling,
    estimate_macs,
    resnet18_spec,
    small_spec,
    stride_report,
)
from diffstride.torch import DiffStride, FixedSpectralPooling, SpatialPooling

__all__ = ["ResNet", "resnet18", "small_resnet"]


def _pooling_layer(pooling: str, stride: float) -> nn.Module:
    if pooling == "diffstride":
        return DiffStride(strides=(stride, stride))
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
    by the main path and the shortcut of a projection layer."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: float, project: bool, pooling: Any
    ) -> None:
        super().__init__()
        self.pool = _pooling_layer(pooling, stride) if project and pooling else None
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
        y = torch.relu(self.bn1(self._pool(self.conv1(x))))
        y = self.bn2(self.conv2(y))
        if self.shortcut is not None:
            conv, bn = self.shortcut
            x = bn(self._pool(conv(x)))
        return torch.relu(y + x)


class ResNet(nn.Module):
    """The original's CIFAR-style ResNet for an architecture ``spec`` and a ``pooling``
    in ``"diffstride" | "spectral" | "spatial" | None`` (None or "strided": strided convs)."""

    def __init__(
        self,
        spec: ResNetSpec,
        *,
        pooling: Any = "diffstride",
        in_channels: int = 3,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.spec, self.pooling = spec, check_pooling(pooling)
        self.in_channels, self.num_classes = in_channels, num_classes
        stem = [_conv(in_channels, spec.filters[0], 3, 1 if self.pooling else spec.strides[0])]
        if self.pooling:
            stem.append(_pooling_layer(self.pooling, spec.strides[0]))
        self.stem = nn.Sequential(*stem, _batch_norm(spec.filters[0]), nn.ReLU())
        self.blocks = nn.Sequential(
            *(
                ResidualLayer(c_in, c_out, spec.kernel_size, stride, project, self.pooling)
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

    def macs(self, input_size: tuple[int, int]) -> int:
        """Multiply-accumulates per image at the current strides (see ``estimate_macs``)."""
        return estimate_macs(
            self.spec,
            input_size,
            in_channels=self.in_channels,
            num_classes=self.num_classes,
            pooling_sizes=[p.output_size for p in self.pooling_layers()] if self.pooling else None,
        )


def resnet18(strides: Sequence[float] | None = None, **kwargs: Any) -> ResNet:
    """The original's ``resnet18`` (strides ``[1, 1, 2, 2, 2]`` by default)."""
    return ResNet(resnet18_spec(strides), **kwargs)


def small_resnet(strides: Sequence[float] | None = None, **kwargs: Any) -> ResNet:
    """A narrow ResNet that trains on a CPU in minutes (strides ``[1, 1, 2, 2, 2]``)."""
    return ResNet(small_spec(strides), **kwargs)
