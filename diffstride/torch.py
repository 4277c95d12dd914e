"""PyTorch front-end: functions for torch tensors and ``nn.Module`` layers per spatial rank.

The layers are the neutral mixins of ``diffstride._layers`` plus a ``forward``, named as torch
names its own (``DiffStride1d``, ``DiffStride2d`` = ``DiffStride``, ``DiffStride3d``).
``DiffStride*`` holds its stride as an ``nn.Parameter`` named ``strides`` (one per spatial
axis, or one with ``shared_stride``); in training mode each forward pass projects it in place
(no autograd) as the original does after each call, ``S <- max(S, N / (N - R))``, and then
clips it to the limits (the original leaves that to a Keras constraint at the next optimizer
step; torch has no constraints, so the clip happens here). With ``ramp="inside"`` there is no
projection, only the clip. Eval mode mutates nothing.

Export (``torch.export``, ``torch.onnx.export`` with or without ``dynamo``, ``torch.jit.trace``)
records a graph in which the crop is fixed: it is decided from the stride values held when the
graph is recorded (read from the live parameter, outside the tracer's fake tensors), and the
layers run their GEMM formulation (``method="matmul"``, the same map), which every exporter
translates. The masks still follow the exported ``strides``. Nothing is projected under export.

``torch.compile`` reads the strides in one graph break. Under ``fullgraph=True`` nothing may
break the graph, so a layer uses the crop of its last eager call on the same input size as a
static ``output_size`` (and projects nothing); with none, the error says to make one or to pass
``output_size``. Under ``torch.func`` transforms the crop is read from the wrapped strides.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffstride import _api, _tracing
from diffstride._complexity import complexity_penalty_of
from diffstride._crop import check_read_strides
from diffstride._layers import DiffStrideMixin, FixedSpectralPoolingMixin, SpatialPoolingMixin
from diffstride._options import document_layer, with_options
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
    "downsampling_points",
    "macs",
    "macs_estimate",
    "macs_penalty",
    "spectral_pooling",
]

diffstride, spectral_pooling = _api.bind("torch")
_BACKEND = _api.get_backend("torch")  # loaded by bind: no entry-point lookup while tracing
#: Where a layer keeps its live stride parameter (not registered: export's swap misses it).
_LIVE = "_diffstride_live_strides"


def _exporting() -> bool:
    """Whether a graph is being recorded for export: ``torch.export`` (and the ONNX dynamo
    exporter, which runs it), ``torch.jit.trace`` (and the legacy ONNX exporter, which runs
    it)."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def _read_outside_trace(tensor: torch.Tensor) -> Any:
    """The values of a real tensor while an exporter traces: ``torch.export`` runs the model
    under a fake-tensor mode, in which even a real tensor's ``detach`` is fake; the
    TorchScript tracer warns at a value read, which is deliberate here."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return _BACKEND.concrete(tensor)


class _DiffStride(DiffStrideMixin, nn.Module):
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

    @with_options
    def __init__(
        self,
        strides: Any = 2.0,
        *,
        trainable: bool = True,
        shared_stride: bool = False,
        **options: Any,
    ) -> None:
        nn.Module.__init__(self)
        self._init_diffstride(strides, shared_stride, options)
        self.strides = nn.Parameter(
            torch.tensor(self.initial_value, dtype=torch.float32), requires_grad=bool(trainable)
        )
        #: Input spatial sizes -> the output spatial sizes of the last eager call: the crop
        #: under ``torch.compile(fullgraph=True)``, which cannot read the strides.
        self._crops: dict[tuple[int, ...], tuple[int, ...]] = {}

    def reset_parameters(self) -> None:
        """Set the strides back to their initial value, in place (``nn.Module``'s convention:
        meta-device construction, ``to_empty`` and this give the layer it was built as)."""
        with torch.no_grad():
            initial = torch.tensor(self.initial_value, dtype=torch.float32)
            self.strides.copy_(initial.to(self.strides.device, self.strides.dtype))
        self._crops.clear()

    def _stride_values(self) -> Any:
        if self.strides.is_meta:
            # Built on the meta device, no values yet: those of the layer as built, which
            # to_empty + reset_parameters then gives it.
            return self.initial_value
        if _exporting():
            return _read_outside_trace(self._live_strides())
        return _BACKEND.concrete(self.strides)  # also under torch.func transforms

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "strides":
            self._remember_strides()
            self.__dict__.get("_crops", {}).clear()

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_crops", {})  # a layer pickled before it kept crops
        super().__setstate__(state)

    def _remember_strides(self) -> None:
        """Keep a reference to the stride parameter where ``nn.Module`` does not see it:
        ``torch.export`` swaps the registered one for a fake tensor while it traces, and the
        crop is decided from the values of this one (see :meth:`_live_strides`)."""
        strides = self._parameters.get("strides")
        if isinstance(strides, nn.Parameter) and not _is_fake(strides):
            self.__dict__[_LIVE] = strides

    def _live_strides(self) -> torch.Tensor:
        """The stride parameter with real values: the registered one, or under
        ``torch.export`` (which has swapped it for a fake tensor) the one last registered."""
        strides = self._parameters["strides"]
        if not _is_fake(strides):
            return strides
        live = self.__dict__.get(_LIVE)
        if live is None or tuple(live.shape) != tuple(strides.shape):
            raise RuntimeError(
                f"{type(self).__name__}: the stride values are unknown while exporting "
                "(the parameter was replaced outside nn.Module); call the model once "
                "eagerly, or pass a static output_size"
            )
        return live

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        """``.to()``, ``.cuda()``, ``.double()``... may replace the parameter object."""
        result = super()._apply(fn, recurse)
        self._remember_strides()
        return result

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any) -> None:
        """A loaded stride must be finite and >= 1, one per axis (or one shared)."""
        key = f"{prefix}strides"
        if key in state_dict and isinstance(state_dict[key], torch.Tensor):
            value = state_dict[key]
            if tuple(value.shape) != tuple(self.strides.shape):
                raise ValueError(
                    f"{key} must have shape {tuple(self.strides.shape)} for "
                    f"{type(self).__name__}; received shape {tuple(value.shape)}"
                )
            values = tuple(float(v) for v in value.detach().cpu().float().reshape(-1))
            check_read_strides(values, self.rank, True, key)
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._remember_strides()  # load_state_dict(assign=True) replaces the parameter
        self._crops.clear()

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        sizes = self._checked_sizes(x, _BACKEND)
        if _exporting():
            return self._exported(x, sizes, output_size)
        if output_size is None and x.device.type == "meta":
            output_size = self.output_size(tuple(sizes))  # see _stride_values
        compiling = torch.compiler.is_compiling()
        if output_size is None and compiling and _one_graph():
            # fullgraph=True: reading the strides would split the graph, an error there.
            output_size = self._compiled_crop(tuple(sizes))
        project = self.training and output_size is None
        strides = self.strides
        if project and compiling:
            # A compiled graph may save the parameter itself for its backward, and the
            # in-place projection below would then fail autograd's version check (inductor
            # did): the graph gets a copy made outside it, the projection runs outside it.
            strides = _BACKEND.untraced(torch.clone)(self.strides)
        y = _api.diffstride_on(
            _BACKEND,
            x,
            strides,
            self.options,
            output_size=output_size,
            sizes=sizes,
            # An optimizer step may leave a stride below its bound (torch has no constraints):
            # it is clipped, so only a non-finite value is an error here; loads check all.
            # A static output_size reads nothing (no device sync), so checks nothing.
            check_values="finite" if output_size is None else False,
            name=self._stride_name(),
        )
        if output_size is None and not compiling:
            axes = self.options.axes(len(y.shape))
            self._crops[tuple(sizes)] = tuple(int(y.shape[axis]) for axis in axes)
        if project:
            _BACKEND.untraced(_DiffStride._project_in_place)(self, sizes)
        return y

    def _compiled_crop(self, sizes: tuple[Any, ...]) -> tuple[int, ...]:
        """The crop of the last eager call on inputs of spatial ``sizes``, read while dynamo
        traces (a constant it guards on: a new eager crop recompiles); else an error."""
        crop = self._crops.get(sizes) if all(isinstance(n, int) for n in sizes) else None
        if crop is None:
            _fail_while_tracing(
                f"{type(self).__name__} has no crop for inputs of spatial sizes {sizes} "
                "under torch.compile(fullgraph=True), which cannot read the strides. Call the "
                "model once eagerly on inputs of this size (each DiffStride layer then keeps "
                "that crop, not projected, until its next eager call), or pass a static "
                "output_size: layer(x, output_size=layer.output_size(input_size))"
            )
        return crop

    def _exported(
        self, x: torch.Tensor, sizes: tuple[Any, ...], output_size: Sequence[int] | None
    ) -> torch.Tensor:
        """The forward pass an exporter records: the crop fixed from the stride values held
        now (as eager decides it, in the input's precision), the GEMM formulation, no
        projection. The masks still follow the (exported) ``strides``."""
        if output_size is None:
            if not all(isinstance(n, int) for n in sizes):
                raise ValueError(
                    f"{type(self).__name__} exports with static spatial sizes (the crop is "
                    f"fixed in the graph); received an input of shape {tuple(x.shape)}. Mark "
                    "only the batch dimension dynamic, or pass a static output_size"
                )
            output_size = _export_output_size(self, tuple(sizes), x.dtype == torch.float64)
        return _api.diffstride_on(
            _BACKEND,
            x,
            self.strides,
            dataclasses.replace(self.options, method="matmul"),
            output_size=output_size,
            sizes=sizes,
            check_values=False,
            name=self._stride_name(),
        )

    def _crop_now(self, sizes: tuple[int, ...], float64: bool) -> tuple[int, ...]:
        """The output size eager computes now (in the input's precision), from the live
        parameter's values (checked finite; clipped to the limits as the forward pass)."""
        values = _read_outside_trace(self._live_strides()).reshape(-1)
        check_read_strides(values, len(sizes), "finite", self._stride_name())
        return self._output_size_with(sizes, values, "float64" if float64 else "float32")

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
            method="matmul" if _exporting() else self.method,
            sizes=sizes,
        )

    def extra_repr(self) -> str:
        return self._extra_repr()


def _assume_constant_result(fn: Any) -> Any:
    """``torch.compiler.assume_constant_result(fn)``: dynamo runs ``fn`` outside its trace
    and keeps the result as a constant. That imports dynamo, which is not imported where
    TensorFlow is and dynamo is not (see the torch backend's ``untraced``); the decorator
    only marks ``fn``, so there the mark is set as it sets it."""
    if "torch._dynamo" in sys.modules or "tensorflow" not in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True
    return fn


@_assume_constant_result
def _export_output_size(
    layer: _DiffStride, sizes: tuple[int, ...], float64: bool
) -> tuple[int, ...]:
    """``layer``'s crop, a constant of the exported graph: ``torch.export(strict=True)``
    (dynamo) runs this outside its trace, on the real module; elsewhere it is a plain call."""
    return layer._crop_now(sizes, float64)


@_assume_constant_result
def _one_graph() -> bool:
    """Whether dynamo traces with ``fullgraph=True`` (or ``error_on_graph_break``), where a
    graph break is an error; dynamo runs this at trace time. No public API tells: this reads
    dynamo's translator, checked on torch 2.14.1."""
    from torch._dynamo.symbolic_convert import InstructionTranslator

    try:
        tx = InstructionTranslator.current_tx()
    except AttributeError:  # not dynamo (another tracer that sets is_compiling)
        return False
    return bool(tx.one_graph or tx.error_on_graph_break)


@_assume_constant_result
def _fail_while_tracing(message: str) -> None:
    """``ValueError(message)``, raised by dynamo at trace time (``assume_constant_result``):
    a ``raise`` in traced code reaches the user as dynamo's "Observed exception", with the
    message only in its debug context."""
    raise ValueError(message)


def _is_fake(tensor: Any) -> bool:
    """A tensor without values: ``torch.export``'s stand-in for a parameter while tracing."""
    from torch._subclasses.fake_tensor import is_fake

    return not isinstance(tensor, torch.Tensor) or is_fake(tensor) or tensor.is_meta


def _layer_doc(template: str, rank: int, example: str) -> str:
    return document_layer(template, rank, "channels_first", example)


class DiffStride1d(_DiffStride):
    __doc__ = _layer_doc(
        _DiffStride.__doc__,
        1,
        """>>> import torch
    >>> from diffstride.torch import DiffStride1d
    >>> DiffStride1d(strides=4.0)(torch.randn(2, 1, 1000)).shape
    torch.Size([2, 1, 258])""",
    )
    rank = 1


class DiffStride2d(_DiffStride):
    __doc__ = _layer_doc(
        _DiffStride.__doc__,
        2,
        """>>> import torch
    >>> from diffstride.torch import DiffStride
    >>> layer = DiffStride(strides=(2.0, 2.0))
    >>> layer(torch.randn(8, 3, 32, 32)).shape
    torch.Size([8, 3, 24, 24])
    >>> layer.current_strides(), layer.output_size((32, 32))
    ((2.0, 2.0), (24, 24))
    >>> DiffStride((2.0, 2.0), ramp="inside").output_size((32, 32))
    (16, 16)""",
    )
    rank = 2


class DiffStride3d(_DiffStride):
    __doc__ = _layer_doc(
        _DiffStride.__doc__,
        3,
        """>>> import torch
    >>> from diffstride.torch import DiffStride3d
    >>> DiffStride3d(strides=(1.0, 2.0, 2.0))(torch.randn(1, 2, 8, 32, 32)).shape
    torch.Size([1, 2, 8, 24, 24])""",
    )
    rank = 3


class FixedSpectralPooling1d(_FixedSpectralPooling):
    __doc__ = _layer_doc(
        _FixedSpectralPooling.__doc__,
        1,
        """>>> import torch
    >>> from diffstride.torch import FixedSpectralPooling1d
    >>> FixedSpectralPooling1d(4)(torch.randn(1, 3, 100)).shape
    torch.Size([1, 3, 25])""",
    )
    rank = 1


class FixedSpectralPooling2d(_FixedSpectralPooling):
    __doc__ = _layer_doc(
        _FixedSpectralPooling.__doc__,
        2,
        """>>> import torch
    >>> from diffstride.torch import FixedSpectralPooling
    >>> FixedSpectralPooling((2, 2))(torch.randn(1, 3, 32, 32)).shape
    torch.Size([1, 3, 16, 16])""",
    )
    rank = 2


class FixedSpectralPooling3d(_FixedSpectralPooling):
    __doc__ = _layer_doc(
        _FixedSpectralPooling.__doc__,
        3,
        """>>> import torch
    >>> from diffstride.torch import FixedSpectralPooling3d
    >>> FixedSpectralPooling3d(2)(torch.randn(1, 3, 8, 8, 8)).shape
    torch.Size([1, 3, 4, 4, 4])""",
    )
    rank = 3


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
    if isinstance(model_or_layers, nn.Module):
        layers = [m for m in model_or_layers.modules() if isinstance(m, _DiffStride)]
    else:
        layers = list(model_or_layers)
    ranks = [layer.rank for layer in layers]
    return complexity_penalty_of([layer.strides for layer in layers], xp=torch, ranks=ranks)
