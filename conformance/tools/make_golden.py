"""Generate extra golden cases from the authors' original Keras DiffStride implementation.

The original implementation is ``diffstride/pooling.py`` from google-research/diffstride
(Apache-2.0, https://github.com/google-research/diffstride). It is NOT shipped with this
project: the user supplies a local copy with ``--original``. The file imports ``gin`` only for
its ``@gin.configurable`` decorators, so a stub ``gin`` module with an identity
``configurable`` is installed in ``sys.modules`` before the file is loaded; nothing else is
patched.

For every case listed below the script runs the original layer once on a seeded standard
normal float32 input and records the input, output, a random cotangent and the gradients of
``sum(y * cot)``. It writes two files in the format of the shared golden files:

* ``extra_reference.npz`` -- ``LearnableSpectralPooling`` (DiffStride) cases, keys
  ``caseNN_{x,y,cot,grad_x,grad_strides,strides_init,strides_after,meta}``;
* ``extra_reference_fixed.npz`` -- ``FixedSpectralPooling`` cases, keys
  ``caseNN_{x,y,cot,grad_x,meta}``.

``meta`` is a JSON string describing the case. Requires TensorFlow (tested with 2.21 CPU and
Keras 3.15).

Usage::

    python conformance/tools/make_golden.py --original /path/to/pooling.py --out-dir DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Strides = list[float]

LEARNABLE_FILE = "extra_reference.npz"
FIXED_FILE = "extra_reference_fixed.npz"
SEED_BASE = 20240601
FIXED_SEED_BASE = 20240701

CF = "channels_first"
CL = "channels_last"


def learnable_case(
    shape: tuple[int, int, int, int],
    strides: Strides,
    *,
    smoothness_factor: float = 4.0,
    shared_stride: bool = False,
    cropping: bool = True,
    data_format: str = CF,
    lower_limit_stride: float | None = None,
    upper_limit_stride: float | None = None,
) -> dict[str, Any]:
    """Meta dict of one DiffStride case, keys in the order of the shared golden files."""
    return {
        "shape": list(shape),
        "strides": list(strides),
        "smoothness_factor": float(smoothness_factor),
        "shared_stride": shared_stride,
        "cropping": cropping,
        "data_format": data_format,
        "lower_limit_stride": lower_limit_stride,
        "upper_limit_stride": upper_limit_stride,
    }


def fixed_case(
    shape: tuple[int, int, int, int], strides: Strides, data_format: str = CF
) -> dict[str, Any]:
    """Meta dict of one FixedSpectralPooling case."""
    return {"shape": list(shape), "strides": list(strides), "data_format": data_format}


# Chosen to complement keras_reference*.npz: odd sizes in channels_last, mask-threshold ties,
# tiny inputs, cropping=False on odd sizes, shared strides in channels_last, limits, extreme R.
LEARNABLE_CASES: list[dict[str, Any]] = [
    # Odd height and width, channels_last, fractional stride.
    learnable_case((2, 15, 9, 3), [2, 1.7], data_format=CL),
    # 30 / 2 = 15, R = 3: half-integer cut-offs.
    learnable_case((1, 2, 30, 30), [2, 2], smoothness_factor=3.0),
    # 20 / 1.25 = 28 / 1.75 = 16: mask reaches exactly 0 on an integer position (tie).
    learnable_case((2, 3, 20, 28), [1.25, 1.75]),
    # Tiny inputs: N - R <= 0 (negative minimum stride) and N - R > 0 with R = 1.
    learnable_case((1, 2, 2, 2), [2, 2]),
    learnable_case((1, 2, 3, 3), [2, 2], smoothness_factor=1.0),
    learnable_case((2, 1, 4, 6), [2, 3], smoothness_factor=1.0),
    learnable_case((1, 2, 6, 5), [1.5, 1.2]),
    # cropping=False on odd sizes.
    learnable_case((2, 2, 9, 11), [2, 1.5], cropping=False),
    # shared_stride in channels_last, without and with an upper limit that clips.
    learnable_case((1, 17, 13, 2), [1.6, 1.6], shared_stride=True, data_format=CL),
    learnable_case(
        (2, 16, 24, 3), [3, 3], shared_stride=True, data_format=CL, upper_limit_stride=2.5
    ),
    # Lower limit that does not clip.
    learnable_case((1, 20, 18, 2), [3, 3], data_format=CL, lower_limit_stride=1.5),
    # Large strides.
    learnable_case((1, 2, 64, 48), [8, 8]),
    # Extreme smoothness factors.
    learnable_case((2, 2, 32, 24), [2.5, 1.5], smoothness_factor=1.0),
    learnable_case((1, 3, 40, 36), [2, 3], smoothness_factor=8.0),
    # Batch 3 with many channels.
    learnable_case((3, 8, 12, 20), [2, 2]),
]

FIXED_CASES: list[dict[str, Any]] = [
    fixed_case((2, 3, 15, 9), [2, 2]),
    fixed_case((2, 13, 11, 2), [2, 3], CL),
    fixed_case((1, 2, 10, 10), [3, 3]),
    fixed_case((1, 2, 4, 4), [4, 4]),
    fixed_case((1, 2, 24, 30), [1.3, 2.7]),
    fixed_case((1, 16, 32, 3), [4, 2], CL),
]


def load_original(path: Path) -> types.ModuleType:
    """Import the original ``pooling.py`` with a stub ``gin`` module."""
    if "gin" not in sys.modules:
        gin = types.ModuleType("gin")

        def configurable(obj: Callable[..., Any]) -> Callable[..., Any]:
            return obj

        gin.configurable = configurable  # type: ignore[attr-defined]
        sys.modules["gin"] = gin
    spec = importlib.util.spec_from_file_location("diffstride_original_pooling", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def as_numpy(value: Any, like: np.ndarray) -> np.ndarray:
    """Gradient as float32 numpy, zeros shaped like ``like`` when it is None."""
    if value is None:
        return np.zeros_like(like, dtype=np.float32)
    return np.asarray(value, dtype=np.float32)


def run_learnable(pooling: types.ModuleType, meta: dict[str, Any], seed: int) -> dict[str, Any]:
    """Run one LearnableSpectralPooling case and return its arrays."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal(meta["shape"]).astype(np.float32)
    layer = pooling.LearnableSpectralPooling(
        strides=tuple(meta["strides"]),
        smoothness_factor=meta["smoothness_factor"],
        cropping=meta["cropping"],
        shared_stride=meta["shared_stride"],
        lower_limit_stride=meta["lower_limit_stride"],
        upper_limit_stride=meta["upper_limit_stride"],
        data_format=meta["data_format"],
    )
    layer.build(x_np.shape)
    strides_init = np.array(layer.strides.numpy(), dtype=np.float32)
    x = tf.constant(x_np)
    with tf.GradientTape() as tape:
        tape.watch(x)
        tape.watch(layer.strides.value)
        y = layer(x, training=True)
        cot = tf.constant(rng.standard_normal(y.shape).astype(np.float32))
        loss = tf.reduce_sum(y * cot)
    grad_x, grad_strides = tape.gradient(loss, [x, layer.strides.value])
    return {
        "x": x_np,
        "y": np.asarray(y, dtype=np.float32),
        "cot": np.asarray(cot, dtype=np.float32),
        "grad_x": as_numpy(grad_x, x_np),
        "grad_strides": as_numpy(grad_strides, strides_init),
        "strides_init": strides_init,
        "strides_after": np.array(layer.strides.numpy(), dtype=np.float32),
    }


def run_fixed(pooling: types.ModuleType, meta: dict[str, Any], seed: int) -> dict[str, Any]:
    """Run one FixedSpectralPooling case and return its arrays."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x_np = rng.standard_normal(meta["shape"]).astype(np.float32)
    layer = pooling.FixedSpectralPooling(
        strides=tuple(meta["strides"]), data_format=meta["data_format"]
    )
    x = tf.constant(x_np)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        cot = tf.constant(rng.standard_normal(y.shape).astype(np.float32))
        loss = tf.reduce_sum(y * cot)
    grad_x = tape.gradient(loss, x)
    return {
        "x": x_np,
        "y": np.asarray(y, dtype=np.float32),
        "cot": np.asarray(cot, dtype=np.float32),
        "grad_x": as_numpy(grad_x, x_np),
    }


Runner = Callable[[types.ModuleType, dict[str, Any], int], dict[str, Any]]


def build_archive(
    pooling: types.ModuleType, cases: list[dict[str, Any]], runner: Runner, seed_base: int
) -> dict[str, np.ndarray]:
    """Run every case and flatten the results into ``caseNN_<field>`` arrays."""
    arrays: dict[str, np.ndarray] = {}
    for index, meta in enumerate(cases):
        result = runner(pooling, meta, seed_base + index)
        for field, value in result.items():
            arrays[f"case{index:02d}_{field}"] = value
        arrays[f"case{index:02d}_meta"] = np.array(json.dumps(meta))
    return arrays


def check_finite(name: str, arrays: dict[str, np.ndarray]) -> None:
    """Refuse to write non-finite numbers into golden data."""
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ValueError(f"{name}: {key} has non-finite values")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--original", type=Path, required=True, help="path to the original diffstride/pooling.py"
    )
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for the .npz files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pooling = load_original(args.original)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (LEARNABLE_FILE, LEARNABLE_CASES, run_learnable, SEED_BASE),
        (FIXED_FILE, FIXED_CASES, run_fixed, FIXED_SEED_BASE),
    ]
    for name, cases, runner, seed_base in jobs:
        arrays = build_archive(pooling, cases, runner, seed_base)
        check_finite(name, arrays)
        path = args.out_dir / name
        np.savez_compressed(path, **arrays)
        print(f"wrote {path} ({len(cases)} cases, {path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
