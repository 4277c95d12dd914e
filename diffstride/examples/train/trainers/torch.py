"""The PyTorch trainer: our ResNets or a converted torchvision / timm model, AdamW or SGD,
the complexity and MAC-budget penalties, and ``DistributedDataParallel`` under ``torchrun``."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import torch

from diffstride.examples import data, distributed
from diffstride.examples.train.config import (
    OWN_MODELS,
    RESNET_STRIDES,
    Config,
    ConfigError,
    config_errors,
)
from diffstride.examples.train.trainers import (
    TrainerBase,
    diffstride_sizes,
    pooling,
    total_steps,
)
from diffstride.models.torch import resnet18, small_resnet
from diffstride.torch import MacsEstimator, complexity_penalty, convert, macs

__all__ = ["TorchTrainer", "backbone", "converted_model"]


class TorchTrainer(TrainerBase):
    """Trains ``config``'s model on ``dataset`` in PyTorch.

    Under ``torchrun`` (``context.active``) the model is wrapped in
    ``DistributedDataParallel`` and evaluation is split over the ranks.
    """

    def _build(self, dataset: data.Dataset) -> None:
        config, context = self.config, self.context
        torch.manual_seed(config.seed)
        channels = dataset.x_train.shape[1]
        size = tuple(int(n) for n in dataset.x_train.shape[2:])
        with config_errors():
            if config.model in OWN_MODELS:
                build = small_resnet if config.model == "small" else resnet18
                model = build(
                    config.strides or RESNET_STRIDES,
                    pooling=pooling(config.pooling),
                    in_channels=channels,
                    num_classes=dataset.num_classes,
                    ramp=config.ramp,
                    smoothness_factor=config.smoothness_factor,
                    pool_first=config.pool_first,
                )
                layers = model.diffstride_layers()
            else:
                model, layers = converted_model(config, channels, size, dataset.num_classes)
        self.model, self.layers = model, layers
        self.device = torch.device("cpu")
        self.net: Any = model
        if context.active:
            self.device = distributed.init_torch(context)
            model.to(self.device)
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device] if self.device.type == "cuda" else None
            )
        self.example = torch.zeros(1, channels, *size, device=self.device)
        own = config.model in OWN_MODELS
        self._report = model.stride_report if own else _reporter(model, layers, self.example)
        # It reads the sizes each training step's own forward pass saw: no second pass.
        self.estimate = (
            MacsEstimator(model, self.example) if config.budget_macs is not None else None
        )
        self.stride_params = [layer.strides for layer in layers]
        ids = {id(p) for p in self.stride_params}
        weights = [p for p in model.parameters() if id(p) not in ids]
        if config.optimizer == "sgd":
            groups = [
                {"params": weights, "weight_decay": config.weight_decay},
                {"params": self.stride_params, "weight_decay": 0.0},
            ]
            self.optimizer: Any = torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
        else:
            groups = [
                {"params": weights, "weight_decay": config.weight_decay},
                {"params": self.stride_params, "lr": config.stride_lr, "weight_decay": 0.0},
            ]
            self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        self.scheduler = None
        if config.lr_schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=total_steps(config, len(dataset.y_train))
            )

    def train_step(self, x: np.ndarray, y: np.ndarray, train_strides: bool) -> tuple[float, float]:
        config = self.config
        self.model.train()
        logits = self.net(torch.from_numpy(x).to(self.device))
        target = torch.from_numpy(y).to(self.device)
        loss = torch.nn.functional.cross_entropy(
            logits, target, label_smoothing=config.label_smoothing
        )
        if self.stride_params and train_strides:
            if config.lambda_complexity:
                loss = loss + config.lambda_complexity * complexity_penalty(self.layers)
            if self.estimate is not None:  # from the sizes this forward pass saw
                loss = loss + config.budget_weight * self.estimate.penalty(config.budget_macs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not train_strides:
            for p in self.stride_params:
                p.grad = None  # frozen: neither the gradient nor momentum moves them
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return float(loss.detach()), float((logits.argmax(1) == target).float().mean())

    def accuracy(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
        self.model.eval()
        correct = 0
        share = slice(self.context.rank, None, self.context.world_size)  # every rank a part
        x_part, y_part = x[share], y[share]
        with torch.no_grad():
            for xb, yb in data.batches(x_part, y_part, batch_size, shuffle=False, seed=0):
                logits = self.model(torch.from_numpy(xb).to(self.device))
                correct += int((logits.argmax(1).cpu().numpy() == yb).sum())
        return distributed.all_sum([correct], self.context)[0] / len(y)

    def strides(self) -> list[tuple[float, float]]:
        return [layer.current_strides() for layer in self.layers]

    def output_sizes(self, input_size: tuple[int, int]) -> list[tuple[int, int]]:
        return diffstride_sizes(self._report(input_size))

    def macs(self, input_size: tuple[int, int]) -> int:
        return macs(self.model, self.example)

    def state(self) -> dict[str, Any]:
        """Weights (strides included), optimizer, schedule and torch's random state, as
        numpy arrays and plain values (rank 0's: every rank holds the same)."""
        return {
            "model": _to_numpy(self.model.state_dict()),
            "optimizer": _to_numpy(self.optimizer.state_dict()),
            "scheduler": None if self.scheduler is None else _to_numpy(self.scheduler.state_dict()),
            "random": torch.get_rng_state().numpy(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state`'s values."""
        self.model.load_state_dict(_to_torch(state["model"]))
        self.optimizer.load_state_dict(_to_torch(state["optimizer"]))
        if self.scheduler is not None:
            self.scheduler.load_state_dict(_to_torch(state["scheduler"]))
        torch.set_rng_state(_to_torch(state["random"]))
        if self.estimate is not None:  # probe at the restored strides, not the initial ones
            self.estimate.remove()
            self.estimate = MacsEstimator(self.model, self.example)


def _to_numpy(tree: Any) -> Any:
    """``tree`` with every tensor a numpy array (a checkpoint holds no tensor)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy()
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(v) for v in tree)
    return tree


def _to_torch(tree: Any) -> Any:
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.array(tree))  # a writable copy
    if isinstance(tree, dict):
        return {k: _to_torch(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_torch(v) for v in tree)
    return tree


def backbone(model: str, channels: int, num_classes: int) -> Any:
    """A torchvision or timm model (random weights) for ``channels``-channel images: timm
    takes the channel count; a torchvision model gets a 1x1 convolution to three first."""
    source, _, name = model.partition(":")
    if source == "timm":
        timm = _import_extra("timm")
        try:
            return timm.create_model(
                name, pretrained=False, num_classes=num_classes, in_chans=channels
            )
        except RuntimeError as error:  # timm's "Unknown model (NAME)"
            raise ConfigError(f"model={model!r}: {error}") from error
    torchvision = _import_extra("torchvision")
    try:
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except ValueError as error:
        raise ValueError(f"model={model!r}: {error}") from error
    if channels == 3:
        return net
    return torch.nn.Sequential(torch.nn.Conv2d(channels, 3, 1, bias=False), net)


def _import_extra(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(
            f"--model {name}:NAME needs {name}: pip install 'diffstride[vision]'"
        ) from None


def converted_model(
    config: Config, channels: int, size: tuple[int, ...], num_classes: int
) -> tuple[Any, list[Any]]:
    """The backbone with its downsampling as ``config.pooling`` says, and one DiffStride
    layer per stride parameter (forward order)."""
    net = backbone(config.model, channels, num_classes)
    example = torch.zeros(2, channels, *size)
    if config.pooling == "strided" and config.strides is None:
        model = net
    else:
        model = convert(
            net,
            example,
            ramp=config.ramp,
            pool_first=config.pool_first,
            smoothness_factor=config.smoothness_factor,
            pooling=config.pooling,
            strides=config.strides,
        )
    leaders = {}
    for module in model.modules():
        if hasattr(module, "current_strides") and isinstance(
            getattr(module, "strides", None), torch.nn.Parameter
        ):
            leaders.setdefault(id(module.strides), module)
    return model, list(leaders.values())


def _reporter(model: Any, layers: list[Any], example: Any) -> Any:
    """``stride_report``'s rows for a converted model: each stride's layer and the size it
    gives, read from one forward pass in eval mode."""

    def report(input_size: tuple[int, int]) -> list[dict[str, Any]]:
        sizes: dict[int, list[int]] = {}

        def seen(module: Any, inputs: Any, output: Any) -> None:
            sizes[id(module)] = [int(output.shape[a]) for a in module._axes(output.ndim)]

        hooks = [layer.register_forward_hook(seen) for layer in layers]
        training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(example)
        finally:
            model.train(training)
            for hook in hooks:
                hook.remove()
        return [
            {"strides": list(layer.current_strides()), "output_size": sizes[id(layer)]}
            for layer in layers
        ]

    return report
