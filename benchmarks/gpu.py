"""DiffStride where users train: one CUDA GPU, torch (eager, ``torch.compile``, autocast bf16)
and jax (``jit``).

    python benchmarks/gpu.py [--device cuda] [--sections all] [--quick] [--json PATH]

On an accelerator a layer's cost is its kernel launches and its host synchronisations more
than its arithmetic, so this script counts those before it times anything. Sections (each runs
on its own; a failing one prints its error and the others still run):

* ``check``: outputs and gradients (input and strides) on the device against the same call in
  float64 on the CPU, ``||a - b|| / ||b||``, per path and ramp; under autocast bf16 too.
* ``jax_check``: the same for jax under ``jit`` on its default device, per path, ramp and
  layout (jax's default would run float32 GEMMs in TensorFloat-32 on a GPU).
* ``syncs``: host synchronisations of a layer's forward+backward (``DiffStride`` in train
  mode, a network of three, and the functional call with a strides tensor) on a repeat call
  and right after an optimizer step that moved the strides: torch's sync debug mode
  (``warn``) counts them, and the profiler's ``cuda*Synchronize`` calls confirm.
* ``launches``: device kernels and memory copies of one forward+backward (the torch
  profiler's device events), DiffStride against fixed spectral pooling and 2x2 average
  pooling, on a repeat call and with new strides.
* ``layer``: a layer's forward+backward time (loss ``sum(y * y)``): DiffStride (FFT path both
  ramps, GEMM path inside), fixed spectral pooling and average pooling, eager and under
  ``autocast(bfloat16)``, interleaved; ``layer_compiled``: the same, ``torch.compile`` of each
  module, first shape only.
* ``network``: a ResNet-18 training step (``diffstride.models.torch``, SGD, strides held as in
  ``network.py --hold-strides`` so that every network keeps its MACs): strided convolutions,
  spectral pooling first, DiffStride inside with pooling first, and the original's
  DiffStride (``outside``); eager and bf16 autocast. ``network_compiled``: the strided and
  the DiffStride-inside-pool-first networks compiled (a minute each to compile).
* ``jax``: the single layer under ``jit`` (value and gradients), FFT and GEMM paths and
  ``auto``, against 2x2 average pooling, both layouts.

Times are medians over interleaved rounds of ``--calls`` calls followed by one device
synchronisation (what a training loop sees: launches overlap the device's work); the ratios
are what to read. ``--device cpu --quick`` is the smoke run the tests use.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# jax takes most of the device's memory at its first array unless told not to; torch is here too.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np

# Before diffstride and any framework: puts an uninstalled checkout on the path.
from _harness import environment, header_block, interleaved

SECTIONS = (
    "check",
    "jax_check",
    "syncs",
    "launches",
    "layer",
    "layer_compiled",
    "jax",
    "network",
    "network_compiled",
)
PATHS = (("fft", "outside"), ("fft", "inside"), ("matmul", "inside"))
STRIDES = (2.0, 2.0)
CHECK_COLUMNS = ("output", "grad_x", "grad_strides")  # relative errors against float64
LAYER_SHAPES = ((32, 64, 32, 32), (64, 128, 64, 64))
NETWORKS: list[tuple[str, dict[str, Any]]] = [
    ("strided", {"pooling": None}),
    ("spectral, pool first", {"pooling": "spectral", "pool_first": True}),
    (
        "DiffStride inside, pool first",
        {"pooling": "diffstride", "ramp": "inside", "pool_first": True},
    ),
    ("DiffStride outside", {"pooling": "diffstride", "ramp": "outside"}),
]
COMPILED_NETWORKS = ("strided", "DiffStride inside, pool first")  # a minute each to compile


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _repeated(call: Callable[[], Any], calls: int, device: str) -> Callable[[], None]:
    """``calls`` calls of ``call``, then one synchronisation: one timing sample."""

    def step() -> None:
        for _ in range(calls):
            call()
        _sync(device)

    return step


def _median_ms(samples: list[float], calls: int) -> float:
    return statistics.median(samples) / calls * 1e3


def _relative_error(a: Any, b: Any) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _torch_input(shape: tuple[int, ...], device: str, seed: int = 0) -> Any:
    import torch

    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return torch.from_numpy(x).to(device).requires_grad_(True)


def _layer(kind: str, method: str = "fft", ramp: str = "inside") -> Any:
    from torch import nn

    from diffstride import torch as dt

    if kind == "diffstride":
        return dt.DiffStride(STRIDES, method=method, ramp=ramp)
    if kind == "spectral":
        return dt.FixedSpectralPooling((2, 2))
    return nn.AvgPool2d(2)


def _layers() -> dict[str, Any]:
    layers = {f"DiffStride {m} {r}": _layer("diffstride", m, r) for m, r in PATHS}
    layers["spectral pooling"] = _layer("spectral")
    layers["avg pooling 2x2"] = _layer("avg")
    return layers


def _bf16(device: str, on: bool) -> Any:
    """``autocast(bfloat16)`` on ``device``'s type where ``on``, else nothing."""
    import torch

    if not on:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def _loss_backward(layer: Any, x: Any) -> None:
    y = layer(x)
    (y.float() * y.float()).sum().backward()


# --------------------------------------------------------------------------------------------
# sections


def check(device: str, quick: bool) -> list[dict[str, Any]]:
    """Output and gradients on ``device`` (float32, and under bf16 autocast) against float64
    on the CPU."""
    import torch

    from diffstride import torch as dt

    shape = (2, 4, 16, 16) if quick else (4, 8, 32, 32)
    rows = []
    for method, ramp in PATHS:
        results = {}
        for where, dtype, autocast in (
            ("reference", torch.float64, False),
            ("float32", torch.float32, False),
            ("bf16 autocast", torch.float32, True),
        ):
            run_on = "cpu" if where == "reference" else device
            x = _torch_input(shape, "cpu").detach().to(run_on, dtype).requires_grad_(True)
            strides = torch.tensor(STRIDES, dtype=dtype, device=run_on, requires_grad=True)
            with _bf16(run_on, autocast):
                y = dt.diffstride(x, strides, method=method, ramp=ramp)
            (y.float() * y.float()).sum().backward()
            results[where] = [t.detach().cpu().double().numpy() for t in (y, x.grad, strides.grad)]
        for where in ("float32", "bf16 autocast"):
            errors = [
                _relative_error(a, b)
                for a, b in zip(results[where], results["reference"], strict=True)
            ]
            rows.append(
                {
                    "method": method,
                    "ramp": ramp,
                    "precision": where,
                    "output": errors[0],
                    "grad_x": errors[1],
                    "grad_strides": errors[2],
                }
            )
    return rows


def jax_check(quick: bool) -> list[dict[str, Any]]:
    """jax's output and gradients on its default device (float32, ``jit``) against torch's
    float64 on the CPU, per path and layout: the GEMMs must not run in TensorFloat-32."""
    import jax
    import jax.numpy as jnp
    import torch

    from diffstride import jax as dj
    from diffstride import torch as dt

    shape = (2, 4, 16, 16) if quick else (4, 8, 32, 32)
    x = _torch_input(shape, "cpu").detach().double().requires_grad_(True)
    rows = []
    for method, ramp in PATHS:
        strides = torch.tensor(STRIDES, dtype=torch.float64, requires_grad=True)
        y = dt.diffstride(x, strides, method=method, ramp=ramp)
        (y * y).sum().backward()
        reference = [t.detach().numpy() for t in (y, x.grad, strides.grad)]
        x.grad = None
        size = tuple(y.shape[2:])
        for layout in ("channels_first", "channels_last"):
            moved = (
                (lambda a: a) if layout == "channels_first" else (lambda a: np.moveaxis(a, 1, -1))
            )
            run = functools.partial(
                dj.diffstride, output_size=size, method=method, ramp=ramp, data_format=layout
            )

            def loss(a: Any, s: Any, run: Any = run) -> Any:
                return jnp.sum(run(a, s) ** 2)

            inputs = (jnp.asarray(moved(x.detach().numpy()), jnp.float32), jnp.asarray(STRIDES))
            out = jax.jit(run)(*inputs)
            grads = jax.jit(jax.grad(loss, (0, 1)))(*inputs)
            got = [np.asarray(a) for a in (out, *grads)]
            expected = [moved(reference[0]), moved(reference[1]), reference[2]]
            errors = [_relative_error(a, b) for a, b in zip(got, expected, strict=True)]
            rows.append(
                {"method": method, "ramp": ramp, "layout": layout}
                | dict(zip(CHECK_COLUMNS, errors, strict=True))
            )
    return rows


@contextlib.contextmanager
def _sync_counter(device: str) -> Iterator[dict[str, int]]:
    """Synchronising calls in the block: torch's sync debug mode's warnings, and the profiler's
    ``cuda*Synchronize`` runtime calls."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    counts = {"sync_debug_warnings": 0, "profiler_synchronize_calls": 0}
    if not device.startswith("cuda"):
        yield counts
        return
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                yield counts
                torch.cuda.synchronize()  # inside the profile: its own call, subtracted below
        finally:
            torch.cuda.set_sync_debug_mode("default")
    counts["sync_debug_warnings"] = sum("synchroniz" in str(w.message).lower() for w in caught)
    counts["profiler_synchronize_calls"] = (
        sum("Synchronize" in e.name for e in prof.events()) - 1  # the closing synchronize
    )


def syncs(device: str, quick: bool) -> list[dict[str, Any]]:
    """Per path: a layer, the function with strides a tensor, and (inside ramp) a network of
    three layers, whose training step should read their new strides once."""
    import torch

    from diffstride import torch as dt

    shape = (2, 4, 16, 16) if quick else (32, 64, 32, 32)
    x = _torch_input(shape, device)
    rows = []
    for method, ramp in PATHS:
        layer = _layer("diffstride", method, ramp).to(device).train()
        strides = torch.tensor(STRIDES, device=device, requires_grad=True)

        def functional(method: str = method, ramp: str = ramp, strides: Any = strides) -> Any:
            y = dt.diffstride(x, strides, method=method, ramp=ramp)
            (y * y).sum().backward()

        def move(strides: Any = strides) -> None:
            with torch.no_grad():
                strides.add_(0.01)

        modules = {"layer": layer}
        if ramp == "inside":
            network = torch.nn.Sequential(*(_layer("diffstride", method, ramp) for _ in range(3)))
            modules["3 layers"] = network.to(device).train()
        for name, module in modules.items():
            call = functools.partial(_loss_backward, module, x)
            rows.append(_sync_row(device, name, method, ramp, call, module=module))
        rows.append(_sync_row(device, "functional", method, ramp, functional, move=move))
    return rows


def _sync_row(
    device: str,
    name: str,
    method: str,
    ramp: str,
    call: Callable[[], Any],
    *,
    module: Any = None,
    move: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Synchronisations of a repeat ``call`` and of one after its strides moved (an
    optimizer step of ``module``, else ``move``)."""
    import torch

    if module is not None:
        move = torch.optim.SGD(module.parameters(), lr=0.05).step
    call()
    call()
    with _sync_counter(device) as repeat:
        call()
    move()
    with _sync_counter(device) as moved:
        call()
    return {
        "call": name,
        "method": method,
        "ramp": ramp,
        "repeat": repeat,
        "after_new_strides": moved,
    }


def _device_events(call: Callable[[], Any], device: str) -> dict[str, int]:
    """Kernels and copies the device ran for ``call`` (profiler device events)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    _sync(device)
    with profile(activities=activities) as prof:
        call()
        _sync(device)
    events = prof.events()
    on_device = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    return {
        "kernels": sum("Memcpy" not in e.name and "Memset" not in e.name for e in on_device),
        "copies": sum("Memcpy" in e.name for e in on_device),
        "host_aten_ops": sum(e.name.startswith("aten::") and e.cpu_parent is None for e in events),
    }


def launches(device: str, quick: bool) -> list[dict[str, Any]]:
    import torch

    shape = (2, 4, 16, 16) if quick else (32, 64, 32, 32)
    x = _torch_input(shape, device)
    rows = []
    for name, layer in _layers().items():
        layer = layer.to(device).train()
        call = lambda layer=layer: _loss_backward(layer, x)  # noqa: E731
        call()
        call()
        row: dict[str, Any] = {"layer": name, "repeat": _device_events(call, device)}
        if name.startswith("DiffStride"):
            with torch.no_grad():
                layer.strides.add_(0.01)
            row["after_new_strides"] = _device_events(call, device)
        rows.append(row)
    return rows


def layer_times(
    device: str, quick: bool, rounds: int, calls: int, modes: tuple[str, ...]
) -> list[dict[str, Any]]:
    import torch

    shapes = ((2, 8, 16, 16),) if quick else LAYER_SHAPES
    if modes == ("compiled",):
        shapes = shapes[:1]  # compiling takes long: the first shape only
    rows = []
    for shape in shapes:
        x = _torch_input(shape, device)
        steps: dict[tuple[str, str], Callable[[], None]] = {}
        for mode in modes:
            for name, layer in _layers().items():
                layer = layer.to(device).train()
                if mode == "compiled":
                    layer = torch.compile(layer)

                def call(layer: Any = layer, x: Any = x, autocast: bool = mode == "bf16 autocast"):
                    with _bf16(device, autocast):
                        y = layer(x)
                    (y.float() * y.float()).sum().backward()

                steps[(mode, name)] = _repeated(call, calls, device)
        samples = interleaved(steps, rounds, warmup=2)
        for (mode, name), times in samples.items():
            ms = _median_ms(times, calls)
            rows.append(
                {
                    "shape": "x".join(map(str, shape)),
                    "mode": mode,
                    "layer": name,
                    "ms": ms,
                    "over_spectral": ms / _median_ms(samples[(mode, "spectral pooling")], calls),
                    "over_avg": ms / _median_ms(samples[(mode, "avg pooling 2x2")], calls),
                }
            )
    return rows


def network_times(
    device: str, quick: bool, rounds: int, calls: int, batch: int, modes: tuple[str, ...]
) -> list[dict[str, Any]]:
    import torch

    from diffstride.models.torch import resnet18

    size = 16 if quick else 32
    batch = 4 if quick else batch
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.standard_normal((batch, 3, size, size), dtype=np.float32))
    labels = torch.from_numpy(rng.integers(0, 10, batch))
    images, labels = images.to(device), labels.to(device)
    steps: dict[tuple[str, str], Callable[[], None]] = {}
    for mode in modes:
        for label, kwargs in NETWORKS:
            if mode == "compiled" and label not in COMPILED_NETWORKS:
                continue
            torch.manual_seed(0)
            model = resnet18((1, 1, 2, 2, 2), in_channels=3, num_classes=10, **kwargs)
            model = model.to(device).train()
            held = [p for n, p in model.named_parameters() if not n.endswith("strides")]
            optimizer = torch.optim.SGD(held, lr=1e-3, momentum=0.9)
            forward = torch.compile(model) if mode == "compiled" else model
            autocast = mode == "bf16 autocast"

            def train(
                forward: Any = forward, optimizer: Any = optimizer, autocast: bool = autocast
            ):
                with _bf16(device, autocast):
                    loss = torch.nn.functional.cross_entropy(forward(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            steps[(mode, label)] = _repeated(train, calls, device)
    samples = interleaved(steps, rounds, warmup=3)
    rows = []
    for (mode, label), times in samples.items():
        ms = _median_ms(times, calls)
        rows.append(
            {
                "mode": mode,
                "network": label,
                "batch": batch,
                "size": size,
                "step_ms": ms,
                "over_strided": ms / _median_ms(samples[(mode, "strided")], calls),
            }
        )
    return rows


def jax_times(quick: bool, rounds: int, calls: int) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    from diffstride import jax as dj

    shape = (2, 8, 16, 16) if quick else (32, 64, 32, 32)
    x_first = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    steps: dict[tuple[str, str], Callable[[], None]] = {}
    for layout in ("channels_first", "channels_last"):
        x = jnp.asarray(x_first if layout == "channels_first" else np.moveaxis(x_first, 1, 3))
        strides = jnp.asarray(STRIDES, dtype=jnp.float32)
        layer = dj.DiffStride(STRIDES, ramp="inside", data_format=layout)
        output_size = layer.output_size(shape[2:])

        def averaged(x: Any, layout: str = layout) -> Any:
            n, a, b, c = x.shape
            if layout == "channels_first":
                return x.reshape(n, a, b // 2, 2, c // 2, 2).mean(axis=(3, 5))
            return x.reshape(n, a // 2, 2, b // 2, 2, c).mean(axis=(2, 4))

        variants: dict[str, Callable[..., Any]] = {"avg pooling 2x2": lambda x, s, f=averaged: f(x)}
        for method in ("auto", "fft", "matmul"):
            variants[f"DiffStride {method} inside"] = (
                lambda x, s, method=method, layout=layout, output_size=output_size: dj.diffstride(
                    x, s, output_size=output_size, ramp="inside", method=method, data_format=layout
                )
            )
        for name, fn in variants.items():
            grad = jax.jit(jax.value_and_grad(lambda x, s, fn=fn: jnp.sum(fn(x, s) ** 2), (0, 1)))

            def call(grad: Any = grad, x: Any = x, strides: Any = strides) -> Any:
                return grad(x, strides)

            def step(call: Any = call) -> None:
                for _ in range(calls):
                    out = call()
                jax.block_until_ready(out)

            steps[(layout, name)] = step
    samples = interleaved(steps, rounds, warmup=2)
    return [
        {
            "layout": layout,
            "layer": name,
            "ms": _median_ms(times, calls),
            "over_avg": statistics.median(times)
            / statistics.median(samples[(layout, "avg pooling 2x2")]),
        }
        for (layout, name), times in samples.items()
    ]


# --------------------------------------------------------------------------------------------
# report


def _table(title: str, columns: str, rows: list[list[str]]) -> list[str]:
    """A markdown table under ``## title``; ``columns`` separated by ``|``."""
    names = [c.strip() for c in columns.split("|")]
    lines = [f"## {title}", "", f"| {' | '.join(names)} |", "|" + "---|" * len(names)]
    return [*lines, *(f"| {' | '.join(row)} |" for row in rows), ""]


def _events(entry: dict[str, int] | None) -> str:
    return f"{entry['kernels']} / {entry['copies']} / {entry['host_aten_ops']}" if entry else "-"


def _ratios(row: dict[str, Any], *keys: str) -> list[str]:
    return [f"{row[key]:.2f}x" for key in keys]


def _syncs(entry: dict[str, int]) -> str:
    return f"{entry['sync_debug_warnings']} / {entry['profiler_synchronize_calls']}"


def markdown(report: dict[str, Any]) -> str:
    out: list[str] = []
    for section, where, kind in (
        ("check", "Device", "precision"),
        ("jax_check", "jax on its default device, jit,", "layout"),
    ):
        if section in report:
            out += _table(
                f"{where} against float64 on the CPU (||a - b|| / ||b||)",
                f"path | ramp | {kind} | output | grad x | grad strides",
                [
                    [r["method"], r["ramp"], r[kind], *(f"{r[k]:.1e}" for k in CHECK_COLUMNS)]
                    for r in report[section]
                ],
            )
    if "syncs" in report:
        out += _table(
            "Host synchronisations per forward+backward (sync debug warnings / profiler)",
            "call | path | ramp | repeat call | after new strides",
            [
                [
                    r["call"],
                    r["method"],
                    r["ramp"],
                    *map(_syncs, (r["repeat"], r["after_new_strides"])),
                ]
                for r in report["syncs"]
            ],
        )
    if "launches" in report:
        out += _table(
            "Device work per forward+backward (kernels / memory copies / aten ops)",
            "layer | repeat call | after new strides",
            [
                [r["layer"], _events(r["repeat"]), _events(r.get("after_new_strides"))]
                for r in report["launches"]
            ],
        )
    layers = report.get("layer", []) + report.get("layer_compiled", [])
    if layers:
        out += _table(
            "One layer, forward+backward",
            "shape | mode | layer | ms | x spectral | x avg pool",
            [
                [
                    r["shape"],
                    r["mode"],
                    r["layer"],
                    f"{r['ms']:.3f}",
                    *_ratios(r, "over_spectral", "over_avg"),
                ]
                for r in layers
            ],
        )
    networks = report.get("network", []) + report.get("network_compiled", [])
    if networks:
        out += _table(
            "ResNet-18 training step (strides held)",
            "mode | network | batch | step ms | x strided",
            [
                [
                    r["mode"],
                    r["network"],
                    str(r["batch"]),
                    f"{r['step_ms']:.2f}",
                    *_ratios(r, "over_strided"),
                ]
                for r in networks
            ],
        )
    if "jax" in report:
        out += _table(
            "jax, one layer under jit, value and gradients",
            "layout | layer | ms | x avg pool",
            [
                [r["layout"], r["layer"], f"{r['ms']:.3f}", *_ratios(r, "over_avg")]
                for r in report["jax"]
            ],
        )
    for section, error in report.get("errors", {}).items():
        out.append(f"{section} failed: {error}")
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="a torch device (jax takes its default)")
    parser.add_argument("--sections", default="all", help=f"comma-separated among {SECTIONS}")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 15)")
    parser.add_argument("--calls", type=int, default=None, help="calls per sample (default 20)")
    parser.add_argument("--batch", type=int, default=128, help="ResNet-18 batch")
    parser.add_argument("--quick", action="store_true", help="smoke run: small inputs, 2 rounds")
    parser.add_argument("--json", type=Path, default=None, help="write every number, as it goes")
    args = parser.parse_args(argv)
    args.sections = SECTIONS if args.sections == "all" else tuple(args.sections.split(","))
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections must be among {SECTIONS}; received {sorted(unknown)}")
    args.rounds = args.rounds or (2 if args.quick else 15)
    args.calls = args.calls or (2 if args.quick else 20)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    frameworks = ["torch", "jax"] if {"jax", "jax_check"} & set(args.sections) else ["torch"]
    env = environment(frameworks)
    import torch

    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(args.device)
    print(f"# DiffStride on {env.get('gpu', args.device)}")
    print(header_block(env))
    runners: dict[str, Callable[[], Any]] = {
        "check": lambda: check(args.device, args.quick),
        "jax_check": lambda: jax_check(args.quick),
        "syncs": lambda: syncs(args.device, args.quick),
        "launches": lambda: launches(args.device, args.quick),
        "layer": lambda: layer_times(
            args.device, args.quick, args.rounds, args.calls, ("eager", "bf16 autocast")
        ),
        "layer_compiled": lambda: layer_times(
            args.device, args.quick, args.rounds, args.calls, ("compiled",)
        ),
        "network": lambda: network_times(
            args.device,
            args.quick,
            args.rounds,
            args.calls // 4 or 1,
            args.batch,
            ("eager", "bf16 autocast"),
        ),
        "network_compiled": lambda: network_times(
            args.device, args.quick, args.rounds, args.calls // 4 or 1, args.batch, ("compiled",)
        ),
        "jax": lambda: jax_times(args.quick, args.rounds, args.calls),
    }
    report: dict[str, Any] = {"environment": env, "errors": {}}
    for section in args.sections:
        start = time.perf_counter()
        try:
            report[section] = runners[section]()
        except Exception as error:  # a section that fails leaves the others their turn
            traceback.print_exc()
            report["errors"][section] = f"{type(error).__name__}: {error}"
        print(f"# {section}: {time.perf_counter() - start:.0f} s", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=1, default=str))
    print(markdown(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
