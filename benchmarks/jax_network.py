"""A small jax CNN's training step with DiffStride on each path and layout, in one process.

    python benchmarks/jax_network.py [--repeats 15] [--batch-size 32] [--size 32]

The network: a 3x3 convolution (16 -> ``--channels`` channels, 64 by default), ReLU,
DiffStride, a 3x3 convolution (channels -> channels), ReLU, DiffStride, a global mean and a
dense layer, squared-error loss; a step is the gradient of every parameter (the strides
included) and an SGD update, all under one ``jax.jit``, with a static ``output_size``. It runs
for ``method="fft"``, ``"matmul"`` and ``"auto"`` in both layouts, the steps interleaved
round-robin for ``--repeats`` rounds; the median is reported with its ratio to the FFT path's
channels_first step.

Why it exists: one DiffStride layer timed alone (``bench.py``, ``frameworks.py``,
``jax_auto.py``) depends on what ran before it and on which transposes XLA can fuse away;
inside a jitted network the layer's input was just written by a convolution, as in training.
jax's ``method="auto"`` was chosen on this step and on ``jax_auto.py``'s single layers.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

# Before diffstride: puts an uninstalled checkout on the path.
from _harness import environment, header, interleaved

LAYOUTS = ("channels_first", "channels_last")
METHODS = ("fft", "matmul", "auto")


def training_step(
    batch: int, size: int, data_format: str, method: str, channels: int = 64
) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp

    import diffstride
    from diffstride.jax import diffstride as ds

    rng = np.random.default_rng(0)
    first = data_format == "channels_first"
    numbers = ("NCHW", "OIHW", "NCHW") if first else ("NHWC", "HWIO", "NHWC")
    spatial_axes = (2, 3) if first else (1, 2)
    sizes = [diffstride.output_size((size, size), (2.0, 2.0))]
    sizes.append(diffstride.output_size(sizes[0], (2.0, 2.0)))

    def kernel(c_in: int, c_out: int) -> Any:
        w = rng.standard_normal((c_out, c_in, 3, 3)).astype(np.float32) / np.sqrt(9 * c_in)
        return jnp.asarray(w if first else np.transpose(w, (2, 3, 1, 0)))

    params = {
        "conv1": kernel(16, channels),
        "conv2": kernel(channels, channels),
        "strides1": jnp.asarray([2.0, 2.0]),
        "strides2": jnp.asarray([2.0, 2.0]),
        "dense": jnp.asarray(rng.standard_normal((channels, 10)).astype(np.float32) / 8),
    }
    x_shape = (batch, 16, size, size) if first else (batch, size, size, 16)
    x = jnp.asarray(rng.standard_normal(x_shape).astype(np.float32))
    y = jnp.asarray(rng.standard_normal((batch, 10)).astype(np.float32))

    def loss(p: dict, x: Any, y: Any) -> Any:
        h = x
        for i in (1, 2):
            h = jax.lax.conv_general_dilated(
                h, p[f"conv{i}"], (1, 1), "SAME", dimension_numbers=numbers
            )
            h = ds(
                jax.nn.relu(h),
                p[f"strides{i}"],
                output_size=sizes[i - 1],
                data_format=data_format,
                method=method,
            )
        return jnp.mean((jnp.mean(h, axis=spatial_axes) @ p["dense"] - y) ** 2)

    @jax.jit
    def step(p: dict) -> dict:
        grads = jax.grad(loss)(p, x, y)
        return jax.tree.map(lambda a, g: a - 1e-3 * g, p, grads)

    return lambda: jax.block_until_ready(step(params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=64, help="of both convolutions")
    args = parser.parse_args()
    steps = {
        (layout, method): training_step(args.batch_size, args.size, layout, method, args.channels)
        for layout in LAYOUTS
        for method in METHODS
    }
    samples = interleaved(steps, args.repeats, warmup=2)
    median = {key: statistics.median(times) * 1e3 for key, times in samples.items()}
    base = median[("channels_first", "fft")]
    print(header(environment(["jax"])))
    print(
        f"# batch {args.batch_size}, {args.size}x{args.size}x16, {args.channels} channels, "
        f"{args.repeats} rounds"
    )
    print(f"{'layout':15} {'method':7} {'step ms':>8} {'/ fft, channels_first':>22}")
    for (layout, method), ms in median.items():
        print(f"{layout:15} {method:7} {ms:8.2f} {ms / base:22.2f}")


if __name__ == "__main__":
    main()
