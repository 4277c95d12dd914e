"""The Keras ``DiffStride`` layer against the authors' own layer, in one process.

    python benchmarks/original.py --source PATH [--repeats 15] [--shapes 32x64x32x32]

The authors' layer is ``DiffStride`` of google-research/diffstride (``diffstride/pooling.py``,
Apache-2.0). It is not part of this repository: ``--source`` (or the environment variable
``DIFFSTRIDE_ORIGINAL``) names a checkout of that repository or its ``pooling.py``, e.g.

    git clone https://github.com/google-research/diffstride /tmp/google-diffstride
    python benchmarks/original.py --source /tmp/google-diffstride

The file is executed unchanged, with one stand-in: its ``import gin`` gets a module whose
``configurable`` returns the class as it is, because gin's decorator is all that keeps the
layer from constructing on Keras 3. Without a source the script says so and exits 0, so that
``make bench`` runs on a machine without it.

For each input shape (channels_first ``N x C x H x W``), layout (the authors' layer
transposes a channels_last input to channels_first and back) and mode, one training step of
each layer at strides (2, 2): a call with ``training=True``, loss ``sum(y * y)``, gradients of
the input and of the stride variable (``GradientTape``); mode ``function`` runs the step under
``tf.function`` (as ``fit`` does: our crop is then symbolic), ``eager`` without it. The two
layers' steps take turns in one process (:func:`_harness.interleaved`), ``--block`` timed calls
a turn, for ``--repeats`` rounds; the table gives each median and the authors' time over ours
(above 1: ours is faster). Before timing, both steps run once on the same input and their
outputs and gradients are compared: ours reproduces the original with default options, so a
difference over ``--tolerance`` (relative to the largest value) stops the script.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# Before diffstride and any framework: puts an uninstalled checkout on the path, quiets TF.
from _harness import environment, header, interleaved, layout_inputs

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

MODES = ("function", "eager")


def pooling_file(source: str) -> Path:
    """``pooling.py`` of a checkout of google-research/diffstride, or the file itself."""
    path = Path(source)
    return path / "diffstride" / "pooling.py" if path.is_dir() else path


def load_original(path: Path) -> types.ModuleType:
    """The authors' ``pooling`` module, executed from ``path`` with ``gin`` stood in for."""
    gin = types.ModuleType("gin")
    gin.configurable = lambda cls: cls  # type: ignore[attr-defined]
    spec = importlib.util.spec_from_file_location("google_diffstride_pooling", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--source: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("gin")
    sys.modules["gin"] = gin
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["gin"]
        else:
            sys.modules["gin"] = saved
    return module


def training_step(layer: Any, x: Any, compiled: bool) -> Callable[[], list[Any]]:
    """One step of ``layer`` on ``x``: its output and the gradients of ``sum(y * y)`` with
    respect to ``x`` and the stride variable."""
    import tensorflow as tf

    def step(a: Any) -> list[Any]:
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = layer(a, training=True)
            loss = tf.reduce_sum(y * y)
        return [y, *tape.gradient(loss, [a, layer.strides])]

    run = tf.function(step) if compiled else step
    return lambda: [t.numpy() for t in run(x)]


def relative_difference(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    """The largest of max |ours - theirs| / max |theirs| over the output and gradients."""
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        if a.shape != b.shape:
            raise SystemExit(f"shapes differ: ours {a.shape}, the original's {b.shape}")
        worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=os.environ.get("DIFFSTRIDE_ORIGINAL"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--block", type=int, default=3, help="timed calls per turn")
    parser.add_argument("--shapes", default="32x64x32x32", help="N x C x H x W, comma-separated")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    if not args.source:
        print(
            "# original.py: skipped, no --source (or DIFFSTRIDE_ORIGINAL) naming a checkout of "
            "google-research/diffstride"
        )
        return
    path = pooling_file(args.source)
    if not path.is_file():
        raise SystemExit(f"--source: no file {path}")
    original = load_original(path)
    modes = args.modes.split(",")
    if not set(modes) <= set(MODES):
        raise SystemExit(f"--modes must be among {MODES}; received {args.modes!r}")

    import tensorflow as tf

    from diffstride.keras import DiffStride

    print(header(environment(["keras"])))
    print(f"# original: {path}; {args.repeats} rounds of {args.block} calls per turn")
    steps: dict[tuple[str, str, str, str], Callable[[], Any]] = {}
    differences: dict[tuple[str, str, str], float] = {}
    for text, layout, x in layout_inputs(args.shapes):
        data = tf.constant(x)
        for mode in modes:
            layers = {
                "ours": DiffStride((2.0, 2.0), data_format=layout),
                "original": original.DiffStride((2.0, 2.0), data_format=layout),
            }
            results = {}
            for name, layer in layers.items():
                layer.build(x.shape)
                steps[(text, layout, mode, name)] = training_step(layer, data, mode == "function")
                results[name] = steps[(text, layout, mode, name)]()
            worst = relative_difference(results["ours"], results["original"])
            if worst > args.tolerance:
                raise SystemExit(
                    f"{text} {layout} {mode}: ours differs from the original by {worst:.2e} "
                    f"(relative), over --tolerance {args.tolerance:g}"
                )
            differences[(text, layout, mode)] = worst
    samples = interleaved(steps, args.repeats, block=args.block, warmup=2)
    median = {key: statistics.median(times) * 1e3 for key, times in samples.items()}
    print("\n## The Keras DiffStride layer against the authors' (fwd+bwd, strides 2)\n")
    print(
        "| shape (NCHW) | layout | mode | ours ms | original ms | original / ours "
        "| max rel. difference |"
    )
    print("|---|---|---|---|---|---|---|")
    for (text, layout, mode), worst in differences.items():
        ours, theirs = (median[(text, layout, mode, name)] for name in ("ours", "original"))
        print(
            f"| {text} | {layout} | {mode} | {ours:.2f} | {theirs:.2f} | {theirs / ours:.2f}x "
            f"| {worst:.1e} |"
        )


if __name__ == "__main__":
    main()
