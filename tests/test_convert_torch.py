"""``diffstride.torch.convert`` and the MAC counter on real networks, at small inputs.

Each family stresses one way a network downsamples or joins branches: projection shortcuts
(ResNet), depthwise blocks with squeeze-excitation (MobileNetV3, EfficientNet), concatenation
and average-pool transitions (DenseNet, VoVNet), channel splits (ShuffleNetV2), a patchifying
stem (ConvNeXt), group convolutions (RegNet), 1-D audio (M5) and 3-D video (R3D-18).
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from diffstride._layers import DiffStrideMixin, FixedSpectralPoolingMixin  # noqa: E402
from diffstride.torch import (  # noqa: E402
    DiffStride,
    DiffStrided,
    MacsEstimator,
    convert,
    downsampling_points,
    macs,
    macs_penalty,
)

_DOWNSAMPLING = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_DOWNSAMPLING += (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)


def m5(num_classes: int = 10) -> nn.Module:
    """An M5-style raw-audio network (Dai et al., 2017): a strided front convolution and
    max pools, global average pooling."""

    def block(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
        conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)
        return [conv, nn.BatchNorm1d(c_out), nn.ReLU(), nn.MaxPool1d(4)]

    return nn.Sequential(
        *block(1, 16, 80, stride=4),
        *block(16, 16, 3),
        *block(16, 32, 3),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


MODELS = {
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (2, 3, 32, 32)),
    "resnet50": (lambda: torchvision.models.resnet50(num_classes=10), (2, 3, 32, 32)),
    "mobilenet_v3_small": (
        lambda: torchvision.models.mobilenet_v3_small(num_classes=10),
        (2, 3, 32, 32),
    ),
    "efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(num_classes=10), (2, 3, 32, 32)),
    "densenet": (  # densenet121's layout (concatenations, average-pool transitions), narrower
        lambda: torchvision.models.DenseNet(8, (2, 2, 2, 2), 16, num_classes=10),
        (2, 3, 32, 32),
    ),
    "shufflenet_v2": (
        lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10),
        (2, 3, 32, 32),
    ),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(num_classes=10), (2, 3, 32, 32)),
    "r3d_18": (lambda: torchvision.models.video.r3d_18(num_classes=10), (2, 3, 4, 32, 32)),
    "timm_regnetx_002": (
        lambda: timm.create_model("regnetx_002", pretrained=False, num_classes=10),
        (2, 3, 32, 32),
    ),
    "timm_vovnet": (
        lambda: timm.create_model("ese_vovnet19b_slim_dw", pretrained=False, num_classes=10),
        (2, 3, 32, 32),
    ),
    "m5_audio": (m5, (2, 1, 2000)),
}


def _diffstride_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, DiffStrideMixin)]


def _stride_parameters(model: nn.Module) -> list[torch.Tensor]:
    return list({id(m.strides): m.strides for m in _diffstride_layers(model)}.values())


def _flop_counter_macs(model: nn.Module, x: torch.Tensor) -> float:
    """FlopCounterMode's own count of one eval pass, less the spectral layers' modules."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    counts = counter.get_flop_counts()
    inside = 0
    for name, module in model.named_modules():
        if isinstance(module, (DiffStrideMixin, FixedSpectralPoolingMixin)):
            key = f"{type(model).__name__}.{name}"
            inside += sum(counts.get(key, {}).values())
    return (counter.get_total_flops() - inside) / 2 / x.shape[0]


@pytest.fixture(scope="module", params=sorted(MODELS))
def converted(request):
    torch.manual_seed(0)
    build, shape = MODELS[request.param]
    model = build()
    x = torch.randn(shape)
    snapshot = copy.deepcopy(model.state_dict())
    learned = convert(model, x)
    return request.param, model, learned, x, snapshot


def test_original_is_untouched(converted):
    _, model, learned, _, snapshot = converted
    assert not any(isinstance(m, DiffStrided) for m in model.modules())
    assert learned is not model
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    assert all(torch.equal(state[k], snapshot[k]) for k in state)
    strided = [m for m in model.modules() if isinstance(m, _DOWNSAMPLING)]
    assert any(max(getattr(m, "stride", 1) or (1,)) > 1 for m in strided if m.stride)


def test_runs_forward_and_backward_with_the_original_shape(converted):
    _, model, learned, x, _ = converted
    learned.train()
    y = learned(x)
    assert y.shape == model.eval()(x).shape
    y.square().mean().backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in _stride_parameters(learned)
    )
    weights = [p for n, p in learned.named_parameters() if n.endswith("weight")]
    assert all(p.grad is not None for p in weights[:3])


def test_nothing_downsamples_outside_diffstride(converted):
    _, _, learned, _, _ = converted
    for name, module in learned.named_modules():
        if isinstance(module, _DOWNSAMPLING):
            stride = module.stride if isinstance(module.stride, tuple) else (module.stride,)
            assert all(s == 1 for s in stride), name
    assert _diffstride_layers(learned)


def test_convolution_weights_are_the_originals(converted):
    _, model, learned, _, _ = converted
    originals = [
        m.weight for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    ]
    copies = [
        m.weight for m in learned.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    ]
    assert len(originals) == len(copies)
    assert all(torch.equal(a, b) and a is not b for a, b in zip(originals, copies, strict=True))


def test_macs_equal_flop_counter_mode(converted):
    _, model, learned, x, _ = converted
    for network in (model, learned):
        expected = _flop_counter_macs(network, x)
        assert macs(network, x) == pytest.approx(expected, rel=0.01)
    assert macs(learned, x) > 0


def test_macs_estimate_equals_macs_and_its_gradient_finite_differences(converted):
    name, _, learned, x, _ = converted
    estimator = MacsEstimator(learned, x)
    try:
        estimate = estimator()
        assert estimate.item() == pytest.approx(macs(learned, x), rel=0.01)
        parameters = _stride_parameters(learned)
        # a stride whose downstream cost cannot move (sizes at their floor) gets no gradient
        grads = torch.autograd.grad(estimate, parameters, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads, strict=True)
        ]
        for parameter, grad in zip(parameters, grads, strict=True):
            assert (grad <= 0).all(), name
            for axis in range(parameter.numel()):
                step = 1e-2
                with torch.no_grad():
                    parameter.view(-1)[axis] += step
                    up = float(estimator())
                    parameter.view(-1)[axis] -= 2 * step
                    down = float(estimator())
                    parameter.view(-1)[axis] += step
                numeric = (up - down) / (2 * step)
                assert float(grad.view(-1)[axis]) == pytest.approx(numeric, rel=1e-2, abs=1.0)
        assert any((g < 0).any() for g in grads)
    finally:
        estimator.remove()


def test_a_budget_makes_the_model_cheaper(converted):
    name, _, original, x, _ = converted
    learned = copy.deepcopy(original)
    before = macs(learned, x)
    estimator = MacsEstimator(learned, x)
    optimizer = torch.optim.SGD(_stride_parameters(learned), lr=3.0)
    learned.train()
    for _ in range(4):
        learned(x)  # the step's own forward pass: the estimator reads its sizes
        optimizer.zero_grad()
        penalty = estimator.penalty(before / 2)
        penalty.backward()
        optimizer.step()
    estimator.remove()
    after = macs(learned, x)
    assert after < before, name
    assert learned(x).shape[0] == x.shape[0]


def test_the_estimate_follows_the_count_far_from_where_it_probed():
    # At the start the last maps sit at their floor size, so their cost cannot follow the
    # strides there; as the strides shrink it does, and the estimator must notice.
    cnn = nn.Sequential(
        *(nn.Conv2d(c_in, 8, 3, stride=2, padding=1) for c_in in (3, 8, 8, 8)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    x = torch.randn(2, 3, 32, 32)
    learned = convert(cnn, x, strides=[3.0, 3.0, 3.0, 3.0])
    parameters = _stride_parameters(learned)
    estimator = MacsEstimator(learned, x[:1], refresh_share=None)
    spaced = MacsEstimator(learned, x[:1], refresh_share=0.5)
    spaced._refresh_seconds = 1e9  # as if a probe took forever: none runs again
    probes = []
    spaced.refresh = lambda: probes.append(1) or MacsEstimator.refresh(spaced)
    try:
        for step in range(1, 21):
            with torch.no_grad():
                for parameter in parameters:
                    parameter.fill_(3.0 - 0.1 * step)
            learned(x)
            estimate = float(estimator().detach())
            assert estimate == pytest.approx(macs(learned, x), rel=0.05), step
            spaced()
    finally:
        estimator.remove()
        spaced.remove()
    assert not probes  # the time cap held it back
    with pytest.raises(ValueError, match="refresh_ratio=1"):
        MacsEstimator(learned, x, refresh_ratio=1)
    with pytest.raises(ValueError, match="refresh_share=0"):
        MacsEstimator(learned, x, refresh_share=0)


def test_macs_penalty_is_zero_under_the_budget_and_positive_over():
    model = nn.Sequential(DiffStride(strides=2.0, ramp="inside"), nn.Conv2d(3, 4, 3, padding=1))
    x = torch.randn(1, 3, 16, 16)
    count = macs(model, x)
    assert float(macs_penalty(model, x, 2 * count)) == 0.0
    assert float(macs_penalty(model, x, count / 2)) == pytest.approx(1.0, rel=1e-5)


def test_shortcuts_share_one_stride():
    x = torch.randn(2, 3, 32, 32)
    learned = convert(torchvision.models.resnet18(num_classes=10), x)
    for stage in (learned.layer2, learned.layer3, learned.layer4):
        block = stage[0]
        assert block.conv1.pool.strides is block.downsample[0].pool.strides
    assert len(_stride_parameters(learned)) == 5  # stem conv, max pool, three stages
    # still runs once the strides have moved apart from their start
    with torch.no_grad():
        for parameter, value in zip(
            _stride_parameters(learned), (1.5, 2.5, 1.3, 2.2, 1.7), strict=True
        ):
            parameter.fill_(value)
    assert learned(x).shape == (2, 10)


def test_channel_split_and_concatenation_share_strides():
    x = torch.randn(2, 3, 32, 32)
    learned = convert(torchvision.models.shufflenet_v2_x0_5(num_classes=10), x)
    unit = learned.stage2[0]
    assert unit.branch1[0].pool.strides is unit.branch2[3].pool.strides


def test_pool_first_false_puts_the_layer_after_the_module():
    x = torch.randn(2, 3, 32, 32)
    model = torchvision.models.resnet18(num_classes=10)
    first = convert(model, x)
    after = convert(model, x, pool_first=False)
    assert first.conv1.pool_first
    assert not after.conv1.pool_first
    assert macs(after, x) > macs(first, x)  # the paper's order runs each convolution at full size


def test_spectral_pooling_keeps_its_strides():
    x = torch.randn(2, 3, 32, 32)
    fixed = convert(torchvision.models.resnet18(num_classes=10), x, pooling="spectral")
    pools = [m for m in fixed.modules() if isinstance(m, DiffStrided)]
    assert pools
    assert all(isinstance(p.pool, FixedSpectralPoolingMixin) for p in pools)
    assert not list(_stride_parameters(fixed))


def test_include_and_exclude_choose_modules():
    x = torch.randn(2, 3, 32, 32)
    model = torchvision.models.resnet18(num_classes=10)
    only_pool = convert(model, x, include=nn.MaxPool2d)
    assert isinstance(only_pool.maxpool, DiffStrided)
    assert not isinstance(only_pool.conv1, DiffStrided)
    assert only_pool.conv1.stride == (2, 2)
    no_stem = convert(model, x, exclude=["conv1", "maxpool"])
    assert no_stem.conv1.stride == (2, 2)
    assert isinstance(no_stem.layer2[0].conv1, DiffStrided)


def test_a_fixed_size_downstream_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(64, 2))
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"2 \(Linear\).*fixed spatial size.*exclude"):
        convert(model, x)
    kept = convert(model, x, exclude="0")
    assert not any(isinstance(m, DiffStrided) for m in kept.modules())


def test_bad_arguments_name_themselves():
    model, x = nn.Conv2d(3, 4, 3, stride=2), torch.randn(1, 3, 8, 8)
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        convert("resnet", x)
    with pytest.raises(ValueError, match="ramp"):
        convert(model, x, ramp="sideways")
    with pytest.raises(TypeError, match="pool_first"):
        convert(model, x, pool_first="yes")
    with pytest.raises(TypeError, match="exclude"):
        convert(model, x, exclude=3)
    with pytest.raises(ValueError, match="pooling"):
        convert(model, x, pooling="max")
    with pytest.raises(TypeError, match="example_input"):
        macs(model, [1, 2, 3])
    with pytest.raises(ValueError, match="fails on example_input"):
        macs(model, torch.randn(1, 5, 8, 8))


def test_state_dict_round_trip_keeps_shared_strides():
    x = torch.randn(2, 3, 32, 32)
    model = torchvision.models.resnet18(num_classes=10)
    learned = convert(model, x)
    with torch.no_grad():
        learned.layer2[0].conv1.pool.strides.fill_(1.7)
    again = convert(model, x)
    again.load_state_dict(learned.state_dict())
    assert again.layer2[0].downsample[0].pool.strides.tolist() == pytest.approx([1.7, 1.7])
    assert again.layer2[0].conv1.pool.strides is again.layer2[0].downsample[0].pool.strides


def test_strides_start_each_point_and_strided_sets_the_modules():
    x = torch.randn(2, 3, 64, 64)
    model = torchvision.models.resnet18(num_classes=10)
    points = downsampling_points(model, x)
    assert points[2] == ["layer2.0.conv1", "layer2.0.downsample.0"]
    assert len(points) == 5
    learned = convert(model, x, strides=[1, 2, 3, 1.5, (2, 1)])
    assert learned.layer3[0].downsample[0].pool.strides.tolist() == [1.5, 1.5]
    assert learned.layer4[0].conv1.pool.strides.tolist() == [2.0, 1.0]
    strided = convert(model, x, pooling="strided", strides=[1, 2, 3, 1, 2])
    assert not any(isinstance(m, DiffStrided) for m in strided.modules())
    assert strided.conv1.stride == (1, 1)
    assert strided.layer2[0].downsample[0].stride == (3, 3)
    assert strided(x).shape == (2, 10)
    with pytest.raises(ValueError, match=r"one stride per downsampling point \(5 here: conv1;"):
        convert(model, x, strides=[2, 2])
    with pytest.raises(ValueError, match="integer strides"):
        convert(model, x, pooling="strided", strides=[1, 2, 1.5, 1, 2])
