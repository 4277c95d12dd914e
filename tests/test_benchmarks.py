"""The cross-framework benchmark scripts run end to end on tiny inputs (they use public API
only, so an API change shows here before it breaks ``make bench``)."""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def each_layout_with(*names: str) -> set[tuple[str, str]]:
    return {(layout, name) for layout in ("channels_first", "channels_last") for name in names}


@pytest.fixture
def benchmark_module(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Imports a script of benchmarks/ as a module (with benchmarks/ on the path, as when run)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


def markdown_rows(out: str, heading: str) -> list[list[str]]:
    """The body rows of the markdown table under the line starting with ``heading``."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    table = []
    for line in lines[start + 1 :]:
        if not line.strip() and table:
            break
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table[2:]  # after the column names and the |---| line


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


def test_original_skips_without_a_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIFFSTRIDE_ORIGINAL", raising=False)
    assert "skipped" in run("original.py")


def test_original_loads_a_gin_decorated_file(
    benchmark_module: Callable[[str], ModuleType], tmp_path: Path
) -> None:
    """The authors' file runs unchanged: its ``import gin`` gets a stand-in whose decorator
    returns the class, and no ``gin`` stays behind in ``sys.modules``."""
    source = tmp_path / "diffstride" / "pooling.py"
    source.parent.mkdir()
    source.write_text("import gin\n\n\n@gin.configurable\nclass DiffStride:\n    pass\n")
    original = benchmark_module("original")
    module = original.load_original(original.pooling_file(str(tmp_path)))
    assert isinstance(module.DiffStride, type)
    assert "gin" not in sys.modules


def test_original_table() -> None:
    """The bench row against the authors' layer (google-research/diffstride), where a checkout
    of it is named by ``DIFFSTRIDE_ORIGINAL``: it runs, and the outputs and gradients of both
    layers agree (the script stops otherwise)."""
    pytest.importorskip("tensorflow")
    source = os.environ.get("DIFFSTRIDE_ORIGINAL")
    if not source:
        pytest.skip("DIFFSTRIDE_ORIGINAL does not name a checkout of google-research/diffstride")
    out = run("original.py", "--repeats", "1", "--block", "1", "--shapes", "2x4x8x8")
    rows = [
        row for row in markdown_rows(out, "## The Keras DiffStride layer") if row[0] == "2x4x8x8"
    ]
    assert {(row[1], row[2]) for row in rows} == {
        (layout, mode)
        for layout in ("channels_first", "channels_last")
        for mode in ("function", "eager")
    }
    assert all(float(row[5].rstrip("x")) > 0 and float(row[6]) < 1e-4 for row in rows)


def test_jax_network_step() -> None:
    pytest.importorskip("jax")
    out = run("jax_network.py", "--repeats", "1", "--batch-size", "2", "--size", "8")
    rows = [line.split() for line in out.splitlines() if line.startswith("channels_")]
    assert {(row[0], row[1]) for row in rows} == each_layout_with("fft", "matmul", "auto")
    assert all(float(row[2]) > 0 for row in rows)


def test_jax_auto_table() -> None:
    pytest.importorskip("jax")
    out = run("jax_auto.py", "--repeats", "1", "--block", "1", "--shapes", "2x4x8x8,1x2x70x8")
    rows = markdown_rows(out, "## jax DiffStride fwd+bwd")
    assert {(row[0], row[1]) for row in rows} == {
        (shape, layout)
        for shape in ("2x4x8x8", "1x2x70x8")
        for layout in ("channels_first", "channels_last")
    }
    assert {row[5] for row in rows if row[0] == "1x2x70x8"} == {"fft"}  # 70 > 64: the FFTs


def test_gpu_script_runs_on_the_cpu() -> None:
    """``gpu.py``'s counting sections on the CPU (no device events there, so the counts are
    zeros; the checks, torch's and jax's, compare against float64 all the same)."""
    pytest.importorskip("torch")
    checks = [("## Device against float64", ("float32", "bf16 autocast"))]
    sections = "check,syncs,launches"
    if importlib.util.find_spec("jax") is not None:
        checks.append(("## jax on its default device", ("channels_first", "channels_last")))
        sections += ",jax_check"
    out = run("gpu.py", "--device", "cpu", "--quick", "--sections", sections)
    paths = (("fft", "outside"), ("fft", "inside"), ("matmul", "inside"))
    for title, kinds in checks:
        rows = markdown_rows(out, title)
        assert {tuple(row[:3]) for row in rows} == {(*path, k) for path in paths for k in kinds}
        assert all(float(cell) < 1e-5 for row in rows for cell in row[3:])
    assert len(markdown_rows(out, "## Device work per forward+backward")) == 5
    assert "failed" not in out


def test_macs_overhead_table() -> None:
    pytest.importorskip("torchvision")
    out = run(
        *("macs_overhead.py", "--networks", "small_resnet", "--size", "32", "--batch-size", "4"),
        *("--repeats", "1", "--naive-repeats", "1", "--warmup", "1", "--calls", "2"),
    )
    (row,) = [line.split("|") for line in out.splitlines() if line.startswith("| small_resnet")]
    ratio = float(row[7])  # (b)/(a): a number, the estimator's step against the plain one
    assert ratio > 0


def test_interleaved_takes_turns(benchmark_module: Callable[[str], ModuleType]) -> None:
    harness = benchmark_module("_harness")
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    samples = harness.interleaved(steps, rounds=2, block=3, warmup=2, wake=True)
    assert calls == ["a"] * 2 + ["b"] * 2 + (["a"] * 4 + ["b"] * 4) * 2
    assert {key: len(values) for key, values in samples.items()} == {"a": 2, "b": 2}
    assert gc.isenabled()
    with pytest.raises(ValueError, match="block=0"):
        harness.interleaved(steps, rounds=1, block=0)


FRAMEWORK_MODULES = {"torch": "torch", "tf": "tensorflow", "jax": "jax"}

#: Forward+backward ops where the strides are traced (a tf.function graph's nodes, a jaxpr's
#: equations): the device path, which builds the mask from the strides. The counts measured
#: when the bounds were set, plus 10%, so that they cannot grow back unseen.
TRACED_OPS_BOUND = {
    ("tf", "fft", "outside"): 717,
    ("tf", "fft", "inside"): 673,
    ("tf", "matmul", "outside"): 680,
    ("tf", "matmul", "inside"): 636,
    ("jax", "fft", "outside"): 174,
    ("jax", "fft", "inside"): 150,
    ("jax", "matmul", "outside"): 216,
    ("jax", "matmul", "inside"): 191,
}


def test_overhead_table() -> None:
    frameworks = [fw for fw, m in FRAMEWORK_MODULES.items() if importlib.util.find_spec(m)]
    if not frameworks:
        pytest.skip("no framework installed")
    out = run("overhead.py", "--quick", "--frameworks", ",".join(frameworks))
    ops = markdown_rows(out, "## Ops per call")
    shapes, methods, ramps = ("2x4x32x32", "1x1x8x8"), ("fft", "matmul"), ("outside", "inside")
    expected = {
        (fw, sh, m, r) for fw in frameworks for sh in shapes for m in methods for r in ramps
    }
    assert {(row[0], row[2], row[3], row[4]) for row in ops} == expected
    for row in ops:
        fwd, fwdbwd, reads = int(row[5]), int(row[6]), int(row[8])
        assert 0 < fwd < fwdbwd, row
        assert fwdbwd <= TRACED_OPS_BOUND.get((row[0], row[3], row[4]), fwdbwd), row
        assert reads >= 0
        assert row[9] == "n/a" or int(row[9]) >= 0
    times = markdown_rows(out, "## Call time")
    modes = {"torch": ["eager"], "tf": ["eager", "function"], "jax": ["eager", "jit"]}
    expected = {(fw, mode) for fw in frameworks for mode in modes[fw]}
    assert {(row[0], row[1]) for row in times} == expected
    assert len(times) == len(expected) * len(methods) * len(ramps)
    if "torch" in frameworks:
        steps = markdown_rows(out, "## torch eager fwd+bwd")
        assert {(row[0], row[1]) for row in steps} == {(m, r) for m in methods for r in ramps}


#: Aten ops of one eager call of diffstride.torch.diffstride and its backward (2x4x32x32,
#: strides 2): the target. A repeat call (unchanged strides) uploads nothing; a call with new
#: strides (a training step) makes the host plan's arrays, on the CPU one tensor sharing
#: numpy's memory each (3 on the FFT path, 4 on the GEMM path; on CUDA, one copy).
TORCH_OPS_BOUND = {"repeat": {"fft": 40, "matmul": 40}, "new strides": {"fft": 40, "matmul": 40}}


@pytest.mark.parametrize("shape", [(2, 4, 32, 32), (1, 1, 8, 8)], ids=["2x4x32x32", "1x1x8x8"])
@pytest.mark.parametrize("ramp", ["outside", "inside"])
@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_torch_op_count_bounded(
    benchmark_module: Callable[[str], ModuleType], method: str, ramp: str, shape: tuple[int, ...]
) -> None:
    pytest.importorskip("torch")
    counts = benchmark_module("overhead").torch_op_counts(shape, method, ramp)
    work = "aten._fft_r2c" if method == "fft" else "aten.mm"
    assert counts.ops.get(work, 0) >= 1  # the counter sees the call's work
    assert counts.fwd < counts.fwdbwd <= TORCH_OPS_BOUND["repeat"][method], counts.top
    assert counts.reads_library <= 1  # one read of the strides
    assert counts.reads_framework <= 1


@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_torch_op_count_with_new_strides_bounded(
    benchmark_module: Callable[[str], ModuleType], method: str
) -> None:
    """A training step's call: the strides changed since the last call."""
    torch = pytest.importorskip("torch")
    from diffstride import torch as dt

    tally = benchmark_module("overhead").torch_tally
    x = torch.randn(2, 4, 32, 32, requires_grad=True)
    strides = torch.tensor([2.0, 2.0], requires_grad=True)
    dt.diffstride(x, strides, method=method)
    with torch.no_grad():
        strides.add_(0.01)
    with tally() as forward:
        y = dt.diffstride(x, strides, method=method)
    cotangent = torch.ones_like(y)
    with tally() as backward:
        grads = torch.autograd.grad(y, [x, strides], cotangent)
    total = (forward.ops + backward.ops).total()
    assert total <= TORCH_OPS_BOUND["new strides"][method], forward.ops + backward.ops
    assert forward.reads <= 1
    expected = torch.autograd.grad(
        dt.diffstride(x, strides.detach().requires_grad_(), method="fft").sum(), [x]
    )
    torch.testing.assert_close(grads[0], expected[0], rtol=1e-4, atol=1e-5)


def test_network_steps_can_hold_the_strides(
    benchmark_module: Callable[[str], ModuleType],
) -> None:
    """``hold_strides``: the strides get their gradient but keep their values (and so the
    network its MACs); the other parameters are updated."""
    torch = pytest.importorskip("torch")
    network = benchmark_module("network")
    label = "DiffStride inside, pool first"
    step, _ = network.torch_networks(2, 16, [label], hold_strides=True)[label]
    model, _optimizer = step.__defaults__
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    step()
    step()
    strides = [name for name in before if name.endswith("strides")]
    assert strides
    for name, p in model.named_parameters():
        if name in strides:
            assert torch.equal(p, before[name]), name
            assert p.grad is not None, name
            assert bool(torch.any(p.grad != 0)), name
    weights = [name for name in before if name.endswith("weight")]
    changed = [n for n in weights if not torch.equal(dict(model.named_parameters())[n], before[n])]
    assert changed == weights


@pytest.mark.parametrize("method", ["fft", "matmul"])
def test_new_strides_copy_the_plan_to_an_accelerator_at_once(
    benchmark_module: Callable[[str], ModuleType], method: str
) -> None:
    """On CUDA each copy from pageable memory is a synchronisation: a call whose strides
    moved (a training step) copies its plan's three or four arrays in one copy. The meta
    device stands in for an accelerator."""
    torch = pytest.importorskip("torch")
    from diffstride import torch as dt

    x = torch.randn(2, 4, 32, 32, device="meta", requires_grad=True)
    strides = torch.tensor([2.0, 1.75])
    with benchmark_module("overhead").torch_tally() as call:
        y = dt.diffstride(x, strides, method=method)
    assert y.shape == (2, 4, 24, 28)
    assert y.is_meta
    assert call.ops["aten._to_copy"] == 1, call.ops
    assert call.ops["aten.lift_fresh"] == 1, call.ops


@pytest.mark.parametrize(
    "layer",
    ["DiffStride fft outside", "DiffStride fft inside", "DiffStride matmul inside", "spectral"],
)
def test_repeat_training_calls_upload_and_read_nothing(
    benchmark_module: Callable[[str], ModuleType], layer: str
) -> None:
    """On a GPU each value read and each tensor made from host data is a synchronisation:
    a layer's repeat forward+backward in training mode, strides unchanged (the projection
    leaves them), makes no tensor from host data (``lift_fresh``) and reads nothing back."""
    torch = pytest.importorskip("torch")
    from diffstride import torch as dt

    if layer == "spectral":
        module = dt.FixedSpectralPooling((2, 2))
    else:
        _, method, ramp = layer.split()
        module = dt.DiffStride((2.0, 2.0), method=method, ramp=ramp).train()
    x = torch.randn(2, 4, 32, 32, requires_grad=True)
    tally = benchmark_module("overhead").torch_tally
    for _ in range(2):
        y = module(x)
        (y * y).sum().backward()
    with tally() as repeat:
        y = module(x)
        (y * y).sum().backward()
    assert repeat.ops.get("aten.mm", 0) + repeat.ops.get("aten._fft_r2c", 0) >= 1
    assert repeat.ops.get("aten.lift_fresh", 0) == 0, repeat.ops
    assert repeat.reads == 0
