"""MAC budget overhead per training step: ``MacsEstimator.penalty`` against a step without it.

    python benchmarks/macs_overhead.py [--repeats 50] [--naive-repeats 5] [--warmup 2] [--quick]
        [--networks resnet18,mobilenet_v3_small,small_resnet] [--batch-size 32] [--size 64]

A training step can hold its network to a MAC budget without a second forward pass: a
``diffstride.torch.MacsEstimator``, built once (a few forward passes), reads the sizes the
step's own forward pass saw through hooks on the DiffStride layers, and
``estimator.penalty(budget)`` is a small differentiable function of the strides. This script
times one SGD training step (``zero_grad``, forward, cross-entropy, backward,
``optimizer.step``; torch eager on the CPU) of each network three ways:

* (a) ``plain``: the network's step without any MAC term;
* (b) ``estimator``: the loss plus ``estimator.penalty(budget)``;
* (c) ``rebuilt``: the loss plus ``diffstride.torch.macs_penalty(model, x, budget)``, the
  naive way, for contrast: it builds a new estimator every step (one counted forward pass and
  one probe pass per stride group, on the step's batch).

Networks: torchvision's ``resnet18`` and ``mobilenet_v3_small`` (10 classes) converted by
``diffstride.torch.convert(model, x, ramp="inside", pool_first=True)`` on ``3 x size x size``
inputs, and the project's ``small_resnet`` with DiffStride layers (``ramp="inside"``,
``pool_first=True``) on ``1 x size x size``. The budget is half the network's MACs, so the
penalty is active and its gradient reaches every stride. Each variant trains its own copy of
the same weights; the strides' learning rate is 0 (their gradients and updates are still
computed), because the penalty would otherwise shrink its network during the run and flatter
(b).

After ``--warmup`` untimed steps of (a) and (b) and one of (c), the steps are interleaved
round-robin in this one process (``_harness.interleaved``, garbage collector paused), network after
network, variant after variant: first ``--naive-repeats`` rounds of all three variants, then
``--repeats`` rounds of (a) and (b) only, because (c) takes several times a step and its ratio
needs no precision. The table gives the medians: (a) and (b) over all their rounds, (b)/(a),
the spread of (b)/(a) over the rounds (each round's (b) over the same round's (a)), and (c)/(a)
against (a) of the rounds (c) ran in. The step's noise is larger than the estimator, so the
last columns time what it adds without that noise: ``estimator.penalty(budget)`` and its
backward alone, after a forward pass (median of ``--calls`` calls; the hooks, a few
microseconds per layer and forward, are in (b) only), in milliseconds and as a share of (a).
``build s`` is the one-time construction of the ``MacsEstimator``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Before diffstride and torch: puts an uninstalled checkout on the path.
from _harness import environment, header_block, interleaved

NETWORKS = ("resnet18", "mobilenet_v3_small", "small_resnet")
VARIANTS = ("plain", "estimator", "rebuilt")
CLASSES = 10


@dataclass
class Case:
    """One network: its three training steps and what the table needs besides their times."""

    steps: dict[str, Callable[[], float]]
    macs: int
    groups: int
    build_s: float
    penalty_backward: Callable[[], Any]


def base_network(name: str) -> tuple[Any, int]:
    """The network, before conversion, and its input channels."""
    if name == "small_resnet":
        from diffstride.models.torch import small_resnet

        model = small_resnet(pooling="diffstride", ramp="inside", pool_first=True, in_channels=1)
        return model, 1
    import torchvision

    return getattr(torchvision.models, name)(num_classes=CLASSES), 3


def training_step(model: Any, x: Any, y: Any, penalty: Callable[[], Any] | None) -> Callable:
    import torch

    strides = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] == "strides"]
    weights = [p for n, p in model.named_parameters() if n.rsplit(".", 1)[-1] != "strides"]
    optimizer = torch.optim.SGD(
        [{"params": weights}, {"params": strides, "lr": 0.0}], lr=1e-3, momentum=0.9
    )

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if penalty is not None:
            loss = loss + penalty()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def build_case(name: str, batch: int, size: int) -> Case:
    import torch

    from diffstride.torch import MacsEstimator, convert, macs, macs_penalty

    torch.manual_seed(0)
    base, channels = base_network(name)
    x = torch.randn(batch, channels, size, size)
    y = torch.randint(0, CLASSES, (batch,))
    # small_resnet has its DiffStride layers already; the torchvision networks are converted.
    model = base if name == "small_resnet" else convert(base, x, ramp="inside", pool_first=True)
    model.train()
    count = macs(model, x)
    budget = count / 2
    plain, with_estimator, rebuilt = (copy.deepcopy(model) for _ in VARIANTS)
    start = time.perf_counter()
    estimator = MacsEstimator(with_estimator, x)
    build_s = time.perf_counter() - start
    steps = {
        "plain": training_step(plain, x, y, None),
        "estimator": training_step(with_estimator, x, y, lambda: estimator.penalty(budget)),
        "rebuilt": training_step(rebuilt, x, y, lambda: macs_penalty(rebuilt, x, budget)),
    }
    return Case(
        steps=steps,
        macs=count,
        groups=sum(n.rsplit(".", 1)[-1] == "strides" for n, _ in model.named_parameters()),
        build_s=build_s,
        penalty_backward=lambda: estimator.penalty(budget).backward(),
    )


def time_alone(fn: Callable[[], Any], calls: int) -> float:
    """Median seconds of ``calls`` calls in a row."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def table(cases: dict[str, Case], naive: dict, samples: dict, alone: dict[str, float]) -> str:
    lines = [
        "| network | MMACs/image | stride groups | (a) plain ms | (b) + estimator.penalty ms "
        "| (c) + macs_penalty ms | (b)/(a) | (b)/(a) per round, q1-q3 | (c)/(a) "
        "| penalty + backward alone ms | % of (a) | build s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, case in cases.items():
        a, b = (naive[(name, label)] + samples[(name, label)] for label in VARIANTS[:2])
        ma, mb = statistics.median(a), statistics.median(b)
        mc = statistics.median(naive[(name, "rebuilt")])
        rounds = [bi / ai for ai, bi in zip(a, b, strict=True)]
        q1, _, q3 = statistics.quantiles(rounds, n=4, method="inclusive")
        lines.append(
            f"| {name} | {case.macs / 1e6:.1f} | {case.groups} | {ma * 1e3:.0f} | {mb * 1e3:.0f} "
            f"| {mc * 1e3:.0f} | {mb / ma:.3f} | {q1:.3f}-{q3:.3f} "
            f"| {mc / statistics.median(naive[(name, 'plain')]):.2f} "
            f"| {alone[name] * 1e3:.2f} | {100 * alone[name] / ma:.2f} % | {case.build_s:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated subset")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None, help="rounds of (a), (b) (default 50)")
    parser.add_argument(
        "--naive-repeats", type=int, default=None, help="rounds with (c) (default 5)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed (a), (b) steps (default 2)"
    )
    parser.add_argument("--calls", type=int, default=50, help="timed penalty+backward calls")
    parser.add_argument("--quick", action="store_true", help="smoke check: few rounds")
    args = parser.parse_args(argv)
    names = [n for n in args.networks.split(",") if n]
    unknown = set(names) - set(NETWORKS)
    if unknown:
        parser.error(f"--networks must be among {list(NETWORKS)}; received {sorted(unknown)}")
    repeats = args.repeats or (5 if args.quick else 50)
    naive_repeats = args.naive_repeats or (1 if args.quick else 5)
    warmup = args.warmup or (1 if args.quick else 2)

    started = time.perf_counter()
    print(
        f"# MAC budget overhead per training step, batch {args.batch_size}, "
        f"{args.size}x{args.size}, SGD, torch eager"
    )
    print(header_block(environment(["torch"])))
    cases = {name: build_case(name, args.batch_size, args.size) for name in names}
    for case in cases.values():  # interleaved() adds one warm-up step of its own, (c)'s only one
        for label in VARIANTS[:2]:
            for _ in range(warmup - 1):
                case.steps[label]()
    naive = interleaved(
        {(name, v): case.steps[v] for name, case in cases.items() for v in VARIANTS}, naive_repeats
    )
    samples = interleaved(
        {(name, v): case.steps[v] for name, case in cases.items() for v in VARIANTS[:2]}, repeats
    )
    alone = {name: time_alone(case.penalty_backward, args.calls) for name, case in cases.items()}
    print(
        f"# {naive_repeats} interleaved rounds of (a), (b), (c), then {repeats} of (a), (b), "
        f"after {warmup} warm-up steps ((c): 1); medians; "
        f"penalty + backward alone: median of {args.calls} calls"
    )
    print(table(cases, naive, samples, alone))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"# total {time.perf_counter() - started:.0f} s; loadavg at end: {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
