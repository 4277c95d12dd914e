"""array_api_strict: runs the core forward to prove it uses nothing outside the standard."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from diffstride import Backend


class ArrayApiStrictBackend(Backend):
    name = "array_api_strict"
    module = "array_api_strict"

    def owns(self, x: Any) -> bool:
        # Recognised through sys.modules, as array-api-compat does: nothing is imported.
        strict = sys.modules.get("array_api_strict")
        return strict is not None and isinstance(x, type(strict.asarray(0)))

    def namespace(self) -> Any:
        import array_api_strict

        return array_api_strict

    def stop_gradient(self, x: Any) -> Any:
        return x

    def concrete(self, x: Any) -> np.ndarray:
        # The strict namespace has no to-numpy; DLPack is the standard's exchange route.
        return np.from_dlpack(x)
