"""Train a ResNet with learnable (or fixed) strides, in PyTorch or Keras, and watch them move.

    python -m diffstride.examples.train --framework torch --dataset synthetic --epochs 4 \\
        --pooling diffstride --strides 1,1,2,2,2 --lambda-complexity 0.1 --out runs/demo

Both frameworks run the same loop (``run``): the data as numpy batches, the loss
``cross-entropy + lambda * J(S) + budget_weight * max(MACs(S) / budget - 1, 0)`` with the
paper's complexity regularizer and, with ``--macs-budget``, a penalty that is zero under the
budget (``MACs(S)``: the model's counted MACs as a differentiable function of its strides,
``macs_estimate``). Optimizers: ``adamw`` (AdamW for the weights, Adam with a separate learning
rate for the strides, ``--stride-lr``: stride gradients are per-parameter averages of many
terms and move slowly at the weights' rate) or ``sgd`` (the original's recipe: SGD with
momentum 0.9 for weights and strides at one learning rate; pair it with
``--label-smoothing 0.1``); ``--lr-schedule cosine`` decays every rate to 0 over the run.
``--stride-warmup E`` freezes the strides for the first E epochs.
With ``--validation N``, N training images are held out: each epoch is evaluated on them and
the test set is read once, after the last epoch; without it, on the test set each epoch. Keras
runs a ``tf.function`` train step rather than ``model.fit`` so that the penalties, the progress
bar and the records are the same as in torch.

Outputs: a progress bar with loss and accuracy, a final table (test accuracy, learned strides
per DiffStride layer, output sizes, multiply-accumulates), ``OUT/metrics.json`` (per epoch and
``final``: ``train_loss``, ``test_accuracy``, ``strides`` as ``[s_h, s_w]`` per DiffStride
layer, ``macs``) and ``OUT/strides.png`` (stride trajectories, accuracy and MACs).

Scaling out: ``torchrun --nproc_per_node N -m diffstride.examples.train --framework torch ...``
trains with ``DistributedDataParallel``, one shard of the training set per process
(:mod:`diffstride.examples.distributed`; rank 0 alone writes, ``metrics.json`` records
``world_size``); ``--framework tf --distribute mirrored`` trains Keras under
``tf.distribute.MirroredStrategy`` on every visible device.

The package: :mod:`.config` (:class:`Config`, its checks and the parser built from its
fields), :mod:`.trainers` (one trainer class per framework), :mod:`.loop` (the epoch loop,
:func:`run`) and :mod:`.report` (``metrics.json``, the table, the plot). Importing it imports
no deep-learning framework.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from diffstride.examples import data
from diffstride.examples.train.config import Config, ConfigError, build_parser, parse_args
from diffstride.examples.train.loop import run
from diffstride.examples.train.report import format_pair, plot, summary_table
from diffstride.examples.train.trainers import FRAMEWORKS, TRAINERS

__all__ = [
    "FRAMEWORKS",
    "TRAINERS",
    "Config",
    "ConfigError",
    "build_parser",
    "format_pair",
    "main",
    "parse_args",
    "plot",
    "run",
    "summary_table",
]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2: a usage error or missing data)."""
    config = parse_args(argv)
    try:
        run(config)
    except (data.MissingDataError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
