"""The demo: three runs from one poor start, the budgeted one held to the strided one's MACs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffstride.examples import demo


def test_demo_compares_three_runs_at_the_strided_networks_macs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "TRAIN_IMAGES", 96)
    monkeypatch.setattr(demo, "TEST_IMAGES", 60)
    monkeypatch.setattr(demo.datasets, "FASHION_MNIST_DIR", tmp_path / "not-installed")
    assert demo.main(["--epochs", "1", "--no-progress", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    runs = [label for label, _ in demo.RUNS]
    table = printed[printed.index("From strides 2-1-2-3-3") :]
    assert all(label in table for label in runs)
    assert "ran on generated shapes" in printed  # says it ran on the fallback
    assert (tmp_path / "demo.png").stat().st_size > 0
    metrics = {
        path.parent.name: json.loads(path.read_text()) for path in tmp_path.glob("*/metrics.json")
    }
    assert sorted(metrics) == ["DiffStride", "fixed-spectral-pooling", "strided-convolutions"]
    strided = metrics["strided-convolutions"]["final"]["macs"]
    learned = metrics["DiffStride"]
    assert learned["final"]["macs_budget"] == pytest.approx(strided)
    assert learned["config"]["strides"] == list(demo.POOR_START)
    assert (learned["config"]["ramp"], learned["config"]["pool_first"]) == ("inside", True)


def test_demo_refuses_a_bad_epoch_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "0"])
    assert "--epochs must be >= 1; received 0" in capsys.readouterr().err
