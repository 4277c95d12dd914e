"""The training command: one short epoch end to end, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffstride.examples import train


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_one_short_epoch_writes_metrics_and_plot(framework: str, tmp_path: Path) -> None:
    out = tmp_path / framework
    code = train.main(
        [
            "--framework",
            framework,
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--limit-train",
            "128",
            "--batch-size",
            "32",
            "--lambda-complexity",
            "0.1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [0, 1]
    final = metrics["final"]
    for key in ("train_loss", "test_accuracy", "strides", "macs"):
        assert key in final
    assert len(final["strides"]) == 4
    assert all(len(pair) == 2 for pair in final["strides"])
    assert final["strides"] != metrics["epochs"][0]["strides"]
    assert 0.0 <= final["test_accuracy"] <= 1.0
    assert (out / "strides.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_real_data_gives_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffstride.examples.train",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(tmp_path) in result.stderr
    assert "dataset-fashion-mnist" in result.stderr


def test_bad_strides_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--strides", "1,0.5,2"])
    assert "--strides must be >= 1" in capsys.readouterr().err


def test_seeds_make_runs_repeatable(tmp_path: Path) -> None:
    def final(name: str) -> dict:
        train.main(
            [
                "--epochs",
                "1",
                "--limit-train",
                "64",
                "--batch-size",
                "32",
                "--seed",
                "3",
                "--out",
                str(tmp_path / name),
                "--no-progress",
            ]
        )
        return json.loads((tmp_path / name / "metrics.json").read_text())["final"]

    first, second = final("a"), final("b")
    assert first["strides"] == second["strides"]
    assert first["train_loss"] == second["train_loss"]
