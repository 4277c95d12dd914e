"""Data-parallel training in JAX: one batch sharded over every device, DiffStride's strides learned.

    XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python -m diffstride.examples.jax_data_parallel --epochs 3

A tiny network (convolution, DiffStride, convolution, DiffStride, global average, dense) on the
synthetic gratings. Each batch is put on a ``("batch",)`` mesh of all devices with
``NamedSharding(mesh, PartitionSpec("batch"))`` and the parameters are replicated
(``PartitionSpec()``); ``jax.jit`` then runs the step on every device's part and sums the
gradients across them, as a data-parallel step does. Under ``jit`` DiffStride's output size
must be static: it is computed from the strides (``DiffStride.output_size``) before each
epoch, and the step is compiled once per distinct set of sizes. Each step ends with the
layer's projection (``DiffStride.project``). Prints the devices, the loss and the strides per
epoch, and ``final strides`` as JSON last.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

__all__ = ["main", "train"]


def train(
    epochs: int = 3,
    batch_size: int = 32,
    limit_train: int = 256,
    lr: float = 1e-2,
    stride_lr: float = 0.05,
    seed: int = 0,
) -> list[list[float]]:
    """Train the tiny network data-parallel on all devices; return the final strides."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from diffstride.examples import datasets
    from diffstride.jax import DiffStride

    devices = jax.devices()
    if batch_size % len(devices):
        raise ValueError(
            f"batch_size must be a multiple of the {len(devices)} devices; received {batch_size}"
        )
    mesh = Mesh(np.array(devices), ("batch",))
    batch_sharding = NamedSharding(mesh, P("batch"))
    replicated = NamedSharding(mesh, P())
    print(f"{len(devices)} devices: {[str(d) for d in devices]}", flush=True)

    dataset = datasets.load("synthetic", None, limit_train, seed)
    channels, height, width = dataset.x_train.shape[1:]
    pools = [DiffStride(strides=(2.0, 2.0)), DiffStride(strides=(2.0, 2.0))]
    widths = [channels, 8, 16]
    keys = jax.random.split(jax.random.PRNGKey(seed), 3)
    params: dict[str, Any] = {
        "convs": [
            jax.random.normal(k, (c_out, c_in, 3, 3)) * np.sqrt(2.0 / (9 * c_in))
            for k, c_in, c_out in zip(keys[:2], widths[:-1], widths[1:], strict=True)
        ],
        "pools": [pool.init() for pool in pools],
        "dense": jax.random.normal(keys[2], (widths[-1], dataset.num_classes)) * 0.1,
    }
    params = jax.device_put(params, replicated)
    moments = jax.device_put(
        (jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params)), replicated
    )

    def input_sizes(sizes: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
        return [(int(height), int(width)), *sizes[:-1]]

    def output_sizes(values: dict[str, Any]) -> tuple[tuple[int, int], ...]:
        sizes: list[tuple[int, int]] = []
        size = (int(height), int(width))
        for pool, pool_params in zip(pools, values["pools"], strict=True):
            size = tuple(pool.output_size(size, pool_params))  # type: ignore[assignment]
            sizes.append(size)
        return tuple(sizes)

    def forward(values: dict[str, Any], x: Any, sizes: tuple[tuple[int, int], ...]) -> Any:
        for conv, pool, pool_params, size in zip(
            values["convs"], pools, values["pools"], sizes, strict=True
        ):
            x = jax.nn.relu(jax.lax.conv_general_dilated(x, conv, (1, 1), "SAME"))
            x = pool.apply(pool_params, x, output_size=size)
        return x.mean(axis=(2, 3)) @ values["dense"]

    def loss_fn(values: dict[str, Any], x: Any, y: Any, sizes: Any) -> Any:
        logits = forward(values, x, sizes)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

    @partial(jax.jit, static_argnames="sizes")
    def step(values: Any, state: Any, t: Any, x: Any, y: Any, sizes: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(values, x, y, sizes)
        first, second = state
        first = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, first, grads)
        second = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, second, grads)
        rates = {
            "convs": [lr] * len(values["convs"]),
            "pools": [{"strides": stride_lr}] * len(pools),
            "dense": lr,
        }

        def adam(p: Any, m: Any, v: Any, rate: float) -> Any:
            m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
            return p - rate * m_hat / (jnp.sqrt(v_hat) + 1e-8)

        values = jax.tree.map(adam, values, first, second, rates)
        values["pools"] = [
            pool.project(pool_params, (x.shape[0], widths[i + 1], *size))
            for i, (pool, pool_params, size) in enumerate(
                zip(pools, values["pools"], input_sizes(sizes), strict=True)
            )
        ]
        return values, (first, second), loss

    def strides_of(values: dict[str, Any]) -> list[list[float]]:
        return [
            [round(s, 5) for s in pool.current_strides(p)]
            for pool, p in zip(pools, values["pools"], strict=True)
        ]

    print(f"epoch 0: strides {strides_of(params)}", flush=True)
    usable = len(dataset.y_train) // batch_size * batch_size  # full batches divide evenly
    t = 0
    for epoch in range(1, epochs + 1):
        sizes = output_sizes(params)  # static for this epoch's compiled step
        order = np.random.default_rng(seed * 1000 + epoch).permutation(len(dataset.y_train))
        losses = []
        for start in range(0, usable, batch_size):
            picked = order[start : start + batch_size]
            x = jax.device_put(dataset.x_train[picked], batch_sharding)
            y = jax.device_put(dataset.y_train[picked].astype(np.int32), batch_sharding)
            t += 1
            params, moments, loss = step(params, moments, t, x, y, sizes=sizes)
            losses.append(float(loss))
        print(
            f"epoch {epoch}: loss {np.mean(losses):.4f}, output sizes {list(sizes)}, "
            f"strides {strides_of(params)}, batch on {len(x.sharding.device_set)} devices",
            flush=True,
        )
    final = strides_of(params)
    print(f"final strides {json.dumps(final)}", flush=True)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffstride.examples.jax_data_parallel",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit-train", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--stride-lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    train(args.epochs, args.batch_size, args.limit_train, args.lr, args.stride_lr, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
