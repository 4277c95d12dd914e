"""The study command: its stride draws, its resumable runs, its summary, and a quick end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from diffstride.examples import datasets, study, train
from diffstride.models.torch import small_resnet

# --------------------------------------------------------------------------- draws


def test_draws_are_seeded_distinct_and_affordable() -> None:
    drawn = study.draw_strides(8, 0, max_macs=40e6)
    assert drawn == study.draw_strides(8, 0, max_macs=40e6)
    assert drawn[:3] == study.draw_strides(3, 0, max_macs=40e6)
    assert drawn != study.draw_strides(8, 1, max_macs=40e6)
    assert len(set(drawn)) == 8
    for strides in drawn:
        assert len(strides) == 5
        assert strides[1] == 1.0  # stage 1 has no projection: its stride is unused
        assert set(strides) <= {1.0, 2.0, 3.0}
        assert small_resnet(strides, pooling=None, in_channels=1).macs((64, 64)) <= 40e6


def test_draws_reject_impossible_requests() -> None:
    with pytest.raises(ValueError, match="count must be a positive integer; received count=0"):
        study.draw_strides(0, 0, max_macs=40e6)
    with pytest.raises(ValueError, match=r"only \d+ of the 81 .* max_macs=1e\+06"):
        study.draw_strides(3, 0, max_macs=1e6)


# --------------------------------------------------------------------------- fake runs


def fake_metrics(config: train.Config) -> dict[str, Any]:
    """What ``train.run`` returns, with accuracies that depend on the strides and the arm."""
    product = 1.0
    for s in config.strides or ():
        product *= s
    bonus = {"strided": 0.0, "spectral": 0.01}.get(config.pooling, 0.02)
    validation = 0.5 + 0.01 * product + bonus
    final = {
        "epoch": config.epochs,
        "test_accuracy": validation - 0.005,
        "validation_accuracy": validation,
        "macs": int(40e6 / product),
        "strides": [],
    }
    return {
        "config": {
            **vars(config),
            "strides": None if config.strides is None else list(config.strides),
        },
        "epochs": [final],
        "final": final,
        "seconds": 1.5,
    }


@pytest.fixture
def fake_train(monkeypatch: pytest.MonkeyPatch) -> list[train.Config]:
    """Replace ``train.run`` by a fake that writes ``metrics.json``; collect the configs."""
    calls: list[train.Config] = []

    def run(config: train.Config) -> dict[str, Any]:
        calls.append(config)
        metrics = fake_metrics(config)
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(train, "run", run)
    return calls


def test_study_runs_every_arm_at_every_init_and_writes_the_summary(
    tmp_path: Path, fake_train: list[train.Config]
) -> None:
    settings = study.Settings(inits=3, limit_train=1000, epochs=2)
    summary = study.run_study(tmp_path, settings)
    assert len(fake_train) == 3 * len(study.ARMS)
    assert {c.dataset for c in fake_train} == {"cluttered-fashion-mnist"}
    assert {c.validation for c in fake_train} == {100}
    assert {c.progress for c in fake_train} == {False}
    inits = study.draw_strides(3, 0, max_macs=study.FAMILIES["small-resnet"].max_draw_macs)
    assert [tuple(c.strides) for c in fake_train[:3]] == inits
    assert summary["inits"] == [list(s) for s in inits]
    # The budgeted arm takes the MACs of the strided run with the best *validation* accuracy.
    strided = [fake_metrics(c) for c in fake_train if c.pooling == "strided"]
    best = max(strided, key=lambda m: m["final"]["validation_accuracy"])
    budgeted = [c for c in fake_train if "budget" in Path(c.out).name]
    assert {c.macs_budget for c in budgeted} == {best["final"]["macs"] / 1e6}
    assert summary["best_strided"]["macs"] == best["final"]["macs"]
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert set(stored["arms"]) == {arm.name for arm in study.ARMS}
    assert stored["arms"]["strided"]["test_accuracy"]["worst"] == pytest.approx(
        min(m["final"]["test_accuracy"] for m in strided)
    )
    table = (tmp_path / "table.md").read_text()
    for arm in study.ARMS:
        assert f"| {arm.name}: " in table
    assert "Best strided configuration by validation" in table
    assert (tmp_path / "accuracy_vs_macs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sgd = [c for c in fake_train if c.optimizer == "sgd"]
    assert sgd
    assert {c.label_smoothing for c in sgd} == {0.1}


def test_study_resumes_without_rerunning(tmp_path: Path, fake_train: list[train.Config]) -> None:
    settings = study.Settings(inits=2, limit_train=500, epochs=1)
    arms = study.ARMS[:2]
    first = study.run_study(tmp_path, settings, arms)
    assert len(fake_train) == 4
    (tmp_path / "spectral-31221" / "metrics.json").unlink()
    second = study.run_study(tmp_path, settings, arms)
    assert len(fake_train) == 5  # only the deleted run ran again
    assert first["arms"] == second["arms"]


def test_study_refuses_runs_made_with_other_settings(
    tmp_path: Path, fake_train: list[train.Config]
) -> None:
    arms = study.ARMS[:1]
    study.run_study(tmp_path, study.Settings(inits=1, epochs=1), arms)
    with pytest.raises(study.StudyError, match=r"other settings \(epochs: \[1\] instead of \[2\]"):
        study.run_study(tmp_path, study.Settings(inits=1, epochs=2), arms)


def test_budget_arm_needs_its_source_first(tmp_path: Path, fake_train: list[train.Config]) -> None:
    budget = next(arm for arm in study.ARMS if arm.budget_from is not None)
    with pytest.raises(study.StudyError, match="must run before it"):
        study.run_study(tmp_path, study.Settings(inits=1), [budget])
    assert not fake_train


def test_command_line_arms_and_errors(
    tmp_path: Path, fake_train: list[train.Config], capsys: pytest.CaptureFixture[str]
) -> None:
    assert study.main(["--out", str(tmp_path), "--quick", "--arms", "strided,spectral"]) == 0
    assert [c.pooling for c in fake_train] == ["strided"] * 2 + ["spectral"] * 2
    assert {c.epochs for c in fake_train} == {study.QUICK.epochs}
    with pytest.raises(SystemExit):
        study.main(["--out", str(tmp_path), "--arms", "nope"])
    assert "--arms: unknown ['nope']" in capsys.readouterr().err
    assert study.main(["--out", str(tmp_path), "--quick", "--arms", "ds-inside-budget"]) == 2
    assert "must run before it" in capsys.readouterr().err


def test_missing_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = study.main(
        [
            "--out",
            str(tmp_path / "out"),
            "--quick",
            "--arms",
            "strided",
            "--data-dir",
            str(tmp_path),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "dataset-fashion-mnist" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- end to end


@pytest.mark.skipif(
    not datasets.FASHION_MNIST_DIR.is_dir(),
    reason=f"Fashion-MNIST is not installed in {datasets.FASHION_MNIST_DIR} "
    "(apt-get install dataset-fashion-mnist)",
)
def test_quick_study_end_to_end(tmp_path: Path) -> None:
    # About 25 s on 2 idle cores: every arm, 2 configurations, 1 epoch on 216 images.
    assert study.main(["--out", str(tmp_path), "--quick"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["arms"]) == {arm.name for arm in study.ARMS}
    for arm in summary["arms"].values():
        assert len(arm["runs"]) == study.QUICK.inits
        for run in arm["runs"]:
            assert 0.0 <= run["test_accuracy"] <= 1.0
            assert run["macs"] > 0
    metrics = json.loads((tmp_path / "strided-31221" / "metrics.json").read_text())
    assert metrics["dataset"]["test"] == study.QUICK.num_test
    assert metrics["dataset"]["name"] == "cluttered-fashion-mnist"
    assert datasets.CLUTTERED_TEST == 10000  # restored after the study
    assert (tmp_path / "table.md").is_file()
    assert (tmp_path / "accuracy_vs_macs.png").is_file()


def test_a_field_missing_from_a_stored_run_counts_as_its_default(
    tmp_path: Path, fake_train: list[train.Config]
) -> None:
    # A run stored before a Config field existed ran with that field's default.
    config = train.Config(dataset=study.DATASET, out=str(tmp_path / "run"), progress=False)
    stored = fake_metrics(config)
    del stored["config"]["label_smoothing"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(stored))
    assert study._run(config)["final"] == stored["final"]
    assert not fake_train
    smoothed = train.Config(**{**vars(config), "label_smoothing": 0.1})
    with pytest.raises(study.StudyError, match="label_smoothing"):
        study._run(smoothed)


def test_schedule_is_passed_only_where_the_command_has_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert study._schedule(None) == {}
    has_it = "lr_schedule" in train.Config.__dataclass_fields__
    assert study._schedule("cosine") == ({"lr_schedule": "cosine"} if has_it else {})
    assert ("no lr_schedule" in capsys.readouterr().err) != has_it


def test_options_a_run_does_not_use_do_not_make_it_stale(
    tmp_path: Path, fake_train: list[train.Config]
) -> None:
    # A strided run stored before converted models defaulted to the inside ramp and pooling
    # first ran the same network: it is read back, not redone.
    out = str(tmp_path / "run")
    stored = train.Config(dataset=study.DATASET, pooling="strided", ramp="outside", out=out)
    stored = train.Config(**{**vars(stored), "pool_first": False})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(fake_metrics(stored)))
    now = train.Config(**{**vars(stored), "ramp": "inside", "pool_first": True})
    assert study._run(now)["final"] == fake_metrics(stored)["final"]
    assert not fake_train
    with pytest.raises(study.StudyError, match=r"\(lr:"):
        study._run(train.Config(**{**vars(stored), "lr": 0.1}))
