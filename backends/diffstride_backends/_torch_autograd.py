"""The ``autograd.Function`` behind ``TorchBackend.custom_vjp``, in a module of its own.

It imports torch at import time, so the adapter imports it only when a custom VJP is first
built. The class is defined at module level, not in a function: ``torch.compile`` (dynamo)
cannot trace a class definition, and built inside the traced call it broke the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class Rules:
    """The callables that one :class:`FusedVJP` application uses: ``reference`` computes the
    output with differentiable operations (``None``: ``forward`` does)."""

    __slots__ = ("backward", "forward", "reference")

    def __init__(self, forward: Any, backward: Any, reference: Any = None) -> None:
        self.forward, self.backward = forward, backward
        self.reference = reference or (lambda *primals: forward(*primals)[0])


def _forward(rules: Rules, primals: tuple[Any, ...]) -> tuple[Any, Any]:
    out, residual = rules.forward(*primals)
    for primal in primals:
        if residual is primal:  # autograd saves no input returned as is
            return out, residual.view_as(residual)
    return out, residual


def _setup(ctx: Any, rules: Rules, primals: Sequence[Any], residual: Any) -> None:
    ctx.rules = rules
    ctx.mark_non_differentiable(residual)
    ctx.save_for_backward(residual, *primals)


def _backward(ctx: Any, cotangent: Any) -> tuple[Any, ...]:
    residual, *primals = ctx.saved_tensors
    needs = tuple(ctx.needs_input_grad[1:])
    if torch.is_grad_enabled():  # create_graph=True: a differentiable backward
        wanted = [p for p, need in zip(primals, needs, strict=True) if need]
        with torch.enable_grad():
            out = ctx.rules.reference(*primals)
        grads = iter(torch.autograd.grad(out, wanted, cotangent, create_graph=True))
        return (None, *(next(grads) if need else None for need in needs))
    return (None, *ctx.rules.backward(residual, tuple(primals), cotangent, needs))


class FusedVJP(torch.autograd.Function):
    """``rules.forward(*primals) -> (out, residual)`` with ``rules.backward`` as its VJP.

    Written in the ``setup_context`` style with a generated vmap rule, so that the
    ``torch.func`` transforms (``grad``, ``vmap`` of ``grad``) can run it: forward and
    backward are torch operations throughout."""

    generate_vmap_rule = True

    @staticmethod
    def forward(rules: Rules, *primals: Any) -> Any:
        return _forward(rules, primals)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        _setup(ctx, inputs[0], inputs[1:], output[1])

    @staticmethod
    def backward(ctx: Any, cotangent: Any, _residual_cotangent: Any) -> Any:
        return _backward(ctx, cotangent)


class EagerFusedVJP(torch.autograd.Function):
    """:class:`FusedVJP` in the older style (``forward`` takes ``ctx``), which
    ``torch.func`` refuses but ``apply`` runs without binding its arguments by signature,
    a fixed cost of every call (tens of microseconds): used where no transform is active."""

    @staticmethod
    def forward(ctx: Any, rules: Rules, *primals: Any) -> Any:
        out, residual = _forward(rules, primals)
        _setup(ctx, rules, primals, residual)
        return out, residual

    @staticmethod
    def backward(ctx: Any, cotangent: Any, _residual_cotangent: Any) -> Any:
        return _backward(ctx, cotangent)


def transforming() -> bool:
    """Whether a ``torch.func`` transform is active (``peek_interpreter_stack``, private;
    checked on torch 2.14.1)."""
    return torch._C._functorch.peek_interpreter_stack() is not None
