"""PyTorch: array-api-compat's torch namespace; autograd does the gradients.

channels_last: ``torch.fft.rfftn`` takes any ``dim``, but on CPU each transform over axes that
are not innermost copies them innermost and back, so the FFT path runs on a channels-first view
(``fft_channels_first``): one copy, at the first transform (docs/benchmarks.md).

``custom_vjp`` registers the core's hand-written VJPs as an ``autograd.Function`` (see
``_agnostic.masked_crop_vjp`` and, for the host plan of an eager call, ``fused_vjp``): one
node in autograd's graph in place of the dozens its own backward of the mask, slices and
``rfftn`` would replay. Under ``create_graph=True`` the backward instead differentiates the
core's ``reference`` forward with autograd, so higher-order gradients stay exact. The
``autograd.Function`` lives in ``_torch_autograd``, defined at import so that
``torch.compile`` can trace it.

``tracing()`` tells the core when dynamo is tracing: it then skips the stride-value check,
which would read the device and split the graph (as under ``jax.jit``, where nothing can be
read), and decides a crop that follows the strides through ``untraced``: dynamo traced its
numpy steps one by one and split the graph 22 times.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np

from diffstride import Backend, Tuning

#: What dynamo's error says where ``fullgraph=True`` meets an untraced step.
_UNTRACED_REASON = (
    "diffstride reads the stride values here to decide the crop (or projects a training "
    "layer's strides), which splits the graph. With fullgraph=True, pass a static "
    "output_size (layer(x, output_size=layer.output_size(input_size)), or "
    "diffstride(x, strides, output_size=...)), or call the DiffStride layers once eagerly "
    "on inputs of this size: each then keeps that crop (not projected) when compiled"
)


_NO_CONTEXT = contextlib.nullcontext()  # reentrant: one for every call


class TorchBackend(Backend):
    name = "torch"
    module = "torch"
    differentiable = True
    tuning = Tuning(fft_channels_first=True)

    def __init__(self) -> None:
        self._untraced: dict[Any, Any] = {}
        self._pending: set[Any] = set()  # asked for where no wrapper could be built

    def owns(self, x: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(x, torch.Tensor)

    def namespace(self) -> Any:
        import array_api_compat.torch

        return array_api_compat.torch

    def stop_gradient(self, x: Any) -> Any:
        return x.detach()

    def concrete(self, x: Any) -> np.ndarray | None:
        """``x``'s values; also inside ``torch.func`` transforms (``None`` where ``vmap``
        batches ``x``: then there is one value per sample)."""
        return _host_values(x)

    def full_precision(self) -> Any:
        """``autocast`` off on every device type where it is on (it would run the GEMM
        path in bfloat16 or float16)."""
        import torch

        enabled = [d for d in ("cpu", "cuda") if torch.is_autocast_enabled(d)]
        if not enabled:
            return _NO_CONTEXT
        stack = contextlib.ExitStack()
        for device in enabled:
            stack.enter_context(torch.autocast(device, enabled=False))
        return stack

    def tracing(self) -> bool:
        """Under ``torch.compile``: a value read would break the graph. Nothing compiles
        before dynamo is imported. Asks, changes nothing."""
        if "torch._dynamo" not in sys.modules:
            return False
        return sys.modules["torch"].compiler.is_compiling()

    def reusable_arrays(self) -> Any:
        import torch

        if not torch.is_inference_mode_enabled():
            return contextlib.nullcontext()
        return torch.inference_mode(False)

    def upload(self, arrays: Any, device: Any) -> tuple[Any, ...]:
        """On CUDA one copy: a copy from pageable memory waits for the device, and a
        training step whose strides moved uploads a plan of three to five arrays in every
        layer (see ``_packed_copy``; the meta device, the tests' stand-in for CUDA, too).
        On the CPU, tensors sharing numpy's memory; elsewhere one copy each."""
        import torch

        arrays = [_plain(a) for a in arrays]
        device = torch.device("cpu" if device is None else device)
        if device.type in _PACKED_DEVICES:
            return _packed_copy(torch, arrays, device)
        return tuple(torch.from_numpy(a).to(device) for a in arrays)

    def untraced(self, fn: Any) -> Any:
        """``fn`` run eagerly by dynamo: one graph break, however much numpy it runs.

        The wrapper is built once per ``fn``, at its first request outside a trace (a
        front-end's import makes its own; ``_tracing.outside_tracer`` asks at every eager
        call): built while tracing, it split the graph again. Building it imports torch's
        compiler stack, which segfaulted (triton) after ``import tensorflow``; so where
        TensorFlow is imported and dynamo is not, ``fn`` is returned as it is (nothing
        traces before dynamo is imported) and the wrapper is built at the first eager
        request after ``torch.compile`` has imported dynamo (with those of every ``fn`` asked
        for before)."""
        wrapped = self._untraced.get(fn)
        if wrapped is not None:
            return wrapped
        if not _may_build_wrappers():
            self._pending.add(fn)
            return fn
        import torch

        for each in {fn, *self._pending}:
            self._untraced[each] = torch.compiler.disable(each, reason=_UNTRACED_REASON)
        self._pending.clear()
        return self._untraced[fn]

    def custom_vjp(self, forward: Any, backward: Any, *, reference: Any = None) -> Any:
        """``forward(*primals) -> (out, residual)`` with the gradient ``backward(residual,
        primals, cotangent, needs) -> grads`` (``needs``: which primals want one);
        ``reference`` is differentiated instead under ``create_graph=True``."""
        from diffstride_backends._torch_autograd import EagerFusedVJP, FusedVJP, Rules, transforming

        rules = Rules(forward, backward, reference)

        def fused(*primals: Any) -> Any:
            function = FusedVJP if transforming() else EagerFusedVJP
            return function.apply(rules, *primals)[0]

        return fused

    # Testing hooks, used by diffstride_conformance.
    def from_numpy(self, array: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.require(array, requirements="C"))  # 0-d stays 0-d

    def vjp(self, fn: Any, primals: list[Any], cotangent: np.ndarray) -> Any:
        """``(fn(*primals), grads of sum(fn * cotangent))`` as numpy arrays."""
        import torch

        leaves = [p.detach().clone().requires_grad_(True) for p in primals]
        out = fn(*leaves)
        cotangent = self.from_numpy(cotangent).to(out.dtype)
        grads = torch.autograd.grad(out, leaves, grad_outputs=cotangent, materialize_grads=True)
        return self.concrete(out), [self.concrete(g) for g in grads]


def _may_build_wrappers() -> bool:
    """Whether ``torch.compiler.disable`` may be called now: not while dynamo traces, and
    not where TensorFlow is imported and dynamo is not (importing it then segfaulted)."""
    if "torch._dynamo" not in sys.modules:
        return "tensorflow" not in sys.modules
    import torch

    return not torch.compiler.is_compiling()


def _plain(array: np.ndarray) -> np.ndarray:
    """``array`` in C order and native byte order, 0-d kept 0-d (``np.ascontiguousarray``
    makes it 1-d), with no negative stride (numpy calls a size-1 axis with one contiguous;
    ``torch.from_numpy`` refuses it)."""
    array = np.require(array, array.dtype.newbyteorder("="), requirements="C")
    return array.copy() if any(step < 0 for step in array.strides) else array


_ALIGNMENT_BYTES = 64  # where each packed array starts: vectorised kernels load aligned
_PACKED_DEVICES = ("cuda", "meta")  # where ``upload`` packs: see it


def _packed_copy(torch: Any, arrays: list[np.ndarray], device: Any) -> tuple[Any, ...]:
    """``arrays`` (C order) on ``device`` through one copy of their bytes, packed at
    aligned offsets, as views of it."""
    starts = [0]
    for a in arrays:
        starts.append(starts[-1] + -(-a.nbytes // _ALIGNMENT_BYTES) * _ALIGNMENT_BYTES)
    packed = np.zeros(max(starts[-1], _ALIGNMENT_BYTES), dtype=np.uint8)  # a view needs bytes
    for start, a in zip(starts, arrays, strict=False):
        packed[start : start + a.nbytes] = a.reshape(-1).view(np.uint8)
    # Blocking: the plan is cached per device, and a call on another CUDA stream may use
    # it at once (a non-blocking copy would still be in flight on this one).
    copied = torch.from_numpy(packed).to(device)
    # One view of the bytes per dtype (numpy's dtype names are torch's), one slice each.
    typed = {name: copied.view(getattr(torch, name)) for name in {a.dtype.name for a in arrays}}
    return tuple(
        typed[a.dtype.name][start // a.itemsize : start // a.itemsize + a.size].view(a.shape)
        for start, a in zip(starts, arrays, strict=False)
    )


def _host_values(x: Any) -> np.ndarray | None:
    """``x``'s values as numpy, also where ``torch.func`` transforms (``grad``, ``vjp``,
    ``vmap``, ``functionalize``) wrap it, whose values cannot be read (no storage); ``None``
    where ``vmap`` batches it. ``torch.func`` has no public way to read them: this unwraps
    with ``torch._C._functorch`` and reads with the transforms off (under ``grad`` even a
    plain tensor's ``detach`` and ``numpy`` go through them); checked on torch 2.14.1."""
    torch = sys.modules["torch"]  # imported: x is a tensor (an import statement costs more)
    functorch = torch._C._functorch
    if x.is_meta:
        return None
    wrapped = functorch.is_functorch_wrapped_tensor(x)
    if not wrapped and functorch.peek_interpreter_stack() is None:
        return _numpy(torch, x)  # no transform: nothing to unwrap or turn off
    while functorch.is_functorch_wrapped_tensor(x):
        if functorch.is_batchedtensor(x):
            return None
        x = functorch.get_unwrapped(x)
    with torch._C._DisableFuncTorch():
        return _numpy(torch, x)


def _numpy(torch: Any, x: Any) -> np.ndarray:
    x = x.detach()
    if not x.is_cpu:
        x = x.cpu()
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # numpy has no bf16
