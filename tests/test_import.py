"""``import diffstride`` imports no framework, and neither does using it on numpy arrays."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("order", ["tensorflow-first", "torch-first"])
def test_diffstride_torch_imports_after_tensorflow(order: str) -> None:
    """``import tensorflow`` then ``import diffstride.torch`` must not import torch's compiler
    stack (it segfaulted, importing triton, in that order); compiling still works after."""
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    imports = ["tensorflow", "diffstride.torch"]
    if order == "torch-first":
        imports.reverse()
    code = "\n".join(
        [
            "import importlib, sys",
            *(f"importlib.import_module({name!r})" for name in imports),
            "import torch",
            "from diffstride.torch import DiffStride",
            "layer = DiffStride((2.0, 1.5))",
            "y = layer(torch.randn(1, 2, 32, 32))",
            "assert tuple(y.shape[2:]) == layer.output_size((32, 32)) == (24, 30), y.shape",
            "if sys.argv[1] == 'tensorflow-first':",
            "    assert 'torch._dynamo' not in sys.modules, 'the compiler stack was imported'",
            "compiled = torch.compile(layer, backend='eager')",
            "assert tuple(compiled(torch.randn(1, 2, 32, 32)).shape) == (1, 2, 24, 30)",
            "print('ok')",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code, order], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_conformance_package_imports_without_pytest_or_hypothesis() -> None:
    """``diffstride_conformance`` ships in the base wheel: importing it needs neither pytest
    nor hypothesis; using the checks without them says what to install."""
    code = "\n".join(
        [
            "import sys",
            "sys.modules['pytest'] = sys.modules['hypothesis'] = None  # not installed",
            "import diffstride_conformance",
            "assert 'numpy' in diffstride_conformance.backends_under_test()",
            "try:",
            "    diffstride_conformance.parametrize_with_checks(['numpy'])",
            "except ModuleNotFoundError as error:",
            "    print(error)",
        ]
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'pip install "diffstride[conformance]"' in result.stdout, result.stdout
