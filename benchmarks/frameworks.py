"""Every framework's DiffStride layer against torch's, in one process, with the machine's
SGEMM rate beside it.

    python benchmarks/frameworks.py [--repeats 15] [--shapes 32x64x32x32,8x64x64x64]
        [--torch-threads N]

For each input shape (channels_first ``N x C x H x W``) and layout, one fwd+bwd of a
DiffStride layer at strides (2, 2) (loss ``sum(y * y)``, gradients of the input and the
strides), as users run it:

* torch: ``diffstride.torch.DiffStride`` eager, training mode;
* Keras: ``diffstride.keras.DiffStride`` in a training call under ``tf.function`` (the crop
  symbolic in the graph, as ``fit`` runs it);
* jax: ``diffstride.jax.diffstride`` under ``jit(value_and_grad)`` with a static
  ``output_size`` (the loss returned, so that XLA writes the output as a network reads it).

After warm-up, every framework, shape and layout takes its turn round-robin for
``--repeats`` rounds; a turn is one untimed call and then ``--block`` timed calls in a row,
whose mean is that round's time. The median over rounds is reported with its ratio to
torch's at the same shape and layout, and the ratio of each framework's channels_last time
to its channels_first time. The untimed call is there because each framework keeps its own
thread pool: the first call after another framework ran finds it asleep and its caches cold
(TensorFlow's step took up to 1.6x longer then), which a user training in one framework does
not pay on every layer. The SGEMM rate (float32 GEMM of 1024 x 1024 matrices, numpy and torch)
is printed after the machine header, so that a reader can tell a slow machine from a slow path.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# Before diffstride and any framework: puts an uninstalled checkout on the path, quiets TF.
from _harness import environment, header, interleaved, layout_inputs

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def sgemm_gflops(matmul: Callable[[Any, Any], Any], make: Callable[[np.ndarray], Any]) -> float:
    a = make(np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32))
    matmul(a, a)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        matmul(a, a)
        times.append(time.perf_counter() - start)
    return 2 * 1024**3 / statistics.median(times) / 1e9


def torch_step(x: np.ndarray, layout: str) -> Callable[[], Any]:
    import torch

    from diffstride.torch import DiffStride

    layer = DiffStride((2.0, 2.0), data_format=layout)
    leaf = torch.from_numpy(x.copy()).requires_grad_(True)

    def step() -> Any:
        y = layer(leaf)
        return torch.autograd.grad((y * y).sum(), [leaf, layer.strides])

    return step


def keras_step(x: np.ndarray, layout: str) -> Callable[[], Any]:
    import tensorflow as tf

    from diffstride.keras import DiffStride

    layer = DiffStride((2.0, 2.0), data_format=layout)
    layer.build(x.shape)
    data = tf.constant(x)

    @tf.function
    def step(a: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = layer(a, training=True)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [a, layer.strides])

    return lambda: [g.numpy() for g in step(data)]


def jax_step(x: np.ndarray, layout: str) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp

    import diffstride
    from diffstride.jax import diffstride as ds

    spatial = x.shape[2:] if layout == "channels_first" else x.shape[1:3]
    size = diffstride.output_size(spatial, (2.0, 2.0))

    def loss(a: Any, s: Any) -> Any:
        y = ds(a, s, output_size=size, data_format=layout)
        return jnp.sum(y * y)

    # value_and_grad, as training reads the loss: XLA then writes the output in the input's
    # layout, which jax.grad alone lets it skip on the GEMM path (a transpose the next layer
    # of a network would need).
    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    data, strides = jnp.asarray(x), jnp.asarray([2.0, 2.0], dtype=jnp.float32)
    return lambda: jax.block_until_ready(grad(data, strides))


STEPS = {"torch": torch_step, "keras": keras_step, "jax": jax_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--block", type=int, default=5, help="timed calls per turn")
    parser.add_argument("--shapes", default="32x64x32x32,8x64x64x64")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    import torch

    if args.torch_threads is not None:
        # With two threads on a machine whose cores other jobs hold, a parallel region waits
        # for its descheduled worker: the torch step took 240-350 ms instead of 10-15.
        torch.set_num_threads(args.torch_threads)

    print(header(environment(STEPS)))
    print(
        f"# SGEMM 1024^3: numpy {sgemm_gflops(np.matmul, np.asarray):.1f} GFLOP/s, "
        f"torch {sgemm_gflops(torch.matmul, torch.from_numpy):.1f} GFLOP/s"
    )
    steps: dict[tuple[str, str, str], Callable[[], Any]] = {}
    for text, layout, x in layout_inputs(args.shapes):
        for name, build in STEPS.items():
            steps[(text, layout, name)] = build(x, layout)
    # wake: each turn's untimed call wakes this framework's threads; see the module docstring.
    samples = interleaved(steps, args.repeats, block=args.block, warmup=3, wake=True)
    median = {key: statistics.median(times) * 1e3 for key, times in samples.items()}
    columns = ("shape (NCHW)", "layout", "framework", "ms", "/torch", "last/first")
    print("\n{:14} {:15} {:9} {:>8} {:>7} {:>10}".format(*columns))
    for (text, layout, name), ms in median.items():
        over_torch = ms / median[(text, layout, "torch")]
        over_first = ms / median[(text, "channels_first", name)]
        print(f"{text:14} {layout:15} {name:9} {ms:8.2f} {over_torch:7.2f} {over_first:10.2f}")


if __name__ == "__main__":
    main()
