"""The epoch loop both frameworks run: the data as numpy batches, one record per epoch, a
checkpoint after every epoch, the outputs written by rank 0.

Resuming (``--resume``, or a job ``torchrun`` restarted) reads ``OUT/checkpoint.npz`` before
anything else and refuses a checkpoint written with other options, then restores the trainer
and the random states and goes on with the next epoch. The batches of an epoch are drawn from
a seed of their own (``seed * 1000 + epoch``), so a resumed run sees the batches the
uninterrupted run would have seen. The checkpoint is deleted once ``metrics.json`` is written.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from diffstride.examples import data, datasets, distributed
from diffstride.examples.train import checkpoint, report
from diffstride.examples.train.checkpoint import CheckpointError
from diffstride.examples.train.config import Config, config_errors, run_changing
from diffstride.examples.train.report import Record
from diffstride.examples.train.trainers import TRAINERS, Trainer

__all__ = ["hold_out", "run"]


def run(config: Config) -> dict[str, Any]:
    """Train as ``config`` says; write ``metrics.json`` and ``strides.png``; return metrics.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each process trains on its shard
    of the training set, ``--batch-size`` images a step (``world_size`` times as many in all);
    rank 0 alone prints and writes, and the run fails if the ranks' final strides differ."""
    context = distributed.from_env()
    if context.active and config.framework != "torch":
        raise ValueError(
            "multi-process runs (torchrun) are for framework='torch'; Keras scales out with "
            f"distribute='mirrored'; received framework={config.framework!r}"
        )
    try:
        return _run(config, context)
    finally:
        distributed.shutdown(context)


def hold_out(
    dataset: data.Dataset, count: int, seed: int
) -> tuple[data.Dataset, tuple[np.ndarray, np.ndarray] | None]:
    """The data set without ``count`` training images, drawn with ``seed``, and those images."""
    if count == 0:
        return dataset, None
    if count >= len(dataset.y_train):
        raise ValueError(
            f"validation must leave training images; received validation={count} for "
            f"{len(dataset.y_train)} training images"
        )
    order = np.random.default_rng(seed + 7919).permutation(len(dataset.y_train))
    held, kept = np.sort(order[:count]), np.sort(order[count:])
    train = replace(dataset, x_train=dataset.x_train[kept], y_train=dataset.y_train[kept])
    return train, (dataset.x_train[held], dataset.y_train[held])


def _run(config: Config, context: distributed.Context) -> dict[str, Any]:
    say = print if context.is_main else _silent
    out = Path(config.out)
    path = out / checkpoint.NAME
    restarts = distributed.restart_count()
    resume = config.resume or restarts > 0
    done = _resumable_epochs(path, config, context) if resume else None
    if resume and done is None:
        say(f"no checkpoint at {path}: starting afresh", flush=True)
    elif not resume and path.is_file():
        say(f"starting afresh: {path} will be replaced (--resume continues it)", flush=True)
    with config_errors():  # a data set this config cannot read or split as asked
        dataset = datasets.load(
            config.dataset,
            config.data_dir,
            config.limit_train,
            config.seed,
            limit_test=config.limit_test,
        )
        dataset, validation = hold_out(dataset, config.validation, config.seed)
    whole = dataset
    x_shard, y_shard = distributed.shard(dataset.x_train, dataset.y_train, context)
    dataset = replace(dataset, x_train=x_shard, y_train=y_shard)
    trainer = TRAINERS[config.framework](config, dataset, context)
    progress = config.progress and context.is_main
    input_size = (int(dataset.x_train.shape[2]), int(dataset.x_train.shape[3]))
    batch_count = -(-len(dataset.y_train) // config.batch_size)

    def record(epoch: int, loss: float | None, acc: float | None, seconds: float) -> Record:
        return _record(trainer, config, dataset, validation, input_size, epoch, loss, acc, seconds)

    if done is None:
        records, done, earlier = [record(0, None, None, 0.0)], 0, 0.0
    else:
        state = checkpoint.load(path)
        trainer.load_state(state["trainer"])
        _set_random_state(state["random"])
        records = [Record(**r) for r in state["records"]]
        earlier = state["seconds"]
        why = f"torchrun restart {restarts}" if restarts else "--resume"
        say(f"{why}: resumed from {path} after epoch {done} of {config.epochs}", flush=True)
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.remove_leftovers(path)
    started = time.perf_counter() - earlier
    for epoch in range(done + 1, config.epochs + 1):
        losses, accuracies = [], []
        epoch_start = time.perf_counter()
        train_strides = epoch > config.stride_warmup
        bar = _progress(
            data.batches(
                dataset.x_train,
                dataset.y_train,
                config.batch_size,
                shuffle=True,
                seed=config.seed * 1000 + epoch,
            ),
            batch_count,
            f"epoch {epoch}/{config.epochs}",
            progress,
        )
        for xb, yb in bar:
            loss, acc = trainer.train_step(xb, yb, train_strides)
            losses.append(loss)
            accuracies.append(acc)
            if progress:
                bar.set_postfix(
                    loss=f"{np.mean(losses[-20:]):.3f}", acc=f"{np.mean(accuracies[-20:]):.3f}"
                )
        mean_loss, mean_accuracy = (
            total / context.world_size
            for total in distributed.all_sum(
                [float(np.mean(losses)), float(np.mean(accuracies))], context
            )
        )
        records.append(record(epoch, mean_loss, mean_accuracy, time.perf_counter() - epoch_start))
        say(_epoch_line(records[-1]), flush=True)
        if context.is_main:  # the other ranks hold the same state
            checkpoint.save(
                path,
                {
                    "config": run_changing(config.as_json()),
                    "world_size": context.world_size,
                    "epoch": epoch,
                    "seconds": time.perf_counter() - started,
                    "records": [asdict(r) for r in records],
                    "random": _random_state(),
                    "trainer": trainer.state(),
                },
            )
    ranks = distributed.check_identical([list(pair) for pair in trainer.strides()], context)
    metrics = report.metrics(config, whole, records, time.perf_counter() - started)
    metrics["world_size"] = context.world_size
    if context.active:
        metrics["rank_strides"] = ranks  # every rank's final strides, unrounded
    if context.is_main:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        report.plot(metrics, out / "strides.png")
        # A finished run is its metrics: the checkpoint was for faults on the way.
        path.unlink(missing_ok=True)
        print(report.summary_table(metrics))
        print(f"wrote {out / 'metrics.json'} and {out / 'strides.png'}")
    return metrics


def _resumable_epochs(path: Path, config: Config, context: distributed.Context) -> int | None:
    """The epochs the checkpoint at ``path`` has done (None: there is none); raise
    :class:`CheckpointError` if it was written by a run that differs from ``config``'s in
    anything but ``--epochs`` (which may grow, or stay, under a constant learning rate)."""
    if not path.is_file():
        return None
    header = checkpoint.read_header(path, "config", "world_size", "epoch")
    stored = json.loads(json.dumps(header["config"]))
    now = json.loads(json.dumps(run_changing(config.as_json())))
    free = {"epochs"} if config.lr_schedule == "constant" else set()
    differ = sorted(
        k for k in stored.keys() | now.keys() if k not in free and stored.get(k) != now.get(k)
    )
    if differ:
        options = "; ".join(
            f"--{k.replace('_', '-')} {stored.get(k)!r} there, {now.get(k)!r} here" for k in differ
        )
        hint = (
            " (--epochs may change only with --lr-schedule constant: a cosine schedule spans "
            "the whole run)"
            if "epochs" in differ
            else ""
        )
        raise CheckpointError(
            f"--resume: {path} was written by a run with other options ({options}){hint}; "
            "resume with its options, or use another --out or leave out --resume to start again"
        )
    if header["world_size"] != context.world_size:
        raise CheckpointError(
            f"--resume: {path} was written by {header['world_size']} processes; this run has "
            f"{context.world_size} (each process trains on its shard: the run would change)"
        )
    if header["epoch"] > config.epochs:
        raise CheckpointError(
            f"--resume: {path} has done {header['epoch']} epochs; received --epochs "
            f"{config.epochs}, fewer"
        )
    return int(header["epoch"])


def _random_state() -> dict[str, Any]:
    """The global random states a run could draw from (the trainer keeps its framework's):
    ours use seeded generators, but code we do not own may draw from the legacy globals."""
    return {"python": random.getstate(), "numpy": np.random.get_state()}  # noqa: NPY002


def _set_random_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002


def _record(
    trainer: Trainer,
    config: Config,
    dataset: data.Dataset,
    validation: tuple[np.ndarray, np.ndarray] | None,
    input_size: tuple[int, int],
    epoch: int,
    loss: float | None,
    acc: float | None,
    seconds: float,
) -> Record:
    """The record of ``epoch``: the test set is read every epoch without a validation split,
    else after the last epoch only."""
    last = epoch == config.epochs
    return Record(
        epoch=epoch,
        train_loss=loss,
        train_accuracy=acc,
        test_accuracy=(
            trainer.accuracy(dataset.x_test, dataset.y_test, 256)
            if validation is None or last
            else None
        ),
        validation_accuracy=None if validation is None else trainer.accuracy(*validation, 256),
        strides=[[round(s, 5) for s in pair] for pair in trainer.strides()],
        output_sizes=[list(size) for size in trainer.output_sizes(input_size)],
        macs=trainer.macs(input_size),
        seconds=round(seconds, 2),
    )


def _epoch_line(last: Record) -> str:
    shown = [
        f"{name} accuracy {value:.4f}"
        for name, value in (("validation", last.validation_accuracy), ("test", last.test_accuracy))
        if value is not None
    ]
    return (
        f"epoch {last.epoch}: train loss {last.train_loss:.4f}, {', '.join(shown)}, "
        f"MACs/image {last.macs:,}, strides {last.strides}"
    )


def _silent(*args: Any, **kwargs: Any) -> None:
    """``print`` on the ranks that do not print."""


def _progress(iterable: Any, total: int, description: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=description,
        leave=False,
        mininterval=0.5,
        file=sys.stdout,
        dynamic_ncols=True,
    )
