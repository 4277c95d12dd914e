"""What a training loop consumes: the :class:`Dataset` contract, the steps every source ends
with, and the minibatches.

Why it is built this way
------------------------
The training example reads its data from two kinds of source: a task generated in-process
(:mod:`diffstride.examples.synthetic`) and files on disk (:mod:`diffstride.examples.datasets`,
which also names every data set for :func:`~diffstride.examples.datasets.load`). They differ in
where the pixels come from and in nothing else a training loop sees, so what they share lives
here, in the one module both import and that imports neither:

* :class:`Dataset`: images float32 NCHW, labels int64, ready to train on. Every source returns
  it through :func:`normalised`, which normalises both splits per channel with the statistics
  of the *training* split, so that the test split sees no test statistics.
* :func:`subset`: a ``limit_train`` keeps a seeded random subset in its original order, so a
  small subset covers every class, the same rule for every file data set.
* :class:`MissingDataError`: raised by a reader whose files are missing; its message says what
  was looked for, where, and how to get it, so a command line prints it as is, with no
  traceback.
* :func:`batches`: one epoch of minibatches, shuffled by a seed.

Everything is numpy: no deep-learning framework is imported, so every front-end (PyTorch,
Keras, JAX) shares the same data and the same batch order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Dataset",
    "MissingDataError",
    "batches",
    "check_count",
    "check_limit",
    "normalised",
    "subset",
    "subset_index",
]


class MissingDataError(FileNotFoundError):
    """A data set's files are not where they were looked for.

    ``str(error)`` is a complete, one-paragraph message for the user: the files looked for,
    the folder, and where to get them.

    Parameters
    ----------
    message
        The message.
    folder
        The folder that was searched, or None when no folder was given.
    missing
        The names of the files that were not found.
    """

    def __init__(self, message: str, folder: Path | None = None, missing: Sequence[str] = ()):
        super().__init__(message)
        self.folder = folder
        self.missing = tuple(missing)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set split into training and test examples, ready to train on.

    Attributes
    ----------
    x_train, x_test
        Images, float32, shape ``(N, C, H, W)``, normalised per channel to zero mean and unit
        variance with the statistics of ``x_train``.
    y_train, y_test
        Labels, int64, shape ``(N,)``, in ``range(num_classes)``.
    num_classes
        The number of classes.
    name
        The name :func:`~diffstride.examples.datasets.load` knows it by.
    description
        One line for a human: what the data are and how many examples.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    description: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        _, channels, height, width = self.x_train.shape
        return channels, height, width


def check_count(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is a positive integer (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer; received {value!r}")


def check_limit(limit_train: Any) -> None:
    """Raise ValueError unless ``limit_train`` is None or a positive integer."""
    if limit_train is not None:
        check_count("limit_train", limit_train)


def subset_index(n: int, limit: int | None, seed: int) -> np.ndarray:
    """The indices :func:`subset` keeps out of ``n`` examples: all of them when ``limit`` is None
    or at least ``n``, else the first ``limit`` of a permutation seeded by ``seed``, increasing."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def subset(
    x: np.ndarray, y: np.ndarray, limit: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``limit`` examples, drawn at random with ``seed``, kept in their original order."""
    if limit is None or limit >= len(x):
        return x, y
    keep = subset_index(len(x), limit, seed)
    return x[keep], y[keep]


def normalised(
    name: str,
    description: str,
    num_classes: int,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> Dataset:
    """Convert to float32 and normalise both splits per channel with the training statistics."""
    x_train, x_test = train[0].astype(np.float32), test[0].astype(np.float32)
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    std = x_train.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    scale = 1.0 / np.maximum(std, 1e-8)
    x_train = ((x_train - mean) * scale).astype(np.float32)
    x_test = ((x_test - mean) * scale).astype(np.float32)
    return Dataset(
        x_train=x_train,
        y_train=np.array(train[1], np.int64),  # a copy: the file cache is read-only
        x_test=x_test,
        y_test=np.array(test[1], np.int64),
        num_classes=num_classes,
        name=name,
        description=description,
    )


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Minibatches ``(x[i], y[i])`` covering every example exactly once (one epoch).

    The last batch is smaller when ``batch_size`` does not divide ``len(x)``. Pass a different
    ``seed`` per epoch (for example ``base_seed + epoch``) for a new order each epoch.

    Parameters
    ----------
    x, y
        Inputs and targets, with the same first dimension.
    batch_size
        The number of examples per batch.
    shuffle
        Visit the examples in an order drawn with ``seed``, rather than in order.
    seed
        The seed of the order; unused without ``shuffle``.

    Returns
    -------
    iterator of (numpy.ndarray, numpy.ndarray)
        The batches of inputs and their targets. The arguments are checked at the call, not at
        the first batch.
    """
    check_count("batch_size", batch_size)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length; received {len(x)} and {len(y)}")
    order = np.random.default_rng(seed).permutation(len(x)) if shuffle else np.arange(len(x))
    return _batches_in_order(x, y, batch_size, order)


def _batches_in_order(
    x: np.ndarray, y: np.ndarray, batch_size: int, order: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches of :func:`batches`, a generator so that its checks run at the call."""
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]
