"""Framework-neutral description of the original's ResNet.

The original (google-research/diffstride ``resnet.py``) is a CIFAR-style ResNet whose stages
each get a stride. With a pooling layer, a stage's stride moves out of the convolution into
the pooling layer (the convolution keeps stride 1), and the main path and the shortcut of a
projection block share one pooling instance, so their shapes always match; the stem gets a
pooling layer too. Without one (``pooling=None``, "strided"), the convolutions stride.

Each layer of a block is ``conv -> [pool] -> BN -> ReLU -> conv -> BN`` plus the shortcut
(``1x1 conv -> [pool] -> BN`` in a projection block), then ReLU — as the original. The
original's order runs the first convolution of a projection layer (and the stem's) at the
full resolution: at equal strides it costs fixed spectral pooling 1.34x the MACs of strided
convolutions in ResNet-18. ``pool_first=True`` pools the layer's input instead, once for both
paths (``[pool] -> conv -> BN -> ...`` and ``[pool] -> 1x1 conv -> BN``), so every convolution
runs on the smaller map, as a strided one does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from diffstride._validation import check_ramp, check_smoothness_factor

__all__ = [
    "POOLINGS",
    "ResNetSpec",
    "check_model_options",
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


def check_model_options(pooling: Any, ramp: Any, smoothness_factor: Any, pool_first: Any) -> Any:
    """The pooling (see :func:`check_pooling`) after checking the DiffStride options, so that
    a bad ``ramp`` fails for every pooling, not only where a DiffStride layer is built."""
    check_ramp(ramp)
    check_smoothness_factor(smoothness_factor)
    if not isinstance(pool_first, bool):
        raise TypeError(f"pool_first must be a bool; received pool_first={pool_first!r}")
    return check_pooling(pooling)


def _strides(strides: Sequence[float] | None, default: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(s) for s in (default if strides is None else strides))


def resnet18_spec(strides: Sequence[float] | None = None) -> ResNetSpec:
    """The original's ``resnet18``: widths 64-512, strides ``[1, 1, 2, 2, 2]``."""
    return ResNetSpec((64, 64, 128, 256, 512), _strides(strides, (1, 1, 2, 2, 2)), 2, 3, (0,))


def small_spec(strides: Sequence[float] | None = None) -> ResNetSpec:
    """A narrow, one-layer-per-stage variant that trains on a 2-core CPU in minutes."""
    return ResNetSpec((16, 16, 24, 32, 48), _strides(strides, (1, 1, 2, 2, 2)), 1, 3, (0,))


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
                "layer": getattr(layer, "kind", type(layer).__name__),
                "strides": None if strides is None else list(strides),
                "input_size": list(size),
                "output_size": list(output),
            }
        )
        size = output
    return rows
