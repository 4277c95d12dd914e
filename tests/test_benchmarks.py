"""The cross-framework benchmark scripts run end to end on tiny inputs (they use public API
only, so an API change shows here before it breaks ``make bench``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def each_layout_with(*names: str) -> set[tuple[str, str]]:
    return {(layout, name) for layout in ("channels_first", "channels_last") for name in names}


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_frameworks_table() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    pytest.importorskip("jax")
    out = run("frameworks.py", "--repeats", "1", "--block", "1", "--shapes", "2x4x8x8")
    rows = [line.split() for line in out.splitlines() if line.startswith("2x4x8x8")]
    assert {(row[1], row[2]) for row in rows} == each_layout_with("torch", "keras", "jax")
    torch_rows = [row for row in rows if row[2] == "torch"]
    assert all(float(row[4]) == 1.0 for row in torch_rows)


def test_jax_network_step() -> None:
    pytest.importorskip("jax")
    out = run("jax_network.py", "--repeats", "1", "--batch-size", "2", "--size", "8")
    rows = [line.split() for line in out.splitlines() if line.startswith("channels_")]
    assert {(row[0], row[1]) for row in rows} == each_layout_with("fft", "matmul")
    assert all(float(row[2]) > 0 for row in rows)


def test_macs_overhead_table() -> None:
    pytest.importorskip("torchvision")
    out = run(
        *("macs_overhead.py", "--networks", "small_resnet", "--size", "32", "--batch-size", "4"),
        *("--repeats", "1", "--naive-repeats", "1", "--warmup", "1", "--calls", "2"),
    )
    (row,) = [line.split("|") for line in out.splitlines() if line.startswith("| small_resnet")]
    ratio = float(row[7])  # (b)/(a): a number, the estimator's step against the plain one
    assert ratio > 0
