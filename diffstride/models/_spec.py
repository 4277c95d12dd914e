"""Framework-neutral description of the original's ResNet, and its compute.

The original (google-research/diffstride ``resnet.py``) is a CIFAR-style ResNet whose stages
each get a stride. With a pooling layer, a stage's stride moves out of the convolution into
the pooling layer (the convolution keeps stride 1), and the main path and the shortcut of a
projection block share one pooling instance, so their shapes always match; the stem gets a
pooling layer too. Without one (``pooling=None``, "strided"), the convolutions stride.

Each layer of a block is ``conv -> [pool] -> BN -> ReLU -> conv -> BN`` plus the shortcut
(``1x1 conv -> [pool] -> BN`` in a projection block), then ReLU — as the original.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "POOLINGS",
    "ResNetSpec",
    "estimate_macs",
    "resnet18_spec",
    "small_spec",
    "stride_report",
]

#: Downsampling choices: learnable spectral, fixed spectral, strided average, strided conv.
POOLINGS = ("diffstride", "spectral", "spatial", None)


def check_pooling(pooling: Any) -> str | None:
    """``"strided"`` is an alias of ``None`` (strided convolutions)."""
    pooling = None if pooling == "strided" else pooling
    if pooling not in POOLINGS:
        raise ValueError(
            f"pooling must be one of {POOLINGS} or 'strided'; received pooling={pooling!r}"
        )
    return pooling


@dataclass(frozen=True)
class ResNetSpec:
    """Stage widths and strides; stage 0 is the stem, each later stage a block of layers."""

    filters: tuple[int, ...]
    strides: tuple[float, ...]
    num_layers: int
    kernel_size: int = 3
    #: Blocks (0-based, counting from the first stage after the stem) with no projection.
    id_only: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.filters) != len(self.strides):
            raise ValueError(
                f"strides must give one stride per stage ({len(self.filters)}); received "
                f"strides={list(self.strides)}"
            )
        if any(not s >= 1 for s in self.strides):
            raise ValueError(f"strides must be >= 1; received strides={list(self.strides)}")

    def layers(self) -> list[tuple[int, int, int, float, bool]]:
        """``(block, c_in, c_out, stride, project)`` for every residual layer, in order."""
        rows = []
        c_in = self.filters[0]
        for block, (c_out, stride) in enumerate(
            zip(self.filters[1:], self.strides[1:], strict=True)
        ):
            project = block not in self.id_only
            for index in range(self.num_layers):
                first = index == 0 and project
                rows.append((block, c_in, c_out, stride if first else 1.0, first))
                c_in = c_out
        return rows


def _strides(strides: Sequence[float] | None, default: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(s) for s in (default if strides is None else strides))


def resnet18_spec(strides: Sequence[float] | None = None) -> ResNetSpec:
    """The original's ``resnet18``: widths 64-512, strides ``[1, 1, 2, 2, 2]``."""
    return ResNetSpec((64, 64, 128, 256, 512), _strides(strides, (1, 1, 2, 2, 2)), 2, 3, (0,))


def small_spec(strides: Sequence[float] | None = None) -> ResNetSpec:
    """A narrow, one-layer-per-stage variant that trains on a 2-core CPU in minutes."""
    return ResNetSpec((16, 16, 24, 32, 48), _strides(strides, (1, 1, 2, 2, 2)), 1, 3, (0,))


def _ceil_div(n: int, s: float) -> int:
    return -(-n // int(s))


def estimate_macs(
    spec: ResNetSpec,
    input_size: tuple[int, int],
    *,
    in_channels: int,
    num_classes: int,
    pooling_sizes: Sequence[Callable[[tuple[int, int]], tuple[int, int]]] | None,
) -> int:
    """Multiply-accumulates of one forward pass for one image (convolutions and the dense
    layer; poolings, BN and activations are not counted).

    ``pooling_sizes`` are the pooling layers' ``output_size`` methods in forward order (stem,
    then each projection block), or None for strided convolutions.
    """
    k2 = spec.kernel_size**2
    pools = iter(pooling_sizes or ())
    h, w = input_size
    if pooling_sizes is None:
        h, w = _ceil_div(h, spec.strides[0]), _ceil_div(w, spec.strides[0])
        macs = 9 * in_channels * spec.filters[0] * h * w
    else:
        macs = 9 * in_channels * spec.filters[0] * h * w
        h, w = next(pools)((h, w))
    for _, c_in, c_out, stride, project in spec.layers():
        if project and pooling_sizes is not None:
            macs += (k2 * c_in * c_out + c_in * c_out) * h * w  # conv and shortcut, stride 1
            h, w = next(pools)((h, w))
        elif project:
            h, w = _ceil_div(h, stride), _ceil_div(w, stride)
            macs += (k2 * c_in * c_out + c_in * c_out) * h * w
        else:
            macs += k2 * c_in * c_out * h * w
        macs += k2 * c_out * c_out * h * w
    return macs + spec.filters[-1] * num_classes


def stride_report(pooling_layers: Sequence[Any], input_size: tuple[int, int]) -> list[dict]:
    """Each pooling layer of a model (forward order) with its current strides (DiffStride's
    learned ones) and its input and output sizes for an ``input_size`` image. Convolutions keep
    the size when a pooling layer downsamples, so the sizes chain from one layer to the next."""
    rows, size = [], tuple(input_size)
    for index, layer in enumerate(pooling_layers):
        output = tuple(layer.output_size(size))
        strides = layer.current_strides() if hasattr(layer, "current_strides") else None
        rows.append(
            {
                "index": index,
                "layer": type(layer).__name__,
                "strides": None if strides is None else list(strides),
                "input_size": list(size),
                "output_size": list(output),
            }
        )
        size = output
    return rows
