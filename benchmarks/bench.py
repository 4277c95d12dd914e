"""CPU benchmark of DiffStride against fixed spectral pooling and 2x2 average pooling.

For each framework and execution mode (torch eager, ``torch.compile``, tf eager,
``tf.function``, jax ``jit``) and each input shape / data format, three ops are timed:

* ``DiffStride``: ``diffstride(x, strides)`` with ``strides`` a learnable framework array;
* ``Spectral``: ``spectral_pooling(x, (2, 2))`` (FixedSpectralPooling);
* ``AvgPool``: the framework's own 2x2 average pooling with stride 2.

Two timings per op: ``fwd`` (forward only, no autodiff recording) and ``fwd+bwd`` (forward,
loss ``sum(y * y)``, gradients w.r.t. ``x`` and, for DiffStride, the strides).

Method. After warm-up calls (which also absorb tracing and compilation), the calls of all
ops of one mode are interleaved round-robin (A, B, C, A, B, C, ...) for ``--repeats`` rounds
and the median per op is reported. Interleaving exposes every op to the same slow drifts
(frequency scaling, other processes, thermal state), so the ratios DiffStride / AvgPool and
Spectral / AvgPool, taken in the same process and the same rounds, are much more stable than
the absolute times; the median discards the occasional preemption that a mean would absorb.
Each call is synchronised before the clock stops (jax ``block_until_ready``, tf ``.numpy()``;
torch CPU ops are synchronous). The garbage collector is paused while timing.

Inputs and ops come from the library's public entry points: one numpy input per case (seed 0)
handed to every framework by its adapter's ``from_numpy``
(``diffstride.get_backend(name).from_numpy``), so every framework times the same values, and
the ops of ``diffstride.torch``, ``diffstride.tf`` and ``diffstride.jax``. What stays written
per framework here is what the adapters' hooks would change if they were timed: their ``vjp``
clones its inputs, takes a cotangent and returns numpy arrays, outside ``torch.compile``,
``tf.function`` and ``jax.jit``, whereas fwd+bwd compiles the whole step in the compiled modes;
their ``concrete`` is not the synchronisation, because for jax it dispatches a
``stop_gradient`` and copies to the host, and for tf it reads the output without the copy that
``.numpy()`` makes, so the tables would no longer compare with earlier ones.

Peak memory of fwd+bwd is what one step allocates on top of its live inputs, read from
what each framework exposes (see docs/benchmarks.md): torch, the running sum of the profiler's CPU
allocator events; tensorflow, ``get_memory_info("CPU:0")`` peak minus the live bytes before
the step; jax, XLA's compile-time ``memory_analysis`` (outputs + temporaries). A probe that
does not work prints ``n/a``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Before diffstride and any framework: puts an uninstalled checkout on the path, quiets TF.
from _harness import environment, header_block, interleaved

import diffstride

SHAPES_ALL: list[tuple[int, int, int, int]] = [
    (32, 64, 32, 32),
    (16, 128, 16, 16),
    (8, 64, 64, 64),
    (8, 16, 128, 128),
]
SHAPES_SMALL = SHAPES_ALL[:2]
#: The shapes the speed targets are stated for (issue: "Fast").
SHAPES_TARGETS = [SHAPES_ALL[0], SHAPES_ALL[2]]
SHAPE_QUICK = (16, 128, 16, 16)
FORMATS = ("channels_first", "channels_last")
#: Each spectral op once per computation path (``method=``), then the baseline.
METHODS = ("fft", "matmul")
OPS = (*(f"{op}/{m}" for op in ("DiffStride", "Spectral") for m in METHODS), "AvgPool")
#: TensorFlow only: the Keras layer without ``output_size``, as ``fit`` runs it.
LAYER_OP = "DiffStride/layer"
KINDS = ("fwd", "fwd+bwd")
STRIDES = (2.0, 2.0)
MODES = {
    "torch": ("eager", "compile"),
    "tf": ("eager", "function"),
    "jax": ("jit",),
}

Thunk = Callable[[], Any]


@dataclass
class OpBench:
    """The callables for one op: forward, forward+backward, and a peak-memory probe."""

    fwd: Thunk
    fwdbwd: Thunk
    memory: Callable[[], int | None]


@dataclass
class Record:
    """One row of the result table (times in milliseconds, memory in bytes)."""

    framework: str
    mode: str
    shape: tuple[int, ...]
    data_format: str
    op: str
    fwd_ms: float | None = None
    fwdbwd_ms: float | None = None
    fwd_ratio: float | None = None
    fwdbwd_ratio: float | None = None
    peak_bytes: int | None = None
    memory_method: str = "n/a"
    first_call_s: dict[str, float] = field(default_factory=dict)
    spread_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def layout(shape_nchw: tuple[int, int, int, int], data_format: str) -> tuple[int, ...]:
    """The input shape for ``data_format`` (channels_last transposes NCHW to NHWC)."""
    n, c, h, w = shape_nchw
    return (n, c, h, w) if data_format == "channels_first" else (n, h, w, c)


def case_input(shape_nchw: tuple[int, int, int, int], fmt: str) -> np.ndarray:
    """The input of one case: standard normal float32 in ``fmt``'s layout, the same values
    for every framework (each adapter's ``from_numpy`` converts it)."""
    return np.random.default_rng(0).standard_normal(layout(shape_nchw, fmt), dtype=np.float32)


def error_text(exc: BaseException) -> str:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line[:200]}"


# --------------------------------------------------------------------------------------------
# torch


def torch_ops(mode: str, shape_nchw: tuple[int, int, int, int], fmt: str) -> dict[str, OpBench]:
    import torch

    from diffstride import torch as dt

    if mode == "compile":
        torch._dynamo.reset()  # fresh caches: no recompile limit across cases
    backend = diffstride.get_backend("torch")
    # Cloned into torch's own 64-byte-aligned memory (numpy's may be 16-byte aligned), as a
    # tensor made by torch itself would be.
    x = backend.from_numpy(case_input(shape_nchw, fmt)).clone().requires_grad_(True)
    s = backend.from_numpy(np.asarray(STRIDES, np.float32)).requires_grad_(True)
    # Eager reads the strides for the crop, as a layer in training does; compiled, a static
    # output_size (as for jax) makes the whole op one graph.
    size = diffstride.output_size(tuple(shape_nchw[2:]), STRIDES) if mode == "compile" else None
    fns: dict[str, tuple[Callable[..., Any], list[Any]]] = {}
    for m in METHODS:
        fns[f"DiffStride/{m}"] = (
            lambda a, b, m=m: dt.diffstride(a, b, data_format=fmt, output_size=size, method=m),
            [x, s],
        )
        fns[f"Spectral/{m}"] = (
            lambda a, b, m=m: dt.spectral_pooling(a, (2, 2), data_format=fmt, method=m),
            [x],
        )
    fns["AvgPool"] = (lambda a, b: torch_avgpool(a, fmt), [x])
    return {op: torch_bench(fn, x, s, wrt, mode) for op, (fn, wrt) in fns.items()}


def torch_avgpool(x: Any, fmt: str) -> Any:
    import torch.nn.functional as F

    if fmt == "channels_first":
        return F.avg_pool2d(x, 2, 2)
    # NHWC viewed as NCHW with channels_last strides: no copy, the NHWC kernel runs.
    return F.avg_pool2d(x.permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)


def torch_bench(fn: Callable[..., Any], x: Any, s: Any, wrt: list[Any], mode: str) -> OpBench:
    import torch

    def loss(a: Any, b: Any) -> Any:
        y = fn(a, b)
        return (y * y).sum()

    fwd_fn, loss_fn = (torch.compile(fn), torch.compile(loss)) if mode == "compile" else (fn, loss)

    def fwd() -> Any:
        with torch.no_grad():
            return fwd_fn(x, s)

    def fwdbwd() -> Any:
        return torch.autograd.grad(loss_fn(x, s), wrt)

    return OpBench(fwd, fwdbwd, lambda: torch_peak_bytes(fwdbwd))


def torch_peak_bytes(step: Thunk) -> int | None:
    """Peak of live CPU-allocator bytes during ``step``, from the profiler's memory events.

    Counts what ``step`` allocates (outputs, saved activations, workspaces, gradients), not
    the inputs that existed before it.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    if not events:
        return None
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def torch_graph_breaks() -> int:
    from torch._dynamo.utils import counters

    return int(sum(counters["graph_break"].values()))


# --------------------------------------------------------------------------------------------
# tensorflow


def tf_ops(mode: str, shape_nchw: tuple[int, int, int, int], fmt: str) -> dict[str, OpBench]:
    import keras
    import tensorflow as tf

    from diffstride import tf as dtf

    x = diffstride.get_backend("tensorflow").from_numpy(case_input(shape_nchw, fmt))
    s = tf.Variable(STRIDES, dtype=tf.float32)
    pool = keras.layers.AveragePooling2D(pool_size=2, strides=2, data_format=fmt)
    # A static output_size, as for jax (else, under tf.function, the crop is computed in the
    # graph: the layer op below measures that case).
    size = diffstride.output_size(tuple(shape_nchw[2:]), STRIDES)
    fns: dict[str, tuple[Callable[[Any], Any], Any]] = {}
    for m in METHODS:
        fns[f"DiffStride/{m}"] = (
            lambda a, m=m: dtf.diffstride(a, s, data_format=fmt, output_size=size, method=m),
            s,
        )
        fns[f"Spectral/{m}"] = (
            lambda a, m=m: dtf.spectral_pooling(a, (2, 2), data_format=fmt, method=m),
            None,
        )
    # What Keras fit runs: the layer without output_size, so under tf.function its crop is
    # symbolic (the GEMM path then builds its DFT factors in the graph).
    layer = dtf.DiffStride(strides=STRIDES, data_format=fmt)
    layer(x)
    fns[LAYER_OP] = (lambda a: layer(a, training=True), layer.trainable_variables[0])
    fns["AvgPool"] = (pool, None)
    return {op: tf_bench(fn, x, variable, mode) for op, (fn, variable) in fns.items()}


def tf_bench(fn: Callable[[Any], Any], x: Any, s: Any, mode: str) -> OpBench:
    import tensorflow as tf

    def fwdbwd_raw(a: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = fn(a)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [a] if s is None else [a, s])

    fwd_fn, fb_fn = fn, fwdbwd_raw
    if mode == "function":
        fwd_fn, fb_fn = tf.function(fn), tf.function(fwdbwd_raw)

    def fwd() -> Any:
        return fwd_fn(x).numpy()

    def fwdbwd() -> Any:
        return [g.numpy() for g in fb_fn(x)]

    return OpBench(fwd, fwdbwd, lambda: tf_peak_bytes(fwdbwd))


def tf_peak_bytes(step: Thunk) -> int | None:
    """Peak minus live bytes of TF's CPU allocator around ``step`` (None if unsupported)."""
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
        before = int(tf.config.experimental.get_memory_info("CPU:0")["current"])
        step()
        peak = int(tf.config.experimental.get_memory_info("CPU:0")["peak"])
    except (ValueError, RuntimeError, tf.errors.OpError):
        return None
    return peak - before if peak > 0 else None


# --------------------------------------------------------------------------------------------
# jax


def jax_ops(mode: str, shape_nchw: tuple[int, int, int, int], fmt: str) -> dict[str, OpBench]:
    from diffstride import jax as dj

    del mode  # jit only
    backend = diffstride.get_backend("jax")
    x = backend.from_numpy(case_input(shape_nchw, fmt))
    s = backend.from_numpy(np.asarray(STRIDES, np.float32))
    size = diffstride.output_size(tuple(shape_nchw[2:]), STRIDES)
    fns: dict[str, tuple[Callable[[Any, Any], Any], Any]] = {}
    for m in METHODS:
        fns[f"DiffStride/{m}"] = (
            lambda a, b, m=m: dj.diffstride(a, b, data_format=fmt, output_size=size, method=m),
            (0, 1),
        )
        fns[f"Spectral/{m}"] = (
            lambda a, b, m=m: dj.spectral_pooling(a, (2, 2), data_format=fmt, method=m),
            0,
        )
    fns["AvgPool"] = (lambda a, b: jax_avgpool(a, fmt), 0)
    return {op: jax_bench(fn, x, s, argnums) for op, (fn, argnums) in fns.items()}


def jax_avgpool(x: Any, fmt: str) -> Any:
    from jax import lax

    window = (1, 1, 2, 2) if fmt == "channels_first" else (1, 2, 2, 1)
    return lax.reduce_window(x, 0.0, lax.add, window, window, "VALID") / 4


def jax_bench(fn: Callable[[Any, Any], Any], x: Any, s: Any, argnums: Any) -> OpBench:
    import jax

    def loss(a: Any, b: Any) -> Any:
        y = fn(a, b)
        return jax.numpy.sum(y * y)

    fwd_fn = jax.jit(fn)
    fb_fn = jax.jit(jax.value_and_grad(loss, argnums=argnums))
    return OpBench(
        lambda: jax.block_until_ready(fwd_fn(x, s)),
        lambda: jax.block_until_ready(fb_fn(x, s)),
        lambda: jax_peak_bytes(fb_fn, x, s),
    )


def jax_peak_bytes(jitted: Any, *args: Any) -> int | None:
    """XLA's static buffer assignment: outputs + temporaries - aliased (inputs excluded)."""
    stats = jitted.lower(*args).compile().memory_analysis()
    if stats is None:
        return None
    total = stats.output_size_in_bytes + stats.temp_size_in_bytes - stats.alias_size_in_bytes
    return int(total)


# --------------------------------------------------------------------------------------------
# driver

BUILDERS: dict[str, Callable[[str, tuple[int, int, int, int], str], dict[str, OpBench]]] = {
    "torch": torch_ops,
    "tf": tf_ops,
    "jax": jax_ops,
}
MEMORY_METHODS = {
    "torch": "profiler: peak live CPU-allocator bytes during fwd+bwd (inputs excluded)",
    "tf": "get_memory_info('CPU:0'): peak minus live bytes at the start of fwd+bwd",
    "jax": "XLA memory_analysis of jit(value_and_grad): output + temp - alias (inputs excluded)",
}


def timed_call(fn: Thunk) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def warm_up(ops: dict[str, OpBench], records: dict[str, Record], warmup: int) -> list[tuple]:
    """Warm every thunk (the first call is timed: trace/compile); drop ops that fail."""
    thunks: list[tuple[str, str, Thunk]] = []
    for op, bench in ops.items():
        try:
            for kind, fn in zip(KINDS, (bench.fwd, bench.fwdbwd), strict=True):
                records[op].first_call_s[kind] = round(timed_call(fn), 4)
                for _ in range(warmup - 1):
                    fn()
                thunks.append((op, kind, fn))
        except Exception as exc:  # a failing op is reported, never fatal
            records[op].error = error_text(exc)
            thunks = [t for t in thunks if t[0] != op]
    return thunks


def summarise(samples: dict[tuple, list[float]], records: dict[str, Record]) -> None:
    for (op, kind), values in samples.items():
        median_ms = statistics.median(values) * 1e3
        q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (0.0, 0.0, 0.0)
        records[op].spread_ms[f"{kind} iqr"] = round((q3 - q1) * 1e3, 4)
        records[op].spread_ms[f"{kind} min"] = round(min(values) * 1e3, 4)
        setattr(records[op], "fwd_ms" if kind == "fwd" else "fwdbwd_ms", median_ms)
    base = records["AvgPool"]
    for rec in records.values():
        rec.fwd_ratio = ratio(rec.fwd_ms, base.fwd_ms)
        rec.fwdbwd_ratio = ratio(rec.fwdbwd_ms, base.fwdbwd_ms)


def ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def measure_memory(fw: str, ops: dict[str, OpBench], records: dict[str, Record]) -> None:
    for op, bench in ops.items():
        if records[op].error is not None:
            continue
        try:
            records[op].peak_bytes = bench.memory()
        except Exception as exc:  # the probe is optional: record why it failed
            records[op].extra["memory_error"] = error_text(exc)
        if records[op].peak_bytes is not None:
            records[op].memory_method = MEMORY_METHODS[fw]


def run_case(
    fw: str, mode: str, shape: tuple[int, int, int, int], fmt: str, args: argparse.Namespace
) -> list[Record]:
    try:
        ops = BUILDERS[fw](mode, shape, fmt)
    except Exception as exc:  # e.g. the framework's compiler is unavailable
        records = {op: Record(fw, mode, layout(shape, fmt), fmt, op) for op in OPS}
        for rec in records.values():
            rec.error = error_text(exc)
        return list(records.values())
    order = [*OPS[:-1], LAYER_OP, "AvgPool"]  # the table's row order, baseline last
    ops = {op: ops[op] for op in sorted(ops, key=order.index)}
    records = {op: Record(fw, mode, layout(shape, fmt), fmt, op) for op in ops}
    breaks_before = torch_graph_breaks() if (fw, mode) == ("torch", "compile") else 0
    thunks = warm_up(ops, records, args.warmup)
    if (fw, mode) == ("torch", "compile"):
        for rec in records.values():
            rec.extra["graph_breaks_during_warmup"] = torch_graph_breaks() - breaks_before
    steps = {(op, kind): fn for op, kind, fn in thunks}  # warm_up has run them
    summarise(interleaved(steps, args.repeats, warmup=0), records)
    if not args.no_memory:
        measure_memory(fw, ops, records)
    return list(records.values())


# --------------------------------------------------------------------------------------------
# reporting


def fmt_num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def fmt_mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


HEADER = (
    f"{'framework':<6} {'mode':<8} {'shape':<16} {'format':<14} {'op':<17} "
    f"{'fwd ms':>8} {'x avg':>6} {'fwd+bwd ms':>10} {'x avg':>6} {'peak MiB':>8}"
)


def table_row(rec: Record) -> str:
    shape = "x".join(str(v) for v in rec.shape)
    row = (
        f"{rec.framework:<6} {rec.mode:<8} {shape:<16} {rec.data_format:<14} {rec.op:<17} "
        f"{fmt_num(rec.fwd_ms, '8.3f'):>8} {fmt_num(rec.fwd_ratio, '6.2f'):>6} "
        f"{fmt_num(rec.fwdbwd_ms, '10.3f'):>10} {fmt_num(rec.fwdbwd_ratio, '6.2f'):>6} "
        f"{fmt_mib(rec.peak_bytes):>8}"
    )
    return row + (f"  [{rec.error}]" if rec.error else "")


def print_header(env: dict[str, Any], args: argparse.Namespace) -> None:
    print("# diffstride CPU benchmark")
    print(header_block(env))
    print(
        f"# repeats={args.repeats} warmup={args.warmup} (interleaved round-robin, median); "
        "ratio 'x avg' = op time / AvgPool time, same process and rounds"
    )
    print("# peak memory (fwd+bwd):")
    for fw in args.frameworks:
        print(f"#   {fw}: {MEMORY_METHODS[fw]}")
    print(HEADER)
    print("-" * len(HEADER))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default="torch,tf,jax", help="comma-separated subset")
    parser.add_argument("--shapes", choices=("small", "targets", "all"), default="all")
    parser.add_argument("--formats", default="", help="comma-separated subset (default: both)")
    parser.add_argument("--modes", default="", help="e.g. eager,jit (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 15)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up calls (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="write results as JSON")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-memory", action="store_true", help="skip peak-memory probes")
    parser.add_argument("--quick", action="store_true", help="one small shape, few repeats")
    args = parser.parse_args(argv)
    args.frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = set(args.frameworks) - set(BUILDERS)
    if unknown:
        parser.error(f"unknown frameworks {sorted(unknown)}; choose from {sorted(BUILDERS)}")
    args.formats = [f for f in args.formats.split(",") if f] or (
        ["channels_first"] if args.quick else list(FORMATS)
    )
    args.modes = [m for m in args.modes.split(",") if m]
    args.shape_list = {"small": SHAPES_SMALL, "targets": SHAPES_TARGETS}.get(
        args.shapes, SHAPES_ALL
    )
    if args.quick:
        args.shape_list = [SHAPE_QUICK]
    args.repeats = args.repeats or (5 if args.quick else 15)
    args.warmup = args.warmup or (2 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.torch_threads and "torch" in args.frameworks:
        import torch

        torch.set_num_threads(args.torch_threads)
    env = environment(args.frameworks)
    print_header(env, args)
    results: list[Record] = []
    started = time.perf_counter()
    for fw in args.frameworks:
        for mode in MODES[fw]:
            if args.modes and mode not in args.modes:
                continue
            for shape in args.shape_list:
                for fmt in args.formats:
                    for rec in run_case(fw, mode, shape, fmt, args):
                        print(table_row(rec), flush=True)
                        results.append(rec)
    elapsed = time.perf_counter() - started
    print(f"# total {elapsed:.1f} s")
    if args.json is not None:
        payload = {"environment": env, "args": vars(args) | {"json": str(args.json)}}
        payload["results"] = [asdict(r) for r in results]
        payload["elapsed_s"] = elapsed
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
