"""ResNets with a choice of downsampling, as in the original repository.

``diffstride.models.torch`` and ``diffstride.models.keras`` build the same architecture from
one framework-neutral description (:class:`ResNetSpec`), and :func:`estimate_macs` counts its
multiply-accumulates from that description and the pooling layers' current output sizes.
"""

from diffstride.models._spec import (
    POOLINGS,
    ResNetSpec,
    estimate_macs,
    resnet18_spec,
    small_spec,
    stride_report,
)

__all__ = [
    "POOLINGS",
    "ResNetSpec",
    "estimate_macs",
    "resnet18_spec",
    "small_spec",
    "stride_report",
]
