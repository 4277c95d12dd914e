"""ResNets with a choice of downsampling, as in the original repository.

``diffstride.models.torch`` and ``diffstride.models.keras`` build the same architecture from
one framework-neutral description (:class:`ResNetSpec`); their MACs are counted by the
framework's generic counters (``diffstride.torch.macs``, ``diffstride.keras.macs``), the same
ones any converted model uses.
"""

from diffstride.models._spec import (
    POOLINGS,
    ResNetSpec,
    resnet18_spec,
    small_spec,
    stride_report,
)

__all__ = [
    "POOLINGS",
    "ResNetSpec",
    "resnet18_spec",
    "small_spec",
    "stride_report",
]
