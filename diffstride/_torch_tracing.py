"""torch's tracers, in one room: what the torch layers need to know about export, fake
tensors and ``torch.compile``, and the private torch APIs that tell them.

Export (``torch.export``, ``torch.onnx.export`` with or without ``dynamo``, ``torch.jit.trace``)
records a graph in which the crop is fixed: it is decided from the stride values held when the
graph is recorded (read from the live parameter, outside the tracer's fake tensors), and the
layers run their GEMM formulation (``method="matmul"``, the same map), which every exporter
translates. The masks still follow the exported ``strides``. Nothing is projected under export.
``torch.compile`` reads the strides in one graph break. Under ``fullgraph=True`` nothing may
break the graph, so a layer uses the crop of its last eager call on the same input size as a
static ``output_size`` (and projects nothing); with none, the error says to make one or to pass
``output_size``.

Each private API is used in exactly one function here, whose docstring names the torch
version it was checked on; ``diffstride.torch`` imports none. Importing torch's compiler
stack after TensorFlow segfaulted (triton), so nothing here imports ``torch._dynamo`` at
import time: dynamo's decorators are applied as marks where it is not loaded yet.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from diffstride import _api
from diffstride._crop import check_read_strides

__all__ = [
    "TracedLayer",
    "assume_constant_result",
    "exporting",
    "fail_while_tracing",
    "is_fake",
    "one_graph",
    "read_outside_trace",
]

#: Where a layer keeps its live stride parameter (not registered: export's swap misses it).
_LIVE = "_diffstride_live_strides"


def exporting() -> bool:
    """Whether a graph is being recorded for export: ``torch.export`` (and the ONNX dynamo
    exporter, which runs it), ``torch.jit.trace`` (and the legacy ONNX exporter, which runs
    it)."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def read_outside_trace(tensor: torch.Tensor, concrete: Any) -> Any:
    """``concrete(tensor)`` (a real tensor's values) while an exporter traces:
    ``torch.export`` runs the model under a fake-tensor mode, in which even a real tensor's
    ``detach`` is fake (``unset_fake_temporarily``, private, checked on torch 2.14.1); the
    TorchScript tracer warns at a value read, which is deliberate here."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return concrete(tensor)


def is_fake(tensor: Any) -> bool:
    """A tensor without values: ``torch.export``'s stand-in for a parameter while tracing
    (``fake_tensor.is_fake``, private, checked on torch 2.14.1), or a meta tensor."""
    from torch._subclasses.fake_tensor import is_fake as _is_fake

    return not isinstance(tensor, torch.Tensor) or _is_fake(tensor) or tensor.is_meta


def assume_constant_result(fn: Any) -> Any:
    """``torch.compiler.assume_constant_result(fn)``: dynamo runs ``fn`` outside its trace
    and keeps the result as a constant. That imports dynamo, which is not imported where
    TensorFlow is and dynamo is not (see the torch backend's ``untraced``); the decorator
    only marks ``fn``, so there the mark is set as it sets it (``_dynamo_marked_constant``,
    private, checked on torch 2.14.1)."""
    if "torch._dynamo" in sys.modules or "tensorflow" not in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True
    return fn


@assume_constant_result
def one_graph() -> bool:
    """Whether dynamo traces with ``fullgraph=True`` (or ``error_on_graph_break``), where a
    graph break is an error; dynamo runs this at trace time. No public API tells: this reads
    dynamo's translator (``InstructionTranslator.current_tx``), checked on torch 2.14.1."""
    from torch._dynamo.symbolic_convert import InstructionTranslator

    try:
        tx = InstructionTranslator.current_tx()
    except AttributeError:  # not dynamo (another tracer that sets is_compiling)
        return False
    return bool(tx.one_graph or tx.error_on_graph_break)


@assume_constant_result
def fail_while_tracing(message: str) -> None:
    """``ValueError(message)``, raised by dynamo at trace time (``assume_constant_result``):
    a ``raise`` in traced code reaches the user as dynamo's "Observed exception", with the
    message only in its debug context."""
    raise ValueError(message)


@assume_constant_result
def constant_crop(layer: Any, sizes: tuple[int, ...], float64: bool) -> tuple[int, ...]:
    """``layer``'s crop, a constant of the exported graph: ``torch.export(strict=True)``
    (dynamo) runs this outside its trace, on the real module; elsewhere it is a plain call."""
    return layer._crop_now(sizes, float64)


def _backend() -> Any:
    return _api.get_backend("torch")


def value_key(tensor: Any) -> tuple[int, int, int] | None:
    """What changes whenever a parameter's values may have: its identity, its storage and its
    version counter (``_version``, which every in-place write bumps; checked on torch 2.14.1).
    None for anything else (a fake, meta or functorch-wrapped tensor under a transform)."""
    if type(tensor) is not nn.Parameter or tensor.is_meta or is_fake(tensor):
        return None
    return (id(tensor), tensor.data_ptr(), tensor._version)


class TracedLayer:
    """What a torch DiffStride layer does under a tracer. It keeps its ``strides`` parameter
    where ``nn.Module`` does not see it (``torch.export`` swaps the registered one for a fake
    tensor while it traces, and the crop is decided from the values of the real one); it
    records the forward pass an exporter sees; under ``torch.compile(fullgraph=True)`` it
    takes the crop of its last eager call."""

    _parameters: dict[str, Any]
    _crops: dict[tuple[int, ...], tuple[int, ...]]
    _crop_keys: dict[tuple[tuple[int, ...], bool], tuple[int, int, int]]
    strides: torch.Tensor
    options: Any

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "strides":
            self._remember_strides()
            self._forget_crops()

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_crops", {})  # a layer pickled before it kept crops
        state.setdefault("_crop_keys", {})
        super().__setstate__(state)

    def _remember_strides(self) -> None:
        strides = self._parameters.get("strides")
        if isinstance(strides, nn.Parameter) and not is_fake(strides):
            self.__dict__[_LIVE] = strides

    def _live_strides(self) -> torch.Tensor:
        """The stride parameter with real values: the registered one, or under
        ``torch.export`` (which has swapped it for a fake tensor) the one last registered."""
        strides = self._parameters["strides"]
        if not is_fake(strides):
            return strides
        live = self.__dict__.get(_LIVE)
        if live is None or tuple(live.shape) != tuple(strides.shape):
            raise RuntimeError(
                f"{type(self).__name__}: the stride values are unknown while exporting "
                "(the parameter was replaced outside nn.Module); call the model once "
                "eagerly, or pass a static output_size"
            )
        return live

    def _traced_output_size(
        self, x: torch.Tensor, sizes: tuple[Any, ...], output_size: Any
    ) -> tuple[Any, bool]:
        """The ``output_size`` a tracer imposes (on the meta device, the layer as built;
        under ``fullgraph=True``, where reading the strides would be an error, the crop of
        the last eager call), and whether ``torch.compile`` is tracing."""
        if output_size is None and x.device.type == "meta":
            output_size = self.output_size(tuple(sizes))  # type: ignore[attr-defined]
        compiling = torch.compiler.is_compiling()
        if output_size is None and compiling and one_graph():
            output_size = self._compiled_crop(tuple(sizes))
        return output_size, compiling

    def _strides_for_call(self, projected_after: bool) -> torch.Tensor:
        """The strides, or a copy (made outside any compiled graph) where the in-place
        projection follows the call: the call's backward may have saved the parameter
        itself (a compiled graph, the fused VJP), and autograd's version check would then
        fail."""
        if projected_after:
            return _backend().untraced(torch.clone)(self.strides)
        return self.strides

    def _host_strides(self) -> tuple[float, ...] | None:
        """The strides' values, read once per write to them (the version key), so that a
        repeat call with unchanged strides reads nothing; ``None`` where no key can be kept
        (a fake, meta or functorch-wrapped parameter)."""
        key = value_key(self.strides)
        if key is None:
            return None
        copy = self.__dict__.get("_host_copy")
        if copy is None or copy[0] != key:
            values = _backend().concrete(self.strides)
            if values is None:
                return None
            copy = self.__dict__["_host_copy"] = (key, tuple(float(v) for v in values.reshape(-1)))
        return copy[1]

    def _record_crop(self, sizes: Sequence[Any], x: torch.Tensor, y: torch.Tensor) -> None:
        """Remember an eager call's crop: the one ``fullgraph=True`` will use, and the one
        the next eager call reuses without reading the strides if they have not changed."""
        axes = self.options.axes(len(y.shape))
        self._crops[tuple(sizes)] = tuple(int(y.shape[axis]) for axis in axes)
        key = value_key(self.strides)
        if key is not None:
            self._crop_keys[(tuple(sizes), x.dtype == torch.float64)] = key

    def _unchanged_crop(self, sizes: Sequence[Any], x: torch.Tensor) -> tuple[int, ...] | None:
        """The crop recorded for ``sizes`` (in ``x``'s precision) if the strides are the
        same tensor with no write since: the host read it took need not be made again."""
        key = value_key(self.strides)
        recorded = self._crop_keys.get((tuple(sizes), x.dtype == torch.float64))
        return self._crops.get(tuple(sizes)) if key is not None and key == recorded else None

    def _forget_crops(self) -> None:
        self.__dict__.get("_crops", {}).clear()
        self.__dict__.get("_crop_keys", {}).clear()

    def _compiled_crop(self, sizes: tuple[Any, ...]) -> tuple[int, ...]:
        """The crop of the last eager call on inputs of spatial ``sizes``, read while dynamo
        traces (a constant it guards on: a new eager crop recompiles); else an error."""
        crop = self._crops.get(sizes) if all(isinstance(n, int) for n in sizes) else None
        if crop is None:
            fail_while_tracing(
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
            output_size = constant_crop(self, tuple(sizes), x.dtype == torch.float64)
        return _api.diffstride_on(
            _backend(),
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
        live = self._live_strides()
        values = read_outside_trace(live, _backend().concrete).reshape(-1)
        check_read_strides(values, len(sizes), "finite", self._stride_name())
        return self._output_size_with(sizes, values, "float64" if float64 else "float32")

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        """``.to()``, ``.cuda()``, ``.double()``... may replace the parameter object."""
        result = super()._apply(fn, recurse)  # type: ignore[misc]
        self._remember_strides()
        return result
