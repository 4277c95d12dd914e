"""Checkpoints: what a run needs to go on after it was stopped, written atomically.

One file, ``OUT/checkpoint.npz``, written at the end of every epoch by rank 0: the options that
change the run, the epoch, the records so far, the random states, and the trainer's state
(weights with the strides, optimizers, learning-rate schedule). It is a numpy ``.npz``: the
arrays as arrays, everything else as one JSON document, so that reading it runs no pickle
(``--out`` may point anywhere) and needs no framework until the trainer takes its part.

A write goes to a temporary file in the same folder, is flushed to disk, and then replaces the
old checkpoint with ``os.replace``: a process killed at any point (``kill -9`` included) or a
full disk leaves either the old checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from diffstride.examples.train.config import ConfigError

__all__ = [
    "FORMAT",
    "NAME",
    "CheckpointError",
    "load",
    "read_header",
    "remove_leftovers",
    "save",
]

NAME = "checkpoint.npz"
"""The checkpoint's file name in ``--out``."""

FORMAT = 1
"""Bumped when the layout changes; an older checkpoint is refused, not misread."""

_DOCUMENT = "state.json"


class CheckpointError(ConfigError):
    """A checkpoint that cannot continue this run: other options, or an unreadable file."""


def save(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` (nested dicts, lists, tuples, numbers, strings, None and numpy arrays)
    to ``path`` atomically: the old file stays whole until the new one is complete."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    document = json.dumps({"format": FORMAT, "state": _encode(state, arrays)})
    arrays[_DOCUMENT] = np.frombuffer(document.encode(), np.uint8)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(path.parent)


def remove_leftovers(path: str | os.PathLike[str]) -> None:
    """Delete the temporary files of writes to ``path`` that a killed process left."""
    path = Path(path)
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state :func:`save` wrote to ``path``."""
    with _opened(path) as (document, arrays):
        return _decode(document["state"], arrays)


def read_header(path: str | os.PathLike[str], *keys: str) -> dict[str, Any]:
    """Only ``keys`` of the (top-level) state: no array outside them is read."""
    with _opened(path) as (document, arrays):
        entries = dict(document["state"]["dict"])
        return {key: _decode(entries[key], arrays) for key in keys}


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str]) -> Any:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            document = json.loads(arrays[_DOCUMENT].tobytes().decode())
            if document.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path} is a checkpoint of format {document.get('format')!r}; this "
                    f"version reads format {FORMAT}: start the run again without --resume"
                )
            yield document, arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, (CheckpointError, FileNotFoundError)):
            raise
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {error}); start the "
            "run again without --resume"
        ) from error


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON, its arrays moved to ``arrays`` (every container is tagged, so
    that dict keys of any type and tuples come back as they were)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = value
        return {"array": name}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode(v, arrays) for v in value]
    raise TypeError(f"a checkpoint holds no {type(value).__name__}; received {value!r}")


def _decode(value: Any, arrays: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if not isinstance(value, dict):
        return value
    if "array" in value:
        return arrays[value["array"]]
    if "tuple" in value:
        return tuple(_decode(v, arrays) for v in value["tuple"])
    return {_decode(k, arrays): _decode(v, arrays) for k, v in value["dict"]}


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX; elsewhere the rename is all there is)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
