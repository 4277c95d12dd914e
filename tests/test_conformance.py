"""Every built-in backend held to the conformance suite (the decorator route)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from diffstride_backends.torch import TorchBackend
from diffstride_conformance import parametrize_with_checks
from diffstride_conformance.checks import check_golden_gradients, check_matches_numpy_reference

BUILTINS = ["numpy", "torch", "tensorflow", "jax", "array_api_strict"]


@parametrize_with_checks(BUILTINS)
def test_builtin_backend(backend: Any, check: Any) -> None:
    check(backend)


class _WrongGradient(TorchBackend):
    """The torch adapter with a deliberate bug: its stop-gradient lets the gradient through,
    so the straight-through projection and the crop leak gradient where they must not."""

    name = "broken-torch"

    def stop_gradient(self, x: Any) -> Any:
        return x * 1.0

    def custom_vjp(self, forward: Any, backward: Any) -> Any:
        """Without ``reference`` (an adapter of the older contract): the calls take the
        device path, on which the stop-gradient acts (the host plan uses none)."""
        return super().custom_vjp(forward, backward)


class _ScaledFFT(_WrongGradient):
    """A namespace whose inverse FFT is off by a factor in the backward pass only (through
    autodiff: this adapter registers no ``custom_vjp``)."""

    def custom_vjp(self, forward: Any, backward: Any) -> Any:
        return None

    def namespace(self) -> Any:
        from types import SimpleNamespace

        import torch

        xp = super().namespace()

        class Scale(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, z: Any) -> Any:
                return z.clone()

            @staticmethod
            def backward(ctx: Any, grad: Any) -> Any:
                return grad * 1.01

        def irfftn(z: Any, s: Any, axes: Any) -> Any:
            return xp.fft.irfftn(Scale.apply(z), s=s, axes=axes)

        fft = SimpleNamespace(rfftn=xp.fft.rfftn, irfftn=irfftn)
        return SimpleNamespace(
            **{n: getattr(xp, n) for n in dir(xp) if not n.startswith("_")} | {"fft": fft}
        )

    def stop_gradient(self, x: Any) -> Any:
        return x.detach()


class _WrongCustomVJP(_WrongGradient):
    """Registers the core's VJP with a bug: the input's gradient is 1% too large."""

    def stop_gradient(self, x: Any) -> Any:
        return x.detach()

    def custom_vjp(self, forward: Any, backward: Any) -> Any:
        def scaled(*args: Any) -> tuple[Any, ...]:
            grads = backward(*args)
            return (None if grads[0] is None else grads[0] * 1.01, *grads[1:])

        return super().custom_vjp(forward, scaled)


class _WrongPlannedVJP(TorchBackend):
    """Registers the host plan's VJP with a bug: the strides' gradient is 1% too large."""

    name = "broken-torch"

    def custom_vjp(self, forward: Any, backward: Any, *, reference: Any = None) -> Any:
        def scaled(*args: Any) -> tuple[Any, ...]:
            grads = list(backward(*args))
            if len(grads) > 1 and grads[1] is not None:
                grads[1] = grads[1] * 1.01
            return tuple(grads)

        return super().custom_vjp(forward, scaled, reference=reference)


@pytest.mark.parametrize(
    ("broken", "method"),
    [
        (_WrongGradient, "fft"),
        (_WrongGradient, "matmul"),
        (_ScaledFFT, "fft"),
        (_WrongCustomVJP, "fft"),
        (_WrongPlannedVJP, "fft"),
        (_WrongPlannedVJP, "matmul"),
    ],
)
@pytest.mark.parametrize("check", [check_golden_gradients, check_matches_numpy_reference])
def test_suite_catches_a_wrong_gradient(broken: type, method: str, check: Any) -> None:
    with pytest.raises(AssertionError, match="grad"):
        check(broken(), method=method)


def test_env_var_route_runs_the_suite() -> None:
    """``DIFFSTRIDE_BACKEND=numpy pytest --pyargs diffstride_conformance`` passes."""
    env = dict(os.environ, DIFFSTRIDE_BACKEND="numpy")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--pyargs",
            "diffstride_conformance",
            "-k",
            "golden or bad_input",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


_DOCUMENTED_ADAPTER = '''
import numpy as np

import diffstride
from diffstride_backends.numpy import NumpyBackend


class MyBackend(NumpyBackend):
    """numpy as a framework without float64 and without empty arrays."""

    name = "mybackend"

    def from_numpy(self, array):
        if array.size == 0:
            raise ValueError("mylib has no empty arrays")
        return np.asarray(array, dtype=np.float32 if array.dtype == np.float64 else array.dtype)


diffstride.register_backend(MyBackend)
'''


def _documented_example() -> str:
    """The third-party test of docs/backends.md, as written there."""
    text = (Path(__file__).parents[1] / "docs" / "backends.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    return next(block for block in blocks if "expected_failed_checks" in block)


def test_documented_third_party_test_runs_as_described(tmp_path: Path) -> None:
    """The docs' example works as written: its expected failure is a strict xfail, and a
    backend without float64 is held to the float32 cases (they were skipped with the
    float64 ones)."""
    test_file = tmp_path / "test_mybackend.py"
    test_file.write_text(_DOCUMENTED_ADAPTER + _documented_example())
    chosen = "check_empty_batch or check_matches_numpy_reference or check_dtype_is_kept"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(test_file),
         "-k", f"fft and not inside and ({chosen})"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    outcomes = {
        check: outcome
        for outcome, check in re.findall(
            r"^(PASSED|XFAIL|SKIPPED|FAILED|XPASS)\S* \S+\[mybackend-fft-(\w+)\]",
            result.stdout,
            re.M,
        )
    }
    assert outcomes == {
        "check_empty_batch": "XFAIL",
        "check_matches_numpy_reference": "PASSED",
        "check_dtype_is_kept": "PASSED",
    }, result.stdout[-3000:]
