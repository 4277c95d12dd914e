"""The ``autograd.Function`` behind ``TorchBackend.custom_vjp``, in a module of its own.

It imports torch at import time, so the adapter imports it only when a custom VJP is first
built. The class is defined at module level, not in a function: ``torch.compile`` (dynamo)
cannot trace a class definition, and built inside the traced call it broke the graph.
"""

from __future__ import annotations

from typing import Any

import torch


class Rules:
    """The forward and backward callables that one :class:`FusedVJP` application uses."""

    __slots__ = ("backward", "forward")

    def __init__(self, forward: Any, backward: Any) -> None:
        self.forward, self.backward = forward, backward


class FusedVJP(torch.autograd.Function):
    """``rules.forward(*primals) -> (out, residual)`` with ``rules.backward`` as its VJP."""

    @staticmethod
    def forward(ctx: Any, rules: Rules, *primals: Any) -> Any:
        out, residual = rules.forward(*primals)
        ctx.rules = rules
        ctx.save_for_backward(residual, *primals)
        return out

    @staticmethod
    def backward(ctx: Any, cotangent: Any) -> Any:
        residual, *primals = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[1:])
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward
            wanted = [p for p, need in zip(primals, needs, strict=True) if need]
            with torch.enable_grad():
                out = ctx.rules.forward(*primals)[0]
            grads = iter(torch.autograd.grad(out, wanted, cotangent, create_graph=True))
            return (None, *(next(grads) if need else None for need in needs))
        return (None, *ctx.rules.backward(residual, tuple(primals), cotangent, needs))
