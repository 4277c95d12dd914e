"""What users feel: one ResNet-18 training step per downsampling choice, torch and Keras.

    python benchmarks/network.py [--batch-size 32] [--size 32] [--repeats 5] [--frameworks torch,tf]

Each network is ``diffstride.models.<framework>.resnet18`` at strides ``1,1,2,2,2`` on
``size x size x 3`` inputs: strided convolutions (the baseline), fixed spectral pooling,
DiffStride with the original's ramp (``outside``) and with ``ramp="inside"``, and both
spectral layers with ``pool_first=True``. A step is forward, cross-entropy, backward and an SGD
update (torch eager; Keras under ``tf.function`` with the crop symbolic in the graph, as ``fit``
runs it). After one warm-up step each, the steps of every network of every framework are
interleaved round-robin for ``--repeats`` rounds, in this one process, and the median is
reported next to the network's MACs per image, both relative to the strided network of the
same framework. Ratios are what to read: the absolute times depend on the machine (the header
prints it).

The networks come from the public builders (``diffstride.models``); the one batch they all
train on is made once in numpy and handed to each framework by its adapter's ``from_numpy``
(``diffstride.get_backend(name).from_numpy``), and each step's loss is read back through the
adapter's ``concrete``, so this script holds no conversion code of its own.

With ``--hold-strides`` the strides' gradients are computed every step but not applied, so that
every network keeps the MACs it was built with: unconstrained, the learned strides drift (here
toward smaller strides and larger feature maps, the MAC budget's job to stop), and the step
then measures a larger network rather than the layer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

# Before diffstride and any framework: puts an uninstalled checkout on the path, quiets TF.
from _harness import environment, header_block, interleaved

#: (label, builder keyword arguments); the first is the baseline of the ratios.
NETWORKS: list[tuple[str, dict[str, Any]]] = [
    ("strided", {"pooling": None}),
    ("spectral", {"pooling": "spectral"}),
    ("DiffStride outside", {"pooling": "diffstride", "ramp": "outside"}),
    ("DiffStride inside", {"pooling": "diffstride", "ramp": "inside"}),
    ("spectral, pool first", {"pooling": "spectral", "pool_first": True}),
    (
        "DiffStride inside, pool first",
        {"pooling": "diffstride", "ramp": "inside", "pool_first": True},
    ),
]
STRIDES = (1, 1, 2, 2, 2)
CLASSES = 10

Step = Callable[[], Any]


def batch_arrays(batch: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch every network trains on: images ``(batch, 3, size, size)`` float32 (NCHW)
    and labels ``(batch,)`` int64, the same values for every framework."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    return x, rng.integers(0, CLASSES, batch, dtype=np.int64)


def chosen(names: Collection[str] | None) -> list[tuple[str, dict[str, Any]]]:
    """The entries of :data:`NETWORKS` whose label is in ``names`` (all of them for ``None``)."""
    unknown = set(names or ()) - {label for label, _ in NETWORKS}
    if unknown:
        raise ValueError(
            f"names must be among {[label for label, _ in NETWORKS]}; received {sorted(unknown)}"
        )
    return [(label, kwargs) for label, kwargs in NETWORKS if names is None or label in names]


def _applied(named: list[tuple[str, Any]], hold_strides: bool) -> list[Any]:
    """The variables an optimizer step updates: all, or all but the DiffStride strides."""
    return [
        v for name, v in named if not (hold_strides and name.split("/")[-1].endswith("strides"))
    ]


def torch_networks(
    batch: int, size: int, names: Collection[str] | None = None, *, hold_strides: bool = False
) -> dict[str, tuple[Step, int]]:
    import torch

    import diffstride
    from diffstride.models.torch import resnet18

    torch.manual_seed(0)  # the weights
    backend = diffstride.get_backend("torch")
    images, labels = batch_arrays(batch, size)
    # Cloned into torch's own 64-byte-aligned memory (numpy's may be 16-byte aligned).
    x, y = backend.from_numpy(images).clone(), backend.from_numpy(labels)
    steps = {}
    for label, kwargs in chosen(names):
        model = resnet18(STRIDES, in_channels=3, num_classes=CLASSES, **kwargs).train()
        applied = _applied(list(model.named_parameters()), hold_strides)
        optimizer = torch.optim.SGD(applied, lr=1e-3, momentum=0.9)

        def step(model: Any = model, optimizer: Any = optimizer) -> float:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            model.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return float(backend.concrete(loss))

        steps[label] = (step, model.macs((size, size)))
    return steps


def keras_networks(
    batch: int, size: int, names: Collection[str] | None = None, *, hold_strides: bool = False
) -> dict[str, tuple[Step, int]]:
    import keras
    import tensorflow as tf

    import diffstride
    from diffstride.models import keras as models

    keras.utils.set_random_seed(0)  # the weights
    backend = diffstride.get_backend("tensorflow")
    images, labels = batch_arrays(batch, size)
    x = backend.from_numpy(np.ascontiguousarray(images.transpose(0, 2, 3, 1)))  # NHWC
    y = backend.from_numpy(labels)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    steps = {}
    for label, kwargs in chosen(names):
        model = models.resnet18(
            STRIDES,
            input_shape=(size, size, 3),
            num_classes=CLASSES,
            data_format="channels_last",
            **kwargs,
        )
        optimizer = keras.optimizers.SGD(1e-3, momentum=0.9)
        variables = model.trainable_variables
        applied = {id(v) for v in _applied([(v.path, v) for v in variables], hold_strides)}
        kept = tuple(i for i, v in enumerate(variables) if id(v) in applied)

        @tf.function(reduce_retracing=True)
        def train(model: Any = model, optimizer: Any = optimizer, kept: Any = kept) -> Any:
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)  # the strides' too
            optimizer.apply([grads[i] for i in kept], [model.trainable_variables[i] for i in kept])
            return loss

        def step(train: Any = train) -> float:
            return float(backend.concrete(train()))

        steps[label] = (step, models.macs(model))  # per image, at the built input shape
    return steps


BUILDERS = {"torch": torch_networks, "tf": keras_networks}


def steps_of(networks: dict[str, dict[str, tuple[Step, int]]]) -> dict[tuple[str, str], Step]:
    """The steps keyed by (framework, network), in the table's order."""
    return {
        (fw, label): step for fw, steps in networks.items() for label, (step, _) in steps.items()
    }


def table(networks: dict[str, dict[str, tuple[Step, int]]], samples: dict) -> str:
    lines = [
        "| framework | network | step ms (median) | x strided time | MMACs/image "
        "| x strided MACs |",
        "|---|---|---|---|---|---|",
    ]
    for fw, steps in networks.items():
        base_label = NETWORKS[0][0]
        base_time = statistics.median(samples[(fw, base_label)])
        base_macs = steps[base_label][1]
        for label, (_, macs) in steps.items():
            median = statistics.median(samples[(fw, label)])
            lines.append(
                f"| {fw} | {label} | {median * 1e3:.0f} | {median / base_time:.2f}x "
                f"| {macs / 1e6:.1f} | {macs / base_macs:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default="torch,tf")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--hold-strides", action="store_true", help="compute, do not apply, stride gradients"
    )
    args = parser.parse_args(argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = set(frameworks) - set(BUILDERS)
    if unknown:
        parser.error(f"--frameworks must be among {sorted(BUILDERS)}; received {sorted(unknown)}")
    print(f"# ResNet-18 training step, batch {args.batch_size}, {args.size}x{args.size}x3")
    print(header_block(environment(frameworks)))
    networks = {
        fw: BUILDERS[fw](args.batch_size, args.size, hold_strides=args.hold_strides)
        for fw in frameworks
    }
    samples = interleaved(steps_of(networks), args.repeats)
    print(table(networks, samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
