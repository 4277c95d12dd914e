"""The training command's package: the parser built from Config, the test-set size passed
down, and the trainer classes used on their own."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest

from diffstride.examples import datasets, distributed, train
from diffstride.examples.train.config import Config, build_parser


def test_every_config_field_is_an_option_with_its_help_and_default() -> None:
    parser = build_parser()
    by_dest = {action.dest: action for action in parser._actions if action.dest != "help"}
    assert set(by_dest) == {f.name for f in fields(Config)}
    for item in fields(Config):
        action = by_dest[item.name]
        assert action.help.startswith(item.metadata["help"])
        assert action.default == item.default
        if item.metadata["choices"] is not None:
            assert tuple(action.choices) == item.metadata["choices"]
    assert train.parse_args([]) == Config()


def test_choices_come_from_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--optimizer", "lamb"])
    assert exit_info.value.code == 2
    assert "argument --optimizer: invalid choice: 'lamb'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"pooling must be one of .*received pooling=.max."):
        Config(pooling="max")
    with pytest.raises(ValueError, match=r"framework must be one of .*received framework=.jax."):
        Config(framework="jax")


def test_limit_test_is_passed_down_to_the_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert train.parse_args(["--limit-test", "12"]).limit_test == 12
    with pytest.raises(SystemExit):
        train.parse_args(["--limit-test", "0"])
    assert "limit_test must be None or an int >= 1; received limit_test=0" in (
        capsys.readouterr().err
    )
    assert datasets.load("synthetic", limit_train=8, limit_test=5).x_test.shape[0] == 5
    shapes = datasets.load("cluttered-shapes", limit_train=4, limit_test=3)
    assert shapes.x_test.shape[0] == 3
    assert datasets.CLUTTERED_TEST == 10000  # no module global was swapped


def test_importing_the_command_imports_no_framework() -> None:
    code = (
        "import sys\nimport diffstride.examples.train\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_torch_trainer_works_on_its_own() -> None:
    pytest.importorskip("torch")
    from diffstride.examples.train.trainers.torch import TorchTrainer

    dataset = datasets.load("synthetic", limit_train=16, limit_test=8)
    trainer = TorchTrainer(Config(batch_size=8, lambda_complexity=0.1), dataset)
    before = trainer.strides()
    loss, accuracy = trainer.train_step(dataset.x_train[:8], dataset.y_train[:8], True)
    assert np.isfinite(loss)
    assert 0.0 <= accuracy <= 1.0
    assert trainer.strides() != before
    assert len(trainer.output_sizes((32, 32))) == len(before) == 4
    assert trainer.macs((32, 32)) > 0
    assert 0.0 <= trainer.accuracy(dataset.x_test, dataset.y_test, 4) <= 1.0
    assert trainer.context == distributed.SINGLE


def test_the_training_docs_list_every_option() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    rows = {line.split("`")[1].split()[0] for line in docs.splitlines() if line.startswith("| `--")}
    flags = {
        flag
        for action in build_parser()._actions
        for flag in action.option_strings
        if flag not in ("-h", "--help", "--no-pool-first")
    }
    assert flags - rows == set()
