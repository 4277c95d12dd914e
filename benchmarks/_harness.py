"""What the benchmark scripts share: the path set-up, the machine header, the timing loop.

* Importing this module puts an uninstalled checkout (the repository root and ``backends/``) on
  ``sys.path`` and quiets TensorFlow's C++ logs and the torch profiler's banner; both must
  happen before a framework is imported, so a script imports this module first.
* :func:`environment` describes the machine and the versions (a dict, stored in JSON output);
  :func:`header` prints it on one line, :func:`header_block` one entry a line.
* :func:`layout_inputs` makes the float32 inputs of a ``--shapes`` list in both layouts.
* :func:`interleaved` is the timing loop: the variants take turns, round after round, in one
  process, so that slow drifts of the machine (frequency, other jobs, heap growth) reach every
  variant alike and their ratios stay meaningful on a shared machine.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("diffstride_backends") is None:  # uninstalled checkout
    sys.path[:0] = [str(ROOT), str(ROOT / "backends")]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

K = TypeVar("K")

__all__ = ["ROOT", "environment", "header", "header_block", "interleaved", "layout_inputs"]

LAYOUTS = ("channels_first", "channels_last")


def layout_inputs(shapes: str) -> Iterator[tuple[str, str, Any]]:
    """``(shape text, layout, x)`` for each of the comma-separated channels_first shapes
    ``N x C x H x W`` and each layout: the same standard normal float32 values (seed 0), the
    channels moved last for ``channels_last``."""
    import numpy as np

    for text in shapes.split(","):
        shape = tuple(int(n) for n in text.split("x"))
        x_first = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for layout in LAYOUTS:
            x = x_first if layout == "channels_first" else np.moveaxis(x_first, 1, 3).copy()
            yield text, layout, x


def interleaved(
    steps: Mapping[K, Callable[[], object]],
    rounds: int,
    block: int = 1,
    warmup: int = 1,
    *,
    wake: bool = False,
) -> dict[K, list[float]]:
    """Seconds per call of every step: one sample per round and step.

    Each step is first called ``warmup`` times in a row, untimed (tracing, compilation,
    caches). Then, for ``rounds`` rounds, the steps take their turns in order; a turn is one
    untimed call if ``wake`` (a framework's thread pool, asleep after another framework ran,
    wakes outside the clock) and ``block`` timed calls in a row, whose mean is the sample. The
    garbage collector is paused during the rounds, so that no step pays for another's garbage.
    Each step must return only when its work is done (jax ``block_until_ready``, tf
    ``.numpy()``).
    """
    if rounds < 1 or block < 1 or warmup < 0:
        raise ValueError(
            "interleaved needs rounds >= 1, block >= 1 and warmup >= 0; received "
            f"rounds={rounds}, block={block}, warmup={warmup}"
        )
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples: dict[K, list[float]] = {key: [] for key in steps}
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for key, step in steps.items():
                if wake:
                    step()
                start = time.perf_counter()
                for _ in range(block):
                    step()
                samples[key].append((time.perf_counter() - start) / block)
    finally:
        gc.enable()
    return samples


# --------------------------------------------------------------------------------------------
# the machine header


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _torch() -> dict[str, Any]:
    import torch

    # torch.compile's own chatter (bench.py compiles); it would interleave with the tables.
    torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)
    warnings.filterwarnings("ignore", message="Torchinductor does not support code generation")
    warnings.filterwarnings("ignore", message="Dynamo detected a call to a `functools.lru_cache`")
    return {
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
    }


def _tensorflow() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    import diffstride

    tf.get_logger().setLevel(logging.ERROR)
    tf.autograph.set_verbosity(0)
    diffstride.get_backend("tensorflow")  # load the adapter outside any tf.function trace
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }


def _jax() -> dict[str, Any]:
    import jax

    return {
        "jax": jax.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
    }


#: The scripts' names for the frameworks (``keras`` is Keras on TensorFlow).
_FRAMEWORKS: dict[str, Callable[[], dict[str, Any]]] = {
    "torch": _torch,
    "tf": _tensorflow,
    "tensorflow": _tensorflow,
    "keras": _tensorflow,
    "jax": _jax,
}


def environment(frameworks: Iterable[str]) -> dict[str, Any]:
    """The machine (CPU, cores, affinity, load), the environment variables that change the
    timings (threads, allocator) and the versions of Python, numpy, diffstride and each of
    ``frameworks`` (``torch``, ``tf``/``tensorflow``/``keras``, ``jax``), whose logs are
    quieted on the way."""
    import numpy as np

    import diffstride

    env: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "os_cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
        # glibc malloc settings change torch's eager times (see docs/benchmarks.md).
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "LD_PRELOAD": os.environ.get("LD_PRELOAD", ""),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "diffstride": diffstride.__version__,
    }
    seen: set[Callable[[], dict[str, Any]]] = set()
    for name in frameworks:
        if name not in _FRAMEWORKS:
            raise ValueError(f"frameworks must be among {sorted(_FRAMEWORKS)}; received {name!r}")
        describe = _FRAMEWORKS[name]
        if describe not in seen:
            seen.add(describe)
            env.update(describe())
    return env


def _short(value: Any) -> str:
    if isinstance(value, tuple) and all(isinstance(v, float) for v in value):
        return " ".join(f"{v:.2f}" for v in value)  # the load average
    return str(value)


def header(env: Mapping[str, Any]) -> str:
    """``env`` as one comment line: ``# cpu_model=...; os_cpu_count=2; ...``."""
    return "# " + "; ".join(f"{key}={_short(value)}" for key, value in env.items())


def header_block(env: Mapping[str, Any]) -> str:
    """``env`` as comment lines, one entry a line: ``#   cpu_model: ...``."""
    return "\n".join(f"#   {key}: {value}" for key, value in env.items())
