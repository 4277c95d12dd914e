"""Faults lose nothing: the training command's checkpoints, ``--resume`` after ``kill -9``,
a restart under ``torchrun``, and the refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from diffstride.examples import study, train
from diffstride.examples.train import checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    *("--dataset", "synthetic", "--limit-train", "96", "--limit-test", "64"),
    *("--batch-size", "32", "--lambda-complexity", "0.1", "--no-progress"),
]

#: Runs the command, and SIGKILLs the process once the checkpoint of epoch ``argv[1]`` is on
#: disk: the fault, with nothing after it flushed or closed.
KILLED_AFTER = textwrap.dedent(
    """
    import os, signal, sys
    from diffstride.examples import train
    from diffstride.examples.train import checkpoint

    last, save = int(sys.argv[1]), checkpoint.save

    def save_then_die(path, state):
        save(path, state)
        first_start = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if state["epoch"] == last and first_start:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint.save = save_then_die
    sys.exit(train.main(sys.argv[2:]))
    """
)


def _environment() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    return {**environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}


def _kill_after(epoch: int, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", KILLED_AFTER, str(epoch), *argv],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _assert_same_run(resumed: dict, reference: dict) -> None:
    """Every epoch's loss, accuracies, strides, sizes and MACs within 1e-4."""
    assert len(resumed["epochs"]) == len(reference["epochs"])
    for got, want in zip(resumed["epochs"], reference["epochs"], strict=True):
        for key in ("train_loss", "train_accuracy", "test_accuracy", "validation_accuracy"):
            if want[key] is None:
                assert got[key] is None
            else:
                assert got[key] == pytest.approx(want[key], abs=1e-4), (got["epoch"], key)
        np.testing.assert_allclose(got["strides"], want["strides"], atol=1e-4)
        assert got["output_sizes"] == want["output_sizes"]
        assert got["macs"] == want["macs"]
    np.testing.assert_allclose(
        resumed["final"]["strides"], reference["final"]["strides"], atol=1e-4
    )


@pytest.mark.parametrize(
    ("framework", "extra"),
    [("torch", ["--lr-schedule", "cosine"]), ("tf", ["--optimizer", "sgd", "--lr", "0.05"])],
)
def test_a_run_killed_after_an_epoch_resumes_to_the_same_end(
    framework: str, extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if framework == "tf":
        pytest.importorskip("tensorflow")
    argv = ["--framework", framework, "--epochs", "3", *TINY, *extra]
    assert train.main([*argv, "--out", str(tmp_path / "whole")]) == 0
    reference = _metrics(tmp_path / "whole")

    killed = tmp_path / "killed"
    fault = _kill_after(1, [*argv, "--out", str(killed)])
    assert fault.returncode == -signal.SIGKILL, fault.stderr[-3000:]
    assert not (killed / "metrics.json").exists()
    assert checkpoint.read_header(killed / checkpoint.NAME, "epoch") == {"epoch": 1}

    capsys.readouterr()
    assert train.main([*argv, "--out", str(killed), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resumed from" in printed
    assert "after epoch 1 of 3" in printed
    assert "epoch 1:" not in printed  # epoch 1 was not trained again
    assert "epoch 2:" in printed
    _assert_same_run(_metrics(killed), reference)
    assert not (killed / checkpoint.NAME).exists()


def test_a_failed_write_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / checkpoint.NAME
    first = {"epoch": 1, "weights": np.arange(4.0), "groups": {0: (0.9, 0.999)}}
    checkpoint.save(path, first)

    def disk_full(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, {"epoch": 2, "weights": np.zeros(4)})
    monkeypatch.undo()
    kept = checkpoint.load(path)
    assert kept["epoch"] == 1
    np.testing.assert_array_equal(kept["weights"], first["weights"])
    assert kept["groups"] == {0: (0.9, 0.999)}  # int keys and tuples come back as they were
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.NAME]  # no temp file


def test_a_torn_or_foreign_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / checkpoint.NAME
    path.write_bytes(b"PK\x03\x04 half a zip file")
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(path)
    np.savez(path, weights=np.arange(3))
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.read_header(path, "epoch")


class CrashError(Exception):
    """Stands for Ctrl-C or a crash in the middle of a run."""


def _interrupt_after(epoch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the run fail once the checkpoint of ``epoch`` is written."""
    save = checkpoint.save

    def save_then_fail(path, state):
        save(path, state)
        if state["epoch"] == epoch:
            raise CrashError

    monkeypatch.setattr(checkpoint, "save", save_then_fail)


def test_resume_refuses_a_checkpoint_of_other_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = [*TINY, "--epochs", "3", "--out", str(out), "--resume"]
    _interrupt_after(2, monkeypatch)
    with pytest.raises(CrashError):
        train.main(argv)
    monkeypatch.undo()
    assert "no checkpoint at" in capsys.readouterr().out  # --resume on nothing: afresh

    assert train.main([*argv, "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume: ")
    assert "--lr 0.001 there, 0.01 here" in err
    assert "Traceback" not in err
    assert train.main([*argv, "--lr-schedule", "cosine"]) == 2
    assert "--lr-schedule 'constant' there, 'cosine' here" in capsys.readouterr().err
    assert train.main([*argv, "--epochs", "4", "--lr-schedule", "cosine"]) == 2
    assert "a cosine schedule spans the whole run" in capsys.readouterr().err
    assert train.main([*argv, "--epochs", "1"]) == 2
    assert "has done 2 epochs; received --epochs 1, fewer" in capsys.readouterr().err
    assert checkpoint.read_header(out / checkpoint.NAME, "epoch") == {"epoch": 2}  # untouched

    # A constant rate: --epochs may grow; the epochs done are not trained again.
    assert train.main([*argv, "--epochs", "4"]) == 0
    printed = capsys.readouterr().out
    assert "after epoch 2 of 4" in printed
    assert "epoch 2:" not in printed
    assert "epoch 3:" in printed
    assert [e["epoch"] for e in _metrics(out)["epochs"]] == [0, 1, 2, 3, 4]
    assert not (out / checkpoint.NAME).exists()  # a finished run is its metrics


def test_the_study_resumes_its_runs_and_stops_on_a_foreign_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "strided-31221"
    config = train.Config(
        epochs=2, limit_train=64, limit_test=32, progress=False, out=str(out), resume=True
    )
    _interrupt_after(1, monkeypatch)
    with pytest.raises(CrashError):
        study._run(config)
    monkeypatch.undo()
    other = train.Config(**{**vars(config), "lr": 0.01})
    with pytest.raises(study.StudyError, match=r"strided-31221: --resume: .*--lr 0.001 there"):
        study._run(other)
    capsys.readouterr()
    assert study._run(config)["final"]["epoch"] == 2
    assert "after epoch 1 of 2" in capsys.readouterr().out


def test_the_study_asks_every_run_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs: list[train.Config] = []

    def run(config: train.Config) -> dict:
        configs.append(config)
        raise CrashError

    monkeypatch.setattr(train, "run", run)
    monkeypatch.setattr(study, "draw_strides", lambda *args, **kwargs: [(2.0, 1.0, 2.0, 2.0, 2.0)])
    with pytest.raises(CrashError):
        study.run_study(tmp_path, study.Settings(inits=1), study.ARMS[:1])
    assert [c.resume for c in configs] == [True]


@pytest.mark.slow
def test_torchrun_restarts_a_killed_job_from_its_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    argv = ["--framework", "torch", "--epochs", "2", *TINY]
    assert train.main([*argv, "--out", str(tmp_path / "whole")]) == 0
    script = tmp_path / "killed_after.py"
    script.write_text(KILLED_AFTER)
    out = tmp_path / "restarted"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "1", "--max-restarts", "1", str(script), "1"]
    result = subprocess.run(
        [*command, *argv, "--out", str(out)],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "torchrun restart 1: resumed from" in result.stdout
    _assert_same_run(_metrics(out), _metrics(tmp_path / "whole"))
