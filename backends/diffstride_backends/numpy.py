"""numpy: the reference backend. No autodiff here; ``diffstride.numpy`` adds analytic VJPs."""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xp
import numpy as np

from diffstride import Backend


class NumpyBackend(Backend):
    name = "numpy"
    module = "numpy"

    def owns(self, x: Any) -> bool:
        return isinstance(x, np.ndarray)

    def namespace(self) -> Any:
        return xp

    def stop_gradient(self, x: Any) -> Any:
        return x

    def concrete(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    # Testing hook, used by diffstride_conformance.
    def from_numpy(self, array: np.ndarray) -> Any:
        return np.asarray(array)
