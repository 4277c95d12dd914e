"""Scaling out: torch under torchrun (2 CPU processes, gloo), Keras under MirroredStrategy
(2 logical CPU devices) and the jax data-parallel example (2 host devices).

Each run is a subprocess: torchrun starts its own processes, and the logical devices (TF) and
``XLA_FLAGS`` (jax) must be set before the framework starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from diffstride.examples import distributed, train

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--dataset",
    "synthetic",
    "--epochs",
    "1",
    "--limit-train",
    "64",
    "--batch-size",
    "16",
    "--lambda-complexity",
    "0.1",
    "--no-progress",
]


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_torchrun_two_processes_share_identical_strides(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--standalone", "-m", "diffstride.examples.train", "--framework", "torch"]
    result = _run([*command, *TINY, "--out", str(out)])
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "metrics.json",
        "strides.png",
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["dataset"]["train"] == 64
    first, second = metrics["rank_strides"]
    assert first == second  # bitwise: averaged gradients, size-only projection
    assert np.allclose(first, metrics["final"]["strides"], atol=1e-5)
    assert metrics["final"]["strides"] != metrics["epochs"][0]["strides"]
    assert result.stdout.count("wrote ") == 1  # rank 0 alone prints the outputs


MIRRORED = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from diffstride.examples import train
    sys.exit(train.main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_keras_mirrored_strategy_on_two_logical_devices(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    out = tmp_path / "run"
    tiny = [*TINY]
    tiny[tiny.index("--batch-size") + 1] = "32"  # two steps of one shape: one trace
    result = _run(
        [
            sys.executable,
            "-c",
            MIRRORED,
            "--framework",
            "tf",
            "--distribute",
            "mirrored",
            *tiny,
            "--out",
            str(out),
        ]
    )
    assert "MirroredStrategy: 2 replicas" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["distribute"] == "mirrored"
    assert metrics["world_size"] == 1
    assert metrics["final"]["strides"] != metrics["epochs"][0]["strides"]
    assert np.isfinite(metrics["final"]["train_loss"])


def test_jax_data_parallel_example_moves_the_strides() -> None:
    pytest.importorskip("jax")
    result = _run(
        [
            sys.executable,
            "-m",
            "diffstride.examples.jax_data_parallel",
            "--epochs",
            "2",
            "--limit-train",
            "128",
        ],
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert "2 devices" in result.stdout
    assert "batch on 2 devices" in result.stdout
    final = json.loads(result.stdout.split("final strides ")[-1])
    assert len(final) == 2
    assert final != [[2.0, 2.0], [2.0, 2.0]]


def test_context_from_torchrun_environment() -> None:
    assert distributed.from_env({}) == distributed.SINGLE
    assert distributed.from_env({"WORLD_SIZE": "1", "RANK": "0"}) == distributed.SINGLE
    context = distributed.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (context.rank, context.world_size, context.local_rank) == (3, 4, 1)
    assert context.active
    assert not context.is_main
    with pytest.raises(ValueError, match="RANK"):
        distributed.from_env({"WORLD_SIZE": "2", "RANK": "2"})


def test_shards_are_disjoint_equal_and_cover_all_but_a_remainder() -> None:
    x, y = np.arange(11)[:, None], np.arange(11)
    shards = [distributed.shard(x, y, distributed.Context(r, 3, r)) for r in range(3)]
    assert [len(s[1]) for s in shards] == [3, 3, 3]
    taken = np.concatenate([s[1] for s in shards])
    assert len(set(taken.tolist())) == 9
    assert all((s[0][:, 0] == s[1]).all() for s in shards)
    assert distributed.shard(x, y, distributed.SINGLE)[1] is y
    with pytest.raises(ValueError, match="cannot be shared"):
        distributed.shard(x[:1], y[:1], distributed.Context(0, 2, 0))


def test_mirrored_is_for_keras_and_torchrun_for_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="framework='tf'"):
        train.Config(framework="torch", distribute="mirrored")
    with pytest.raises(ValueError, match="distribute must be one of"):
        train.Config(framework="tf", distribute="multiworker")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="torchrun"):
        train.run(train.Config(framework="tf", out=str(tmp_path)))
