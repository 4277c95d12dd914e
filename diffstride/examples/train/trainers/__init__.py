"""The frameworks the training command trains in: one trainer class per framework, and the
contract (:class:`Trainer`) the loop drives them through.

Each trainer lives in its own module (:mod:`.torch`, :mod:`.keras`) and imports its framework
at the top, so this registry loads a module only when its framework is asked for: naming the
choices (:data:`FRAMEWORKS`) imports no framework.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from diffstride.examples import distributed

if TYPE_CHECKING:
    from diffstride.examples import data
    from diffstride.examples.train.config import Config

__all__ = [
    "FRAMEWORKS",
    "TRAINERS",
    "Trainer",
    "TrainerBase",
    "diffstride_sizes",
    "pooling",
    "total_steps",
]


class Trainer(Protocol):
    """What the epoch loop needs from a framework: a step, an evaluation, the strides and
    what they cost, and the state a checkpoint holds."""

    def train_step(
        self, x: np.ndarray, y: np.ndarray, train_strides: bool
    ) -> tuple[float, float]: ...
    def accuracy(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> float: ...
    def strides(self) -> list[tuple[float, float]]: ...
    def output_sizes(self, input_size: tuple[int, int]) -> list[tuple[int, int]]: ...
    def macs(self, input_size: tuple[int, int]) -> int: ...
    def state(self) -> dict[str, Any]: ...
    def load_state(self, state: dict[str, Any]) -> None: ...


class TrainerBase:
    """How every trainer starts: it keeps the run's ``config`` and distributed ``context``,
    then builds the model and its optimizers for ``dataset`` (:meth:`_build`, the
    framework's part)."""

    def __init__(
        self,
        config: Config,
        dataset: data.Dataset,
        context: distributed.Context = distributed.SINGLE,
    ) -> None:
        self.config, self.context = config, context
        self._build(dataset)

    def _build(self, dataset: data.Dataset) -> None:
        raise NotImplementedError


def _torch(config: Config, dataset: data.Dataset, context: distributed.Context) -> Trainer:
    from diffstride.examples.train.trainers.torch import TorchTrainer

    return TorchTrainer(config, dataset, context)


def _keras(config: Config, dataset: data.Dataset, context: distributed.Context) -> Trainer:
    from diffstride.examples.train.trainers.keras import KerasTrainer

    return KerasTrainer(config, dataset, context)


#: ``--framework`` -> a function building that framework's trainer.
TRAINERS: dict[str, Callable[[Config, data.Dataset, distributed.Context], Trainer]] = {
    "torch": _torch,
    "tf": _keras,
}
FRAMEWORKS = tuple(sorted(TRAINERS))


def total_steps(config: Config, train_images: int) -> int:
    """The optimizer steps of the whole run (a cosine schedule decays over them)."""
    return config.epochs * -(-train_images // config.batch_size)


def pooling(name: str) -> str | None:
    """The models' ``pooling=`` for the command's ``--pooling`` (``strided``: None)."""
    return None if name == "strided" else name


def diffstride_sizes(report: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The output sizes of the layers whose strides are learned (the report gives them
    strides; the others have None), whatever their class is called."""
    return [tuple(row["output_size"]) for row in report if row["strides"] is not None]
