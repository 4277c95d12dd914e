"""Export: an eval-mode model with DiffStride layers (default ``method``) exports, and the
artefact reproduces eager outputs.

torch: ``torch.export.export``, ``torch.onnx.export`` (``dynamo=True`` and the legacy
TorchScript-based exporter, both run with onnxruntime) and ``torch.jit.trace`` (saved and
loaded). Under export the crop is fixed from the stride values held then (read from the live
parameter, not the exporter's fake stand-in) and the layers record their GEMM formulation, so
the strides are set to trained-looking values first, and eager runs the FFTs (``auto``).
Keras: ``model.export`` (SavedModel) reloaded with ``tf.saved_model.load``.
"""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from diffstride.torch import DiffStride, DiffStride1d, FixedSpectralPooling  # noqa: E402

STRIDES = (2.3, 1.7)  # "trained" values, set after construction: the crop must follow them


class _Net(nn.Module):
    """Conv2d -> DiffStride -> FixedSpectralPooling -> DiffStride1d over the flattened rows."""

    def __init__(self, data_format: str) -> None:
        super().__init__()
        self.channels_last = data_format == "channels_last"
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = DiffStride((2.0, 2.0), data_format=data_format)
        self.fixed = FixedSpectralPooling(2, data_format=data_format)
        self.pool1d = DiffStride1d(2.0)
        with torch.no_grad():
            self.pool.strides.copy_(torch.tensor(STRIDES))
            self.pool1d.strides.fill_(2.6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.channels_last:
            y = y.permute(0, 2, 3, 1)
        y = self.fixed(self.pool(y))
        if self.channels_last:
            y = y.permute(0, 3, 1, 2)
        return self.pool1d(y.flatten(2))


def _model_and_input(data_format: str = "channels_first") -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return _Net(data_format).eval(), torch.randn(2, 3, 40, 36)


def _close(actual, expected) -> None:
    np.testing.assert_allclose(np.asarray(actual), expected.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("data_format", "strict"),
    [("channels_first", False), ("channels_last", False), ("channels_first", True)],
)
def test_torch_export(data_format, strict):
    model, x = _model_and_input(data_format)
    expected = model(x)
    program = torch.export.export(model, (x,), strict=strict)
    _close(program.module()(x).detach(), expected)
    # The stride parameter is exported (the masks follow it); the model is left as it was.
    assert "pool.strides" in dict(program.named_parameters())
    assert type(model.pool.strides) is nn.Parameter
    assert model.pool.current_strides() == pytest.approx(STRIDES)
    _close(model(x).detach(), expected)


def test_torch_export_dynamic_batch():
    model, x = _model_and_input()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    x5 = torch.randn(5, *x.shape[1:])
    _close(program.module()(x5).detach(), model(x5))


def test_torch_export_follows_copied_and_moved_models():
    """The live parameter the crop is read from is the model's own after deepcopy, .to()
    (which may replace the parameter) and load_state_dict(assign=True)."""
    model, x = _model_and_input()
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        other = copy.deepcopy(model).double()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
    assert other.pool.strides is not model.pool.strides
    with torch.no_grad():
        other.pool.strides.copy_(torch.tensor((3.1, 1.2), dtype=torch.float64))
    assert other.pool.output_size((40, 36)) != model.pool.output_size((40, 36))
    expected = other(x.double())
    _close(torch.export.export(other, (x.double(),)).module()(x.double()).detach(), expected)

    state = {k: v.clone() for k, v in other.float().state_dict().items()}
    model.load_state_dict(state, assign=True)
    _close(torch.export.export(model, (x,)).module()(x).detach(), model(x))


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_onnx_export_runs_in_onnxruntime(dynamo, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    model, x = _model_and_input()
    path = tmp_path / "model.onnx"
    if dynamo:
        batch = {"dynamic_shapes": ({0: torch.export.Dim("batch", min=1, max=64)},)}
    else:
        batch = {"dynamic_axes": {"x": {0: "batch"}}}
    torch.onnx.export(model, (x,), str(path), dynamo=dynamo, input_names=["x"], **batch)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x5 = torch.randn(5, *x.shape[1:])  # a batch size other than the exported one
    (actual,) = session.run(None, {"x": x5.numpy()})
    _close(actual, model(x5))


def test_torchscript_trace_saves_and_loads():
    model, x = _model_and_input("channels_last")
    expected = model(x)
    traced = torch.jit.trace(model, (x,))
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    _close(torch.jit.load(buffer)(x).detach(), expected)


def test_torchscript_script_is_not_supported():
    """Documented: the layers call Python (the shared core) that TorchScript cannot compile."""
    with pytest.raises((RuntimeError, TypeError, ValueError)):  # as this torch reports it
        torch.jit.script(DiffStride((2.0, 2.0)).eval())


def test_keras_saved_model(tmp_path):
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("model.export writes a SavedModel from the TensorFlow backend")
    from diffstride.tf import DiffStride as KerasDiffStride
    from diffstride.tf import FixedSpectralPooling as KerasFixedSpectralPooling

    keras.utils.set_random_seed(0)
    # A DiffStride output's spatial sizes follow the stride variable, so in the exported
    # graph the FixedSpectralPooling after it reads them at run time.
    model = keras.Sequential(
        [
            keras.Input((32, 28, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),
            KerasFixedSpectralPooling(2, data_format="channels_last"),
            KerasDiffStride((2.0, 2.0), data_format="channels_last"),
            KerasFixedSpectralPooling(1.5, data_format="channels_last"),
        ]
    )
    model.layers[2].strides.assign([2.3, 1.7])
    x = np.random.default_rng(0).normal(size=(2, 32, 28, 3)).astype("float32")
    expected = np.asarray(model(x))
    model.export(str(tmp_path / "saved"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    actual = reloaded.serve(tf.constant(x)).numpy()
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_a_traced_layer_follows_its_strides() -> None:
    """``torch.jit.trace`` records the device path: the masks follow the traced module's
    strides (the crop stays the one fixed when tracing), not constants of the trace."""
    layer = DiffStride((2.0, 2.0)).eval()
    x = torch.randn(1, 2, 16, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns at the crop's value read
        traced = torch.jit.trace(layer, (x,))
    size = tuple(traced(x).shape[2:])
    with torch.no_grad():
        traced.strides.fill_(2.05)  # the same crop, other mask values
    torch.testing.assert_close(traced(x), layer(x, output_size=size))
