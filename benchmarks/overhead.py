"""The fixed cost of a DiffStride call, per framework: ops, host reads, time on a tiny input.

    python benchmarks/overhead.py [--frameworks torch,tf,jax] [--rounds 30] [--block 10]
        [--step-rounds 15] [--torch-threads N] [--quick] [--network] [--json PATH]

What a call costs whatever its input's size: the framework ops it issues, the values it reads
back to the host (each one a device synchronisation on an accelerator), and the time of a call
on an input too small for the arithmetic to matter. Counts are exact and repeatable; they are
what a change of the hot path should move, and the times say whether it did. On both
computation paths (``method="fft"`` and ``"matmul"``) and both ramps, strides (2, 2), float32:

* **ops per call**, forward and forward+backward, on 2x4x32x32 and 1x1x8x8 (channels_first):
  torch, the aten ops dispatched by an eager call of ``diffstride.torch.diffstride`` (a
  ``TorchDispatchMode``) and by ``torch.autograd.grad`` of its output (input and strides
  requiring grad; the call counted is the second one); TensorFlow, the nodes of the
  ``tf.function`` graph of the call and of a ``GradientTape`` step (strides a ``tf.Variable``,
  no ``output_size``: the crop is decided in the graph, as Keras ``fit`` runs the layer); jax,
  the equations of ``jax.make_jaxpr`` of the call (a static ``output_size``, as under ``jit``)
  and of its VJP (forward and backward), calls such as ``jit`` and ``custom_vjp`` replaced by
  the equations of their bodies. The five most frequent ops of forward+backward are listed.
* **host reads** of a repeat eager call with unchanged strides: ``library``, the values the
  library asks its adapter for (calls of the backend's ``concrete`` that return an array);
  ``framework``, what the framework shows at Python level: torch, conversions of a tensor to
  Python or numpy (``item``, ``tolist``, ``numpy``, ``__array__``, ``__float__``, ``__bool__``
  ... seen by a ``TorchFunctionMode``) plus ``aten._local_scalar_dense`` dispatched outside
  them; TensorFlow, ``EagerTensor._numpy`` calls; jax, none measurable (see ``JAX_READS``).
* **call time** on 1x1x8x8, against two bare FFT calls of the same framework and mode (the
  input's ``rfftn`` then ``irfftn``), and the top-level ``diffstride.diffstride`` (dispatch on
  the input's type) against the framework's own function (``diffstride.torch.diffstride``...):
  torch eager, TensorFlow eager and ``tf.function``, jax eager and ``jit`` (with
  ``output_size``). The calls of one framework are interleaved (``_harness.interleaved``:
  ``--rounds`` rounds of ``--block`` calls, medians).
* **fwd+bwd against fixed spectral pooling** (torch eager, 32x64x32x32): DiffStride's step
  (loss ``sum(y * y)``, gradients of the input and the strides) over ``spectral_pooling``'s
  on the same path, interleaved.
* with ``--network``, one ResNet-18 training step at 32x32 (``network.py``'s networks, batch
  32) of DiffStride (``ramp="inside"``, ``pool_first=True``) over the strided network's.

``--json PATH`` writes every number; ``--quick`` is a smoke run (few rounds, a small step).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

# Before diffstride and any framework: puts an uninstalled checkout on the path, quiets TF.
from _harness import environment, header, interleaved

import diffstride

FRAMEWORKS = ("torch", "tf", "jax")
#: The adapters' registered names.
BACKENDS = {"torch": "torch", "tf": "tensorflow", "jax": "jax"}
SHAPES = ((2, 4, 32, 32), (1, 1, 8, 8))
TINY = SHAPES[1]
METHODS = ("fft", "matmul")
RAMPS = ("outside", "inside")
STRIDES = (2.0, 2.0)
STEP_SHAPE = (32, 64, 32, 32)
STEP_SHAPE_QUICK = (2, 8, 16, 16)
UNITS = {"torch": "aten ops", "tf": "graph nodes", "jax": "jaxpr equations"}
TORCH_CONVERSIONS = frozenset(
    {"item", "tolist", "numpy", "__array__", "__float__", "__int__", "__bool__", "__index__"}
)
JAX_READS = (
    "n/a: numpy reads a jax.Array through its buffer in C++ (np.asarray calls no Python "
    "method of it), so no Python hook counts the copies"
)
TF_READS = (
    "EagerTensor._numpy calls; np.asarray reads a tensor through the buffer protocol, which "
    "no Python hook sees (the library's own read shows in the library column)"
)
TORCH_READS = "Tensor item/tolist/numpy/__array__/__float__/__bool__... + stray _local_scalar_dense"
READS_NOTES = {"torch": TORCH_READS, "tf": TF_READS, "jax": JAX_READS}


@dataclass
class OpCount:
    """Ops of one call, forward and forward+backward, and the host reads of a repeat call."""

    framework: str
    unit: str
    shape: tuple[int, ...]
    method: str
    ramp: str
    fwd: int
    fwdbwd: int
    top: list[tuple[str, int]]
    ops: dict[str, int]
    reads_library: int
    reads_framework: int | None
    reads_note: str


def _op_count(
    framework: str,
    shape: tuple[int, ...],
    method: str,
    ramp: str,
    fwd: collections.Counter[str],
    total: collections.Counter[str],
    reads_library: int,
    reads_framework: int | None,
) -> OpCount:
    """The row of one framework's counts: totals, top ops, unit and reads note derived."""
    return OpCount(
        framework,
        UNITS[framework],
        shape,
        method,
        ramp,
        fwd=fwd.total(),
        fwdbwd=total.total(),
        top=_top(total),
        ops=dict(total),
        reads_library=reads_library,
        reads_framework=reads_framework,
        reads_note=READS_NOTES[framework],
    )


@dataclass
class Timing:
    """Median seconds per call of one timed callable, and its samples (one per round)."""

    median_s: float
    samples_s: list[float] = field(default_factory=list)


def _input(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


def _output_size(shape: tuple[int, ...], ramp: str) -> tuple[int, ...]:
    return diffstride.output_size(shape[2:], STRIDES, ramp=ramp)


@contextlib.contextmanager
def library_reads(framework: str) -> Iterator[list[int]]:
    """Counts the adapter's ``concrete`` calls that return values (the library's host reads)."""
    cls = type(diffstride.get_backend(BACKENDS[framework]))
    original = cls.concrete
    count = [0]

    def concrete(self: Any, x: Any) -> Any:
        value = original(self, x)
        count[0] += value is not None  # None: a symbolic value, nothing read
        return value

    with mock.patch.object(cls, "concrete", concrete):
        yield count


def _top(counts: collections.Counter[str]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:5]


# --------------------------------------------------------------------------------------------
# torch


@dataclass
class TorchTally:
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    reads: int = 0


@contextlib.contextmanager
def torch_tally() -> Iterator[TorchTally]:
    """Counts the aten ops dispatched (by name) and the host reads in the block."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    tally = TorchTally()
    converting = [False]

    class Reads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") not in TORCH_CONVERSIONS:
                return func(*args, **(kwargs or {}))
            tally.reads += 1
            converting[0] = True  # its own _local_scalar_dense is not a second read
            try:
                return func(*args, **(kwargs or {}))
            finally:
                converting[0] = False

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            tally.ops[str(func.overloadpacket)] += 1
            if func is torch.ops.aten._local_scalar_dense.default and not converting[0]:
                tally.reads += 1  # a sync inside an op, not a Python conversion
            return func(*args, **(kwargs or {}))

    with Reads(), Ops():
        yield tally


def torch_op_counts(shape: tuple[int, ...], method: str, ramp: str) -> OpCount:
    """Aten ops of the second eager call and of its backward; host reads of that call."""
    import torch

    from diffstride import torch as dt

    x = torch.from_numpy(_input(shape)).requires_grad_(True)
    strides = torch.tensor(STRIDES, requires_grad=True)

    def call() -> Any:
        return dt.diffstride(x, strides, method=method, ramp=ramp)

    cotangent = torch.ones_like(call())  # the first call: caches, lazy imports
    with library_reads("torch") as lib, torch_tally() as fwd:
        y = call()
    with torch_tally() as bwd:
        torch.autograd.grad(y, [x, strides], cotangent)
    total = fwd.ops + bwd.ops
    return _op_count("torch", shape, method, ramp, fwd.ops, total, lib[0], fwd.reads)


def torch_calls(method: str, ramp: str) -> dict[tuple[str, ...], Callable[[], Any]]:
    import torch

    from diffstride import torch as dt

    x = torch.from_numpy(_input(TINY)).requires_grad_(True)
    strides = torch.tensor(STRIDES, requires_grad=True)
    return {
        ("eager", "call"): lambda: dt.diffstride(x, strides, method=method, ramp=ramp),
        ("eager", "top-level"): lambda: diffstride.diffstride(x, strides, method=method, ramp=ramp),
    }


def torch_fft_pairs() -> dict[str, Callable[[], Any]]:
    import torch

    x = torch.from_numpy(_input(TINY)).requires_grad_(True)
    size = x.shape[-2:]
    return {
        "eager": lambda: torch.fft.irfftn(torch.fft.rfftn(x, dim=(-2, -1)), s=size, dim=(-2, -1))
    }


# --------------------------------------------------------------------------------------------
# tensorflow


def _graph_counts(graph: Any) -> collections.Counter[str]:
    """Node types of a graph and of the functions in its library."""
    graph_def = graph.as_graph_def()
    counts = collections.Counter(node.op for node in graph_def.node)
    for function in graph_def.library.function:
        counts.update(node.op for node in function.node_def)
    return counts


@contextlib.contextmanager
def tf_numpy_reads() -> Iterator[list[int] | None]:
    """Counts ``EagerTensor._numpy`` calls (``.numpy()``, ``float()``, ``bool()``); yields
    None if this TensorFlow has no such method to count."""
    try:
        from tensorflow.python.framework.ops import _EagerTensorBase
    except ImportError:
        yield None
        return
    original = getattr(_EagerTensorBase, "_numpy", None)
    if original is None:
        yield None
        return
    count = [0]

    def counted(self: Any) -> Any:
        count[0] += 1
        return original(self)

    with mock.patch.object(_EagerTensorBase, "_numpy", counted):
        yield count


def tf_op_counts(shape: tuple[int, ...], method: str, ramp: str) -> OpCount:
    """Nodes of the ``tf.function`` graphs of the call and of a tape step; host reads of the
    second eager call."""
    import tensorflow as tf

    from diffstride import tf as dtf

    x = tf.constant(_input(shape))
    strides = tf.Variable(STRIDES, dtype=tf.float32)

    def call(a: Any) -> Any:
        return dtf.diffstride(a, strides, method=method, ramp=ramp)

    def step(a: Any, cotangent: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = call(a)
        return tape.gradient(y, [a, strides], output_gradients=cotangent)

    y = call(x)  # the first eager call
    spec = tf.TensorSpec(x.shape, tf.float32)
    fwd = _graph_counts(tf.function(call).get_concrete_function(spec).graph)
    out_spec = tf.TensorSpec(y.shape, tf.float32)
    total = _graph_counts(tf.function(step).get_concrete_function(spec, out_spec).graph)
    with library_reads("tf") as lib, tf_numpy_reads() as numpy_reads:
        call(x)
    framework_reads = None if numpy_reads is None else numpy_reads[0]
    return _op_count("tf", shape, method, ramp, fwd, total, lib[0], framework_reads)


def tf_calls(method: str, ramp: str) -> dict[tuple[str, ...], Callable[[], Any]]:
    import tensorflow as tf

    from diffstride import tf as dtf

    # TF runs eager ops and functions synchronously on the CPU, so a call returns when its
    # work is done; a .numpy() would add a host read to every call.
    x = tf.constant(_input(TINY))
    strides = tf.Variable(STRIDES, dtype=tf.float32)
    graph = tf.function(lambda a: dtf.diffstride(a, strides, method=method, ramp=ramp))
    return {
        ("eager", "call"): lambda: dtf.diffstride(x, strides, method=method, ramp=ramp),
        ("eager", "top-level"): lambda: diffstride.diffstride(x, strides, method=method, ramp=ramp),
        ("function", "call"): lambda: graph(x),
    }


def tf_fft_pairs() -> dict[str, Callable[[], Any]]:
    import tensorflow as tf

    x = tf.constant(_input(TINY))
    length = tf.constant(TINY[2:])

    def pair(a: Any) -> Any:
        return tf.signal.irfft2d(tf.signal.rfft2d(a), fft_length=length)

    graph = tf.function(pair)
    return {"eager": lambda: pair(x), "function": lambda: graph(x)}


# --------------------------------------------------------------------------------------------
# jax


def jaxpr_counts(
    jaxpr: Any, counts: collections.Counter[str] | None = None
) -> collections.Counter[str]:
    """Equations by primitive; an equation holding jaxprs (``jit``, ``custom_vjp_call``,
    ``cond``...) counts as the equations of those jaxprs."""
    from jax.extend.core import jaxprs_in_params

    counts = collections.Counter() if counts is None else counts
    for eqn in jaxpr.eqns:
        inner = list(jaxprs_in_params(eqn.params))
        if not inner:
            counts[eqn.primitive.name] += 1
        for sub in inner:
            jaxpr_counts(sub, counts)
    return counts


def jax_op_counts(shape: tuple[int, ...], method: str, ramp: str) -> OpCount:
    """Equations of the call's jaxpr and of its VJP's (static ``output_size``); host reads of
    the second eager call (no ``output_size``: the strides are read)."""
    import jax
    import jax.numpy as jnp

    from diffstride import jax as dj

    x = jnp.asarray(_input(shape))
    strides = jnp.asarray(STRIDES, dtype=jnp.float32)
    size = _output_size(shape, ramp)

    def call(a: Any, b: Any) -> Any:
        return dj.diffstride(a, b, output_size=size, method=method, ramp=ramp)

    def forward_backward(a: Any, b: Any, cotangent: Any) -> Any:
        _, vjp = jax.vjp(call, a, b)
        return vjp(cotangent)

    fwd = jaxpr_counts(jax.make_jaxpr(call)(x, strides).jaxpr)
    cotangent = jnp.ones(x.shape[:2] + size, dtype=jnp.float32)
    total = jaxpr_counts(jax.make_jaxpr(forward_backward)(x, strides, cotangent).jaxpr)
    dj.diffstride(x, strides, method=method, ramp=ramp)
    with library_reads("jax") as lib:
        jax.block_until_ready(dj.diffstride(x, strides, method=method, ramp=ramp))
    return _op_count("jax", shape, method, ramp, fwd, total, lib[0], None)


def jax_calls(method: str, ramp: str) -> dict[tuple[str, ...], Callable[[], Any]]:
    import jax
    import jax.numpy as jnp

    from diffstride import jax as dj

    x = jnp.asarray(_input(TINY))
    strides = jnp.asarray(STRIDES, dtype=jnp.float32)
    size = _output_size(TINY, ramp)
    jitted = jax.jit(lambda a, b: dj.diffstride(a, b, output_size=size, method=method, ramp=ramp))
    ready = jax.block_until_ready
    return {
        ("eager", "call"): lambda: ready(dj.diffstride(x, strides, method=method, ramp=ramp)),
        ("eager", "top-level"): lambda: ready(
            diffstride.diffstride(x, strides, method=method, ramp=ramp)
        ),
        ("jit", "call"): lambda: ready(jitted(x, strides)),
    }


def jax_fft_pairs() -> dict[str, Callable[[], Any]]:
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(_input(TINY))

    def pair(a: Any) -> Any:
        return jnp.fft.irfftn(jnp.fft.rfftn(a, axes=(-2, -1)), s=TINY[2:], axes=(-2, -1))

    jitted = jax.jit(pair)
    return {
        "eager": lambda: jax.block_until_ready(pair(x)),
        "jit": lambda: jax.block_until_ready(jitted(x)),
    }


OP_COUNTERS = {"torch": torch_op_counts, "tf": tf_op_counts, "jax": jax_op_counts}
CALLS = {"torch": torch_calls, "tf": tf_calls, "jax": jax_calls}
FFT_PAIRS = {"torch": torch_fft_pairs, "tf": tf_fft_pairs, "jax": jax_fft_pairs}


# --------------------------------------------------------------------------------------------
# timings


def _timings(samples: dict[Any, list[float]]) -> dict[Any, Timing]:
    return {key: Timing(statistics.median(values), values) for key, values in samples.items()}


def _us(timing: Timing | None) -> float | None:
    return None if timing is None else timing.median_s * 1e6


def _ratio(num: Timing | None, den: Timing) -> float | None:
    return None if num is None else num.median_s / den.median_s


def call_times(framework: str, rounds: int, block: int) -> list[dict[str, Any]]:
    """The tiny input's call, the top-level call and the FFT pair, interleaved."""
    steps: dict[tuple[str, ...], Callable[[], Any]] = {
        (mode, "fft pair"): fn for mode, fn in FFT_PAIRS[framework]().items()
    }
    for method in METHODS:
        for ramp in RAMPS:
            for (mode, kind), fn in CALLS[framework](method, ramp).items():
                steps[(mode, kind, method, ramp)] = fn
    times = _timings(interleaved(steps, rounds, block=block, warmup=2))
    rows = []
    for mode in dict.fromkeys(key[0] for key in steps):  # the modes in their order
        pair = times[(mode, "fft pair")]
        for method in METHODS:
            for ramp in RAMPS:
                call = times[(mode, "call", method, ramp)]
                top = times.get((mode, "top-level", method, ramp))
                rows.append(
                    {
                        "framework": framework,
                        "mode": mode,
                        "method": method,
                        "ramp": ramp,
                        "call_us": _us(call),
                        "fft_pair_us": _us(pair),
                        "over_fft_pair": _ratio(call, pair),
                        "top_level_us": _us(top),
                        "top_level_over_call": _ratio(top, call),
                        "samples_s": {
                            "call": call.samples_s,
                            "fft pair": pair.samples_s,
                            "top-level": None if top is None else top.samples_s,
                        },
                    }
                )
    return rows


def step_vs_spectral(shape: tuple[int, ...], rounds: int) -> list[dict[str, Any]]:
    """torch eager fwd+bwd of DiffStride over fixed spectral pooling's, per path and ramp."""
    import torch

    from diffstride import torch as dt

    x = torch.from_numpy(_input(shape)).clone().requires_grad_(True)
    strides = torch.tensor(STRIDES, requires_grad=True)

    def diffstride_step(method: str, ramp: str) -> Callable[[], Any]:
        def step() -> Any:
            y = dt.diffstride(x, strides, method=method, ramp=ramp)
            return torch.autograd.grad((y * y).sum(), [x, strides])

        return step

    def spectral_step(method: str) -> Callable[[], Any]:
        def step() -> Any:
            y = dt.spectral_pooling(x, (2, 2), method=method)
            return torch.autograd.grad((y * y).sum(), [x])

        return step

    steps: dict[tuple[str, ...], Callable[[], Any]] = {}
    for method in METHODS:
        steps[("spectral", method)] = spectral_step(method)
        for ramp in RAMPS:
            steps[("diffstride", method, ramp)] = diffstride_step(method, ramp)
    times = _timings(interleaved(steps, rounds, warmup=2))
    return [
        {
            "shape": shape,
            "method": method,
            "ramp": ramp,
            "diffstride_ms": times[("diffstride", method, ramp)].median_s * 1e3,
            "spectral_ms": times[("spectral", method)].median_s * 1e3,
            "ratio": times[("diffstride", method, ramp)].median_s
            / times[("spectral", method)].median_s,
        }
        for method in METHODS
        for ramp in RAMPS
    ]


def network_steps(frameworks: list[str], rounds: int) -> list[dict[str, Any]]:
    """ResNet-18 at 32x32, batch 32: DiffStride (inside, pool first) over strided convolutions,
    built and stepped by ``network.py``, at equal MACs: the strides' gradients are computed,
    not applied (``hold_strides``)."""
    import network

    names = (network.NETWORKS[0][0], "DiffStride inside, pool first")
    networks = {
        fw: network.BUILDERS[fw](32, 32, names, hold_strides=True)
        for fw in frameworks
        if fw in network.BUILDERS
    }
    times = _timings(interleaved(network.steps_of(networks), rounds))
    return [
        {
            "framework": fw,
            "network": label,
            "step_ms": times[(fw, label)].median_s * 1e3,
            "over_strided": times[(fw, label)].median_s / times[(fw, names[0])].median_s,
        }
        for fw in networks
        for label in names
    ]


# --------------------------------------------------------------------------------------------
# report


def _cell(value: Any, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "## Ops per call",
        "",
        "| framework | counted | shape | method | ramp | fwd | fwd+bwd | top 5, fwd+bwd "
        "| host reads, library | host reads, framework |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["op_counts"]:
        top = ", ".join(f"{name} {n}" for name, n in c["top"])
        shape = "x".join(map(str, c["shape"]))
        lines.append(
            f"| {c['framework']} | {c['unit']} | {shape} | {c['method']} | {c['ramp']} "
            f"| {c['fwd']} | {c['fwdbwd']} | {top} | {c['reads_library']} "
            f"| {_cell(c['reads_framework'])} |"
        )
    lines.append("")
    lines.append("Host reads, framework: " + "; ".join(report["reads_notes"]))
    lines += [
        "",
        f"## Call time, {'x'.join(map(str, TINY))}",
        "",
        "| framework | mode | method | ramp | call us | FFT pair us | x FFT pair "
        "| top-level us | top-level / call |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in report["call_times"]:
        lines.append(
            f"| {t['framework']} | {t['mode']} | {t['method']} | {t['ramp']} "
            f"| {t['call_us']:.0f} | {t['fft_pair_us']:.0f} | {t['over_fft_pair']:.1f}x "
            f"| {_cell(t['top_level_us'], '.0f')} | {_cell(t['top_level_over_call'], '.2f')} |"
        )
    if report["step_vs_spectral"]:
        shape = "x".join(map(str, report["step_vs_spectral"][0]["shape"]))
        lines += [
            "",
            f"## torch eager fwd+bwd, {shape}: DiffStride over fixed spectral pooling",
            "",
            "| method | ramp | DiffStride ms | spectral pooling ms | ratio |",
            "|---|---|---|---|---|",
        ]
        for r in report["step_vs_spectral"]:
            lines.append(
                f"| {r['method']} | {r['ramp']} | {r['diffstride_ms']:.2f} "
                f"| {r['spectral_ms']:.2f} | {r['ratio']:.2f}x |"
            )
    if report["network"]:
        lines += [
            "",
            "## ResNet-18 training step, batch 32, 32x32",
            "",
            "| framework | network | step ms | x strided |",
            "|---|---|---|---|",
        ]
        for r in report["network"]:
            lines.append(
                f"| {r['framework']} | {r['network']} | {r['step_ms']:.0f} "
                f"| {r['over_strided']:.2f}x |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 30)")
    parser.add_argument("--block", type=int, default=None, help="calls per turn (default 10)")
    parser.add_argument("--step-rounds", type=int, default=None, help="fwd+bwd rounds (15)")
    parser.add_argument("--network", action="store_true", help="time ResNet-18 steps too")
    parser.add_argument("--network-rounds", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds, no network")
    parser.add_argument("--json", type=Path, default=None, help="write every number as JSON")
    args = parser.parse_args(argv)
    args.frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = set(args.frameworks) - set(FRAMEWORKS)
    if unknown:
        parser.error(f"--frameworks must be among {list(FRAMEWORKS)}; received {sorted(unknown)}")
    args.rounds = args.rounds or (2 if args.quick else 30)
    args.block = args.block or (2 if args.quick else 10)
    args.step_rounds = args.step_rounds or (2 if args.quick else 15)
    args.network = args.network and not args.quick
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.torch_threads and "torch" in args.frameworks:
        import torch

        torch.set_num_threads(args.torch_threads)
    env = environment(args.frameworks)
    print(header(env))
    report: dict[str, Any] = {"op_counts": [], "reads_notes": [], "call_times": []}
    for fw in args.frameworks:
        report["reads_notes"].append(f"{fw}, {READS_NOTES[fw]}")
        for shape in SHAPES:
            for method in METHODS:
                for ramp in RAMPS:
                    report["op_counts"].append(asdict(OP_COUNTERS[fw](shape, method, ramp)))
        report["call_times"] += call_times(fw, args.rounds, args.block)
    step_shape = STEP_SHAPE_QUICK if args.quick else STEP_SHAPE
    with_torch = "torch" in args.frameworks
    report["step_vs_spectral"] = (
        step_vs_spectral(step_shape, args.step_rounds) if with_torch else []
    )
    report["network"] = network_steps(args.frameworks, args.network_rounds) if args.network else []
    print(markdown(report))
    elapsed = time.perf_counter() - started
    print(
        f"# rounds={args.rounds} block={args.block} step_rounds={args.step_rounds}; {elapsed:.0f} s"
    )
    if args.json is not None:
        payload = {"environment": env, "args": vars(args) | {"json": str(args.json)}, **report}
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
