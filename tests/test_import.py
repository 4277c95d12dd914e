"""``import diffstride`` imports no framework, and neither does using it on numpy arrays."""

from __future__ import annotations

import subprocess
import sys

FRAMEWORKS = ("torch", "tensorflow", "jax", "keras", "array_api_strict")


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return [m for m in result.stdout.strip().split(",") if m]


def test_import_diffstride_imports_no_framework() -> None:
    assert _imported_after("import diffstride") == []


def test_numpy_use_imports_no_framework() -> None:
    code = (
        "import numpy as np, diffstride\n"
        "diffstride.diffstride(np.ones((1, 1, 8, 8)), (2.0, 2.0))\n"
        "diffstride.output_size((8, 8), 2.0)\n"
        "diffstride.available_backends()\n"
    )
    assert _imported_after(code) == []


def test_front_end_imports_only_its_framework() -> None:
    assert set(_imported_after("import diffstride.torch")) <= {"torch"}
