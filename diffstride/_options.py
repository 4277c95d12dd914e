"""``Options``: DiffStride's settings, validated once, written once.

Every entry point (the functions of each front-end, the layers, ``output_size``) takes the same
seven settings. They are declared here, once, with their documentation; the functions and
layers take them as ``**options``, build an :class:`Options` (which validates them and names
the bad one), and :func:`with_options` gives each such callable the explicit signature and
parameter docs a reader expects from ``help()`` and IDEs, so neither is copied by hand.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from diffstride._validation import (
    check_data_format,
    check_limits,
    check_method,
    check_ramp,
    check_smoothness_factor,
    spatial_axes,
)

__all__ = ["OPTION_DOCS", "Options", "document_options", "with_options"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Options:
    """DiffStride's settings; see :data:`OPTION_DOCS`. Invalid values raise at construction.

    >>> from diffstride import Options
    >>> Options(ramp="inside").inside
    True
    """

    smoothness_factor: float = 4.0
    cropping: bool = True
    data_format: str = "channels_first"
    lower_limit_stride: float | None = None
    upper_limit_stride: float | None = None
    method: str = "auto"
    ramp: str = "outside"

    def __post_init__(self) -> None:
        low, high = check_limits(self.lower_limit_stride, self.upper_limit_stride)
        checked = {
            "smoothness_factor": check_smoothness_factor(self.smoothness_factor),
            "cropping": bool(self.cropping),
            "data_format": check_data_format(self.data_format),
            "lower_limit_stride": low,
            "upper_limit_stride": high,
            "method": check_method(self.method),
            "ramp": check_ramp(self.ramp),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], *, where: str) -> Options:
        """Options from keyword arguments; an unknown keyword is a TypeError that lists the
        valid ones."""
        try:  # valid keywords seen before: one look-up (typed, so that True is not 1.0)
            key = (cls, *((name, type(value), value) for name, value in kwargs.items()))
            cached = _SEEN.get(key)
        except TypeError:  # an unhashable value: checked below, not kept
            key, cached = None, None
        if cached is not None:
            return cached
        unknown = sorted(set(kwargs) - set(NAMES))
        if unknown:
            raise TypeError(
                f"{where} got unexpected keyword argument{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; the options are {', '.join(NAMES)}"
            )
        options = cls(**kwargs)
        if key is not None:
            if len(_SEEN) >= _SEEN_SIZE:
                _SEEN.clear()
            _SEEN[key] = options
        return options

    @property
    def inside(self) -> bool:
        return self.ramp == "inside"

    @property
    def limits(self) -> tuple[float | None, float | None]:
        return self.lower_limit_stride, self.upper_limit_stride

    @property
    def mask_keywords(self) -> dict[str, Any]:
        """The settings the core's stride functions take (``_agnostic.effective_strides``,
        ``stride_vjp``): the ramp's width, the stride limits, where the ramp lies."""
        return {
            "smoothness_factor": self.smoothness_factor,
            "lower_limit_stride": self.lower_limit_stride,
            "upper_limit_stride": self.upper_limit_stride,
            "inside": self.inside,
        }

    def axes(self, ndim: int) -> tuple[int, ...]:
        """The spatial axes of an ``ndim`` input in this layout."""
        return spatial_axes(self.data_format, ndim)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in NAMES}

    def non_defaults(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != f.default
        }


NAMES = tuple(f.name for f in fields(Options))
#: The options of keyword arguments seen before, by their names, types and values.
_SEEN: dict[tuple[Any, ...], Options] = {}
_SEEN_SIZE = 256

#: The documentation of each option, in numpydoc form, inserted where ``{options}`` appears.
OPTION_DOCS = """\
smoothness_factor
    Width ``R`` of the mask's ramp, >= 0; ``0`` is a hard crop with no stride gradient.
cropping
    Drop the bins where the mask is zero (True: the downsampling), or keep the full masked
    spectrum.
data_format
    ``"channels_first"`` (``(N, C, *spatial)``) or ``"channels_last"`` (``(N, *spatial, C)``).
lower_limit_stride, upper_limit_stride
    Bounds of the effective strides; outside them the stride gradient is zero.
method
    ``"fft"`` (transforms), ``"matmul"`` (the same map as one real GEMM per spatial axis) or
    ``"auto"`` (by backend and input size).
ramp
    Where the mask's ramp of width ``R`` lies: ``"outside"`` (default, the original) from
    the stride's threshold ``T`` outwards, ``clip((R + T - d) / R, 0, 1)``, which keeps about
    ``2R`` more bins per axis than the stride implies; or ``"inside"``,
    ``clip((T - d) / R, 0, 1)``, which ends at ``T``, so that the output is within one pixel
    of ``N / S``, like the strided layer it replaces (and costs what it costs). The inside
    ramp needs no minimum stride: any ``S >= 1`` is used as it is."""


def with_options(fn: F, *, defaults: Mapping[str, Any] | None = None) -> F:
    """``fn``, which takes ``**options``, with the options as explicit keyword-only
    parameters in its signature (``defaults`` overrides some) and their docs in place of
    ``{options}`` in its docstring."""
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    head = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    overrides = dict(defaults or {})
    option_params = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=overrides.get(f.name, f.default),
            annotation=f.type,
        )
        for f in fields(Options)
    ]
    fn.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*head, *option_params]
    )
    if fn.__doc__:
        fn.__doc__ = document_options(fn.__doc__)
    return fn


def document_options(doc: str) -> str:
    """``doc`` with the options' documentation in place of ``{options}``, indented as it."""
    if "{options}" not in doc:
        return doc
    line = next(line for line in doc.splitlines() if "{options}" in line)
    indent = line[: len(line) - len(line.lstrip())]
    return doc.replace("{options}", OPTION_DOCS.replace("\n", "\n" + indent))


def document_layer(template: str, rank: int, data_format: str, example: str) -> str:
    """A per-rank layer's docstring: ``template`` with its ``{rank}``, its input ``{layout}``
    (e.g. ``(N, C, H, W)``), its ``{example}`` and its ``{options}`` filled in."""
    spatial = ("D", "H", "W")[3 - rank :]
    if data_format == "channels_first":
        layout = f"({', '.join(('N', 'C', *spatial))})"
    else:
        layout = f"({', '.join(('N', *spatial, 'C'))}) (channels_last)"
    doc = template.replace("{rank}", str(rank)).replace("{layout}", layout)
    return document_options(doc.replace("{example}", example))
