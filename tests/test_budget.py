"""The MAC budget: a differentiable MAC estimate that equals the counted MACs, its penalty,
the pool-first models, and the training command's options."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from diffstride.examples import train

CONFIGS = [
    [1, 1, 2, 2, 2],
    [1, 1, 3, 2, 3],
    [3, 2, 1, 3, 1],
    [2, 3, 3, 1, 2],
    [1.4, 2.7, 1, 2.2, 1],
]


@pytest.mark.parametrize(
    ("ramp", "pool_first"), list(itertools.product(["outside", "inside"], [False, True]))
)
def test_torch_estimate_equals_the_counted_macs_and_has_j_gradients(
    ramp: str, pool_first: bool
) -> None:
    import torch

    from diffstride.models.torch import small_resnet

    for strides in CONFIGS:
        model = small_resnet(
            strides, pooling="diffstride", ramp=ramp, pool_first=pool_first, in_channels=1
        )
        estimate = model.macs_estimate((48, 48))
        assert float(estimate.detach()) == pytest.approx(model.macs((48, 48)), rel=1e-6)
        estimate.backward()
        grads = [layer.strides.grad for layer in model.diffstride_layers()]
        assert all(torch.all(g < 0) for g in grads), "larger strides must cost less"
        if ramp == "outside":
            continue  # later layers keep ~2R more pixels: sizes do not scale as J assumes
        # The stem layer's gradient is -(the MACs its area scales) / S: all but the dense
        # layer after the global mean and, in the original's order, the stem convolution.
        first = model.diffstride_layers()[0]
        dense, stem = 48 * 10, 3 * 3 * 1 * 16 * 48 * 48
        later = model.macs((48, 48)) - dense - (0 if pool_first else stem)
        s_h = first.current_strides()[0]
        # torch measures how each operation's cost follows the layer's area (a probe); at
        # maps of a few pixels the even-size rounding bends that power away from J's 1.
        assert float(grads[0][0]) == pytest.approx(-later / s_h, rel=2e-2)


def test_keras_estimate_agrees_with_torch() -> None:
    import tensorflow as tf

    from diffstride.models import keras as keras_models
    from diffstride.models.torch import small_resnet

    size = 144  # maps of many pixels: rounding leaves torch's measured powers at J's 1
    for strides, pool_first in itertools.product(CONFIGS, [False, True]):
        keras_model = keras_models.small_resnet(
            strides,
            input_shape=(size, size, 1),
            pooling="diffstride",
            ramp="inside",
            pool_first=pool_first,
        )
        torch_model = small_resnet(
            strides, pooling="diffstride", ramp="inside", pool_first=pool_first, in_channels=1
        )
        reference = keras_models.macs_reference(keras_model)
        layers = keras_models.diffstride_layers(keras_model)
        with tf.GradientTape() as tape:
            estimate = keras_models.macs_estimate(keras_model, reference=reference)
        grads = tape.gradient(estimate, [layer.strides for layer in layers])
        assert float(estimate) == pytest.approx(torch_model.macs((size, size)), rel=1e-6)
        torch_model.macs_estimate((size, size)).backward()
        for grad, layer in zip(grads, torch_model.diffstride_layers(), strict=True):
            # Keras relaxes with J's powers, torch with measured ones (see above).
            np.testing.assert_allclose(grad.numpy(), layer.strides.grad.numpy(), rtol=1e-2)


def test_penalty_is_zero_under_the_budget_and_the_excess_above() -> None:
    from diffstride.models.torch import macs_penalty, small_resnet

    model = small_resnet(pooling="diffstride", ramp="inside", in_channels=1)
    macs = model.macs((28, 28))
    assert float(macs_penalty(model, (28, 28), macs * 1.01)) == 0.0
    assert float(macs_penalty(model, (28, 28), macs / 2)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("budget", "error"),
    [(0.0, ValueError), (-5.0, ValueError), (float("nan"), ValueError), ("1e6", TypeError)],
)
def test_bad_budgets_name_the_argument(budget: object, error: type) -> None:
    from diffstride.models.torch import macs_penalty, small_resnet

    model = small_resnet(pooling="diffstride", in_channels=1)
    with pytest.raises(error, match="macs_budget="):
        macs_penalty(model, (28, 28), budget)  # type: ignore[arg-type]


@pytest.mark.parametrize("argv", [["--macs-budget", "0"], ["--macs-budget", "-3"]])
def test_training_command_rejects_a_bad_budget(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(argv)
    assert "macs_budget=" in capsys.readouterr().err


def test_training_command_rejects_a_bad_ramp(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--ramp", "middle"])
    assert "middle" in capsys.readouterr().err


def test_resnet18_inside_costs_what_spectral_pooling_costs() -> None:
    from diffstride.models.torch import resnet18

    strides = [1, 1, 2, 2, 2]
    inside = resnet18(strides, pooling="diffstride", ramp="inside").macs((32, 32))
    spectral = resnet18(strides, pooling="spectral").macs((32, 32))
    assert abs(inside / spectral - 1) <= 0.05
    first = resnet18(strides, pooling="diffstride", ramp="inside", pool_first=True).macs((32, 32))
    strided = resnet18(strides, pooling=None).macs((32, 32))
    assert first == strided


@pytest.mark.parametrize("framework", ["torch", "tf"])
def test_budget_warmup_validation_and_sgd_in_the_training_command(
    framework: str, tmp_path: Path
) -> None:
    out = tmp_path / framework
    code = train.main(
        [
            *("--framework", framework, "--epochs", "2", "--limit-train", "160"),
            *("--batch-size", "32", "--ramp", "inside", "--smoothness-factor", "2"),
            *("--macs-budget", "2", "--stride-warmup", "1", "--validation", "32"),
            *("--optimizer", "sgd", "--lr", "0.05", "--label-smoothing", "0.1"),
            *("--lr-schedule", "cosine"),
            *("--out", str(out), "--no-progress"),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert epochs[1]["strides"] == epochs[0]["strides"], "strides must be frozen in warm-up"
    assert epochs[2]["strides"] != epochs[1]["strides"]
    assert epochs[2]["macs"] < epochs[1]["macs"], "the budget pushes the MACs down"
    assert [e["test_accuracy"] is None for e in epochs] == [True, True, False]
    assert all(e["validation_accuracy"] is not None for e in epochs)
    final = metrics["final"]
    assert final["macs_budget"] == 2e6
    assert final["budget_miss"] == pytest.approx(final["macs"] / 2e6 - 1, abs=1e-4)
    assert metrics["dataset"]["train"] == 128


def test_training_command_rejects_a_bad_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train.parse_args(["--lr-schedule", "step"])
    assert "step" in capsys.readouterr().err
    with pytest.raises(ValueError, match="lr_schedule='step'"):
        train.Config(lr_schedule="step")
