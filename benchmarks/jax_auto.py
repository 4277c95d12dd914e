"""Which computation path jax's ``method="auto"`` should take, per shape and layout.

    python benchmarks/jax_auto.py [--repeats 8] [--shapes 32x64x32x32,...]

For each input shape (channels_first ``N x C x H x W``) and layout, one DiffStride fwd+bwd at
strides (2, 2) under ``jax.jit`` on each path (``method="fft"`` and ``"matmul"``), and the 2x2
average pooling's, interleaved round-robin in one process (a turn: one untimed call, then
``--block`` timed calls). The step is ``jit(value_and_grad)`` of ``sum(y * y)`` with respect to
the input and the strides: returning the loss makes XLA write the output in the input's
layout, as a network does when the next layer reads it (with ``jax.grad`` alone XLA may keep
the GEMM path's output in its permuted order and skip that transpose). The table gives each
median, matmul over fft, the path ``auto`` takes (``diffstride._paths.chooses_gemms`` with the
jax adapter's ``Tuning``) and whether it is the faster one, and auto's time over the average
pooling's. The default shapes are those of the targets and of ResNet-18's and a small CNN's
downsampling layers at 32 and 64 pixels. ``benchmarks/jax_network.py`` times the same choice
inside a jitted network's training step.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

# Before diffstride: puts an uninstalled checkout on the path.
from _harness import LAYOUTS, environment, header, interleaved, layout_inputs

SHAPES = (
    "32x64x32x32,8x64x64x64,128x64x32x32,32x128x16x16,32x256x8x8,32x512x4x4,"
    "32x16x32x32,32x32x32x32,32x128x32x32,8x16x64x64,8x32x64x64,32x8x64x64,32x3x32x32"
)


def spatial(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    return shape[2:] if layout == "channels_first" else shape[1:3]


def diffstride_step(x: np.ndarray, layout: str, method: str) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp

    import diffstride
    from diffstride.jax import diffstride as ds

    size = diffstride.output_size(spatial(x.shape, layout), (2.0, 2.0))

    def loss(a: Any, s: Any) -> Any:
        y = ds(a, s, output_size=size, data_format=layout, method=method)
        return jnp.sum(y * y)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    data, strides = jnp.asarray(x), jnp.asarray([2.0, 2.0], dtype=jnp.float32)
    return lambda: jax.block_until_ready(step(data, strides))


def average_pooling_step(x: np.ndarray, layout: str) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp

    window = (1, 1, 2, 2) if layout == "channels_first" else (1, 2, 2, 1)

    def loss(a: Any) -> Any:
        y = jax.lax.reduce_window(a, 0.0, jax.lax.add, window, window, "VALID") / 4
        return jnp.sum(y * y)

    step = jax.jit(jax.value_and_grad(loss))
    data = jnp.asarray(x)
    return lambda: jax.block_until_ready(step(data))


def auto_takes_gemms(x_shape: tuple[int, ...], layout: str) -> bool:
    import diffstride
    from diffstride._paths import chooses_gemms

    ndim = len(x_shape)
    axes = (ndim - 2, ndim - 1) if layout == "channels_first" else (ndim - 3, ndim - 2)
    sizes = tuple(x_shape[a] for a in axes)
    backend = diffstride.get_backend("jax")
    return bool(chooses_gemms(backend, "auto", sizes, learnable=True, shape=x_shape, axes=axes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--block", type=int, default=3, help="timed calls per turn")
    parser.add_argument("--shapes", default=SHAPES, help="N x C x H x W, comma-separated")
    args = parser.parse_args()
    print(header(environment(["jax"])))
    steps: dict[tuple[str, str, str], Callable[[], Any]] = {}
    for text, layout, x in layout_inputs(args.shapes):
        for method in ("fft", "matmul"):
            steps[(text, layout, method)] = diffstride_step(x, layout, method)
        steps[(text, layout, "avg")] = average_pooling_step(x, layout)
    samples = interleaved(steps, args.repeats, block=args.block, warmup=2, wake=True)
    median = {key: statistics.median(times) * 1e3 for key, times in samples.items()}
    print(f"# {args.repeats} rounds of {args.block} calls per turn, jit(value_and_grad)")
    print("\n## jax DiffStride fwd+bwd per path, under jit\n")
    print(
        "| shape (NCHW) | layout | fft ms | matmul ms | matmul / fft | auto takes "
        "| the faster | auto / avg pool |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for text in args.shapes.split(","):
        shape = tuple(int(n) for n in text.split("x"))
        for layout in LAYOUTS:
            fft, matmul, avg = (median[(text, layout, k)] for k in ("fft", "matmul", "avg"))
            x_shape = shape if layout == "channels_first" else (*shape[:1], *shape[2:], shape[1])
            gemms = auto_takes_gemms(x_shape, layout)
            auto = matmul if gemms else fft
            print(
                f"| {text} | {layout} | {fft:.2f} | {matmul:.2f} | {matmul / fft:.2f} "
                f"| {'matmul' if gemms else 'fft'} | {'yes' if auto <= min(fft, matmul) else 'no'} "
                f"| {auto / avg:.2f}x |"
            )


if __name__ == "__main__":
    main()
