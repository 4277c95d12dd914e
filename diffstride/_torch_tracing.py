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

import array_api_compat.numpy as np_xp
import numpy as np
import torch
from torch import nn

from diffstride import _api, _tracing
from diffstride._crop import check_read_strides
from diffstride._layers import FixedCrops

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
    it). Before torch 2.13, dynamo folded ``is_exporting()`` to True under ``torch.compile``
    too (pytorch/pytorch#176347), so where it says True its translator has the last word."""
    if torch.jit.is_tracing():
        return True
    return _export_flag() and _dynamo_exports()


def _export_flag() -> bool:
    """``torch.compiler.is_exporting()``, looked up here so that a test can give it the
    answer of dynamo before torch 2.13."""
    return torch.compiler.is_exporting()


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


def _translator() -> Any:
    """dynamo's translator of the frame it traces, None outside dynamo
    (``InstructionTranslator.current_tx``, private, checked on torch 2.14.1)."""
    from torch._dynamo.symbolic_convert import InstructionTranslator

    try:
        return InstructionTranslator.current_tx()
    except AttributeError:  # not dynamo (another tracer that sets is_compiling)
        return None


@assume_constant_result
def _dynamo_exports() -> bool:
    """Whether dynamo, where it traces, traces for ``torch.export`` (strict) rather than
    ``torch.compile``; outside dynamo (non-strict export), True. Run at trace time."""
    tx = _translator()
    return True if tx is None else bool(tx.export)


@assume_constant_result
def one_graph() -> bool:
    """Whether dynamo traces with ``fullgraph=True`` (or ``error_on_graph_break``), where a
    graph break is an error; dynamo runs this at trace time. No public API tells: this reads
    dynamo's translator (:func:`_translator`)."""
    tx = _translator()
    return tx is not None and bool(tx.one_graph or tx.error_on_graph_break)


@assume_constant_result
def fail_while_tracing(message: str) -> None:
    """``ValueError(message)``, raised by dynamo at trace time (``assume_constant_result``):
    a ``raise`` in traced code reaches the user as dynamo's "Observed exception", with the
    message only in its debug context."""
    raise ValueError(message)


@assume_constant_result
def constant_crop(layer: Any, sizes: tuple[int, ...], precision: str) -> tuple[int, ...]:
    """``layer``'s crop, a constant of the exported graph: ``torch.export(strict=True)``
    (dynamo) runs this outside its trace, on the real module; elsewhere it is a plain call."""
    return layer._crop_now(sizes, precision)


def _backend() -> Any:
    return _api.get_backend("torch")


def _precision(x: torch.Tensor) -> str:
    """The precision a crop is decided in: float64 inputs in float64, others in float32."""
    return "float64" if x.dtype == torch.float64 else "float32"


def value_key(tensor: Any) -> tuple[int, int, int] | None:
    """What changes whenever a parameter's values may have: its identity, its storage and its
    version counter (``_version``, which every in-place write bumps; checked on torch 2.14.1).
    None for anything else (a fake, meta or functorch-wrapped tensor under a transform)."""
    if type(tensor) is not nn.Parameter or tensor.is_meta or is_fake(tensor):
        return None
    return (id(tensor), tensor.data_ptr(), tensor._version)


class TracedLayer:
    """What a torch DiffStride layer does under a tracer, and where its crop comes from.
    It keeps its ``strides`` parameter where ``nn.Module`` does not see it (``torch.export``
    swaps the registered one for a fake tensor while it traces, and the crop is decided from
    the values of the real one); it records the forward pass an exporter sees. Its crops
    follow the fixed-crop policy of Keras on jax and Flax (``_layers.FixedCrops``): an eager
    call takes its crop from ``fixed_crops``, the host copy of the strides, which it reads
    again only where the parameter changed since (``value_key``); under
    ``torch.compile(fullgraph=True)`` the crops of that copy are the graph's constants."""

    _parameters: dict[str, Any]
    fixed_crops: FixedCrops
    initial_value: list[float]
    strides: torch.Tensor
    options: Any

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "strides":
            self._remember_strides()
            self._forget_crops()

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy (``deepcopy``, pickle) keeps the crops, not the key: its parameter is
        another tensor. A layer pickled before the host copy kept ``_crops``."""
        state.pop("_crops", None)
        state.pop("_crop_keys", None)
        fixed = state.get("fixed_crops")
        state["fixed_crops"] = FixedCrops(() if fixed is None else fixed.strides)
        if fixed is not None:
            state["fixed_crops"].crops.update(fixed.crops)
            state["fixed_crops"].crops64.update(fixed.crops64)
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
        the host copy an eager call made), and whether ``torch.compile`` is tracing."""
        if output_size is None and x.device.type == "meta":
            output_size = self.output_size(tuple(sizes))  # type: ignore[attr-defined]
        compiling = torch.compiler.is_compiling()
        if output_size is None and compiling and one_graph():
            output_size = self._compiled_crop(tuple(sizes), _precision(x))
        return output_size, compiling

    def _strides_for_call(self, projected_after: bool) -> torch.Tensor:
        """The strides, or a copy (made outside any compiled graph) where the in-place
        projection follows the call: the call's backward may have saved the parameter
        itself (a compiled graph, the fused VJP), and autograd's version check would then
        fail."""
        if not projected_after:
            return self.strides
        return _tracing.outside_tracer(_backend(), torch.clone)(self.strides)

    def _eager_crop(self, sizes: tuple[int, ...], x: torch.Tensor) -> tuple[int, ...] | None:
        """An eager call's crop, from the host copy of the strides (``fixed_crops``). The
        copy is read again (one host read, checked finite) only where the parameter is
        another tensor or was written since (``value_key``): a repeat call reads nothing,
        a training step (which projects in place) once. None where the values cannot be
        read (``vmap`` batches them): the call then decides as a function call does."""
        key = value_key(self.strides)
        if key is None or key != self.fixed_crops.key:
            values = _backend().concrete(self.strides)
            if values is None:
                return None
            check_read_strides(values, len(sizes), "finite", self._stride_name())
            dtype = "float64" if values.dtype == np.float64 else "float32"
            self.fixed_crops = FixedCrops(values, key=key, dtype=dtype)
        return self._fixed_crop(sizes, _precision(x))  # type: ignore[attr-defined]

    def _host_projection(self, sizes: tuple[int, ...]) -> np.ndarray | None:
        """The in-place projection of a training call, computed from the host copy of the
        strides (current: the call's ``_eager_crop`` has just checked its key) by the core's
        numpy arithmetic in the parameter's precision, the values the device would compute.
        None where it leaves the strides as they are: the call then writes nothing, so the
        parameter's version holds and the next call reads nothing back."""
        held = np.asarray(self.fixed_crops.strides, dtype=_precision(self.strides))
        projected = self._projected(held, sizes, clip=True, xp=np_xp)  # type: ignore[attr-defined]
        return None if np.array_equal(projected, held) else np.asarray(projected)

    def _write_projection(self, projected: np.ndarray) -> None:
        """Store the host-computed projection (one upload) and keep it as the host copy,
        with the crops of the sizes seen (``fullgraph=True`` looks them up)."""
        with torch.no_grad():
            self.strides.copy_(torch.from_numpy(projected))
        seen, fixed = self.fixed_crops, FixedCrops(projected, dtype=projected.dtype.name)
        for precision in ("float32", "float64"):
            fixed.table(precision).update(
                (sizes, self._output_size_with(sizes, fixed.strides, precision))  # type: ignore[attr-defined]
                for sizes in seen.table(precision)
            )
        fixed.key = value_key(self.strides)
        self.fixed_crops = fixed

    def _forget_crops(self) -> None:
        """No copy of the strides (they were replaced, loaded or reset): the next eager
        call reads them, and ``fullgraph=True`` has no crop until then."""
        self.fixed_crops = FixedCrops(self.initial_value)

    def _compiled_crop(self, sizes: tuple[Any, ...], precision: str) -> tuple[int, ...]:
        """The crop of the host copy for inputs of spatial ``sizes``, read while dynamo
        traces (a constant it guards on: a new eager crop recompiles); else an error."""
        crops = self.fixed_crops.table(precision)
        crop = crops.get(sizes) if all(isinstance(n, int) for n in sizes) else None
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
            output_size = constant_crop(self, tuple(sizes), _precision(x))
        return _api.diffstride_on(
            _backend(),
            x,
            self.strides,
            dataclasses.replace(self.options, method="matmul"),
            output_size=output_size,
            sizes=sizes,
            check_values=False,
            name=self._stride_name(),
            host_plan=False,  # the graph follows the exported strides
        )

    def _crop_now(self, sizes: tuple[int, ...], precision: str) -> tuple[int, ...]:
        """The output size eager computes now (in the input's precision), from the live
        parameter's values (checked finite; clipped to the limits as the forward pass)."""
        live = self._live_strides()
        values = read_outside_trace(live, _backend().concrete).reshape(-1)
        check_read_strides(values, len(sizes), "finite", self._stride_name())
        return self._output_size_with(sizes, values, precision)  # type: ignore[attr-defined]

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        """``.to()``, ``.cuda()``, ``.double()``... may replace the parameter object."""
        result = super()._apply(fn, recurse)  # type: ignore[misc]
        self._remember_strides()
        return result
