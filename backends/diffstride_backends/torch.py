"""PyTorch: array-api-compat's torch namespace; autograd does the gradients.

channels_last: ``torch.fft.rfftn`` takes any ``dim``, so the core's ``axes=(1, 2)`` runs as is.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


class TorchBackend:
    name = "torch"
    module = "torch"
    differentiable = True
    dynamic_shapes = False

    def owns(self, x: Any) -> bool:
        torch = sys.modules.get("torch")
        return torch is not None and isinstance(x, torch.Tensor)

    def namespace(self) -> Any:
        import array_api_compat.torch

        return array_api_compat.torch

    def stop_gradient(self, x: Any) -> Any:
        return x.detach()

    def concrete(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    # Testing hooks, used by diffstride_conformance.
    def from_numpy(self, array: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(array))

    def vjp(self, fn: Any, primals: list[Any], cotangent: np.ndarray) -> Any:
        """``(fn(*primals), grads of sum(fn * cotangent))`` as numpy arrays."""
        import torch

        leaves = [p.detach().clone().requires_grad_(True) for p in primals]
        out = fn(*leaves)
        grads = torch.autograd.grad(
            out, leaves, grad_outputs=self.from_numpy(cotangent), materialize_grads=True
        )
        return self.concrete(out), [self.concrete(g) for g in grads]
