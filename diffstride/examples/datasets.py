"""The data sets the training command can name: three standard sets read from their files,
cluttered Fashion-MNIST built from one of them, and :func:`load`, which picks one by name.

Why it is built this way
------------------------
The real data sets (Fashion-MNIST, MNIST, CIFAR-10) are read from the files their authors
distribute, with numpy alone, so no deep-learning framework is imported and every front-end
(PyTorch, Keras, JAX) can share them. Fashion-MNIST defaults to the folder of the Debian/Ubuntu
package ``dataset-fashion-mnist``. Missing files raise
:class:`~diffstride.examples.data.MissingDataError`, whose message says what was looked for,
where, and how to get it. The IDX files are decompressed once per process and cached
read-only, because the study trains many networks in one process; CIFAR-10's pickles are read
with an unpickler that can only rebuild arrays, because ``--data-dir`` may point anywhere.

Plain Fashion-MNIST (28x28, centred) says little about choosing strides: random stride
settings of the small ResNet reach about the same accuracy on it. :func:`cluttered_fashion_mnist`
is a task where the choice matters: the item sits at a random place of a 64x64 canvas among
pieces of other items (the cluttered-MNIST protocol of the attention and spatial-transformer
papers), so how early and how much the network downsamples sets its resolution, its receptive
field and its compute (the study's results are in ``docs/study``). It is built from the
Fashion-MNIST files deterministically, with test canvases that do not depend on the training
seed, so every run is measured on the same test images. It lives here, not in a module of its
own, because it is those files under another geometry: the same reader, the same missing-file
message, the same subset rule.

The synthetic task is generated, not read, and has its module
(:mod:`diffstride.examples.synthetic`); :func:`load` names it too, so that the command line
has one list of data sets (:data:`DATASETS`). Every loader ends with
:func:`~diffstride.examples.data.normalised`, so all of them return the same
:class:`~diffstride.examples.data.Dataset`.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import os
import pickle
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from diffstride.examples.data import (
    Dataset,
    MissingDataError,
    check_count,
    check_limit,
    normalised,
    subset,
    subset_index,
)
from diffstride.examples.synthetic import synthetic

__all__ = [
    "CLUTTERED_CANVAS",
    "CLUTTERED_PATCHES",
    "CLUTTERED_PATCH_SIZE",
    "CLUTTERED_TEST",
    "CLUTTERED_TEST_SEED",
    "DATASETS",
    "FASHION_MNIST_DIR",
    "cifar10",
    "cluttered_fashion_mnist",
    "cluttered_shapes",
    "cluttered_test_count",
    "fashion_mnist",
    "load",
    "mnist",
    "read_idx",
]

DATASETS = (
    "synthetic",
    "fashion-mnist",
    "cluttered-fashion-mnist",
    "cluttered-shapes",
    "mnist",
    "cifar10",
)
"""The names :func:`load` accepts."""

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the four IDX files."""

CLUTTERED_CANVAS = 64
"""The side of the cluttered Fashion-MNIST canvas (:func:`cluttered_fashion_mnist`)."""

CLUTTERED_PATCHES = 8
"""The number of clutter patches on each cluttered canvas."""

CLUTTERED_PATCH_SIZE = 8
"""The side of a clutter patch, in pixels."""

CLUTTERED_TEST = 10000
"""How many test items become cluttered canvases when ``num_test`` is not given (all 10000).

Read at each call; a run that wants fewer passes ``limit_test`` to :func:`load` (the training
command's ``--limit-test``)."""

CLUTTERED_TEST_SEED = 0
"""The seed of the test canvases, the same for every training seed."""

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_CIFAR_SUBFOLDER = "cifar-10-batches-py"

_FASHION_MNIST_HELP = (
    "On Debian/Ubuntu, `sudo apt-get install dataset-fashion-mnist` installs them in "
    f"{FASHION_MNIST_DIR}; otherwise download the four IDX files from "
    "https://github.com/zalandoresearch/fashion-mnist into a folder and pass --data-dir FOLDER."
)
_MNIST_HELP = (
    "Download the four IDX files of MNIST (http://yann.lecun.com/exdb/mnist/, or a mirror such "
    "as https://ossci-datasets.s3.amazonaws.com/mnist/) into a folder and pass --data-dir FOLDER."
)
_CIFAR_HELP = (
    'Download "CIFAR-10 python version" from https://www.cs.toronto.edu/~kriz/cifar.html, '
    "extract it (tar xzf cifar-10-python.tar.gz) and pass --data-dir with the extracted "
    f"{_CIFAR_SUBFOLDER} folder or the folder that contains it."
)

# IDX type codes (the third byte of the magic number); multi-byte values are big-endian.
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# --------------------------------------------------------------------------- IDX files


def _read_bytes(path: Path) -> bytes:
    """The content of ``path``, gunzipped when it starts with the gzip magic bytes."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise ValueError(f"{path} is not a valid gzip file: {error}") from error


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the format of MNIST and Fashion-MNIST), gzipped or raw.

    The header is a magic number ``0x00 0x00 <type code> <ndim>`` followed by ``ndim`` big-endian
    uint32 sizes; the values follow, big-endian. A file starting with the gzip magic bytes is
    decompressed first, whatever its name.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    numpy.ndarray
        The array, with the file's shape and type, in native byte order (a writable copy).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a valid IDX file: bad magic number, or a size that does not match the
        header. The message names the file.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file: bad magic number 0x{raw[:4].hex()}")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} is not an IDX file: truncated header")
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path} is not a valid IDX file: its header announces {shape} values of type "
            f"{dtype} ({expected} bytes) but it has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, name: str) -> Path | None:
    """``folder / name``, or ``folder / (name + '.gz')``, whichever exists first."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing(
    title: str, folder: Path, names: Sequence[str], missing: Sequence[str], help_: str
) -> MissingDataError:
    """The :class:`MissingDataError` for ``missing`` among ``names`` in ``folder``."""
    if not folder.is_dir():
        found = "the folder does not exist"
    elif len(missing) == len(names):
        found = "none of them is there"
    else:
        found = f"missing {', '.join(missing)}"
    message = f"{title} not found in {folder}: looked for {', '.join(names)}; {found}. {help_}"
    return MissingDataError(message, folder, missing)


def _idx_images_and_labels(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an IDX image file ``(N, H, W)`` and its labels ``(N,)``, checking they match.

    The arrays are read-only and cached per (file, modification time, size): a program that
    trains many networks in one process (the study) decompresses the files once, not per run.
    """
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in (images, labels))
    return _read_idx_pair(images, labels, stamp)


@functools.lru_cache(maxsize=4)
def _read_idx_pair(
    images: Path, labels: Path, stamp: tuple[tuple[str, int, int], ...]
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_idx_images_and_labels` without the cache (``stamp`` only keys it)."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(
            f"{images} and {labels} do not match: expected images (N, H, W) and labels (N,), "
            f"found {x.shape} and {y.shape}"
        )
    x, y = x[:, None], y.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _idx_splits(
    title: str, folder: Path, help_: str
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The training and test ``(images (N, 1, H, W), labels (N,))`` of the IDX files in
    ``folder``, raising :class:`MissingDataError` if one is missing."""
    found = {file: _find_idx(folder, file) for file in _IDX_FILES}
    missing = [file for file, path in found.items() if path is None]
    if missing:
        names = [f"{file}[.gz]" for file in _IDX_FILES]
        raise _missing(title, folder, names, missing, help_)
    paths = list(found.values())
    train = _idx_images_and_labels(paths[0], paths[1])
    test = _idx_images_and_labels(paths[2], paths[3])
    return train, test


def _required_folder(data_dir: str | os.PathLike[str] | None, title: str, help_: str) -> Path:
    """``data_dir`` of a data set that has no default folder."""
    if data_dir is None:
        raise MissingDataError(f"{title} has no default folder. {help_}")
    return Path(data_dir)


def _from_folder(
    name: str, title: str, folder: Path, splits: Any, limit_train: int | None, seed: int
) -> Dataset:
    """A 10-class data set read from ``folder``: ``splits`` = (train, test) image and label
    pairs, the training split cut to ``limit_train`` (see :func:`subset`)."""
    train, test = splits
    train = subset(*train, limit_train, seed)
    description = f"{title} from {folder}: {len(train[0])} train / {len(test[0])} test"
    return normalised(name, description, 10, train, test)


def _idx_dataset(
    name: str, title: str, folder: Path, help_: str, limit_train: int | None, seed: int
) -> Dataset:
    """An MNIST-like data set from the four IDX files in ``folder``."""
    return _from_folder(name, title, folder, _idx_splits(title, folder, help_), limit_train, seed)


def fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None, limit_train: int | None = None, seed: int = 0
) -> Dataset:
    """Fashion-MNIST (Xiao et al., 2017): 28x28 grayscale images of clothes, 10 classes.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte``, each raw or gzipped (``.gz``).

    Parameters
    ----------
    data_dir
        The folder of the four files; default ``/usr/share/datasets/fashion-mnist``, where the
        Debian/Ubuntu package ``dataset-fashion-mnist`` puts them.
    limit_train
        Keep only this many training examples (see :func:`load`); None keeps all 60000.
    seed
        The seed of the choice of kept examples.

    Returns
    -------
    Dataset
        Images ``(N, 1, 28, 28)``.

    Raises
    ------
    MissingDataError
        If a file is missing; the message says where to get them.
    """
    check_limit(limit_train)
    folder = FASHION_MNIST_DIR if data_dir is None else Path(data_dir)
    return _idx_dataset(
        "fashion-mnist", "Fashion-MNIST", folder, _FASHION_MNIST_HELP, limit_train, seed
    )


def mnist(
    data_dir: str | os.PathLike[str] | None, limit_train: int | None = None, seed: int = 0
) -> Dataset:
    """MNIST (LeCun et al., 1998): 28x28 grayscale handwritten digits, 10 classes.

    The four files, their format, the arguments and the images are those of
    :func:`fashion_mnist`, but there is no default folder: ``data_dir=None`` raises
    :class:`MissingDataError`, as a missing file does.
    """
    check_limit(limit_train)
    folder = _required_folder(data_dir, "MNIST", _MNIST_HELP)
    return _idx_dataset("mnist", "MNIST", folder, _MNIST_HELP, limit_train, seed)


# --------------------------------------------------------------------------- CIFAR-10


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and nothing else.

    Unpickling can run arbitrary code; the CIFAR-10 batches need only these few globals, so a
    file passed with ``--data-dir`` cannot do more than describe arrays.
    """

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: {error!r}") from error
    if data.dtype != np.uint8 or data.shape != (len(labels), 3 * 32 * 32):
        raise ValueError(
            f"{path} is not a CIFAR-10 python batch: expected uint8 data of shape "
            f"({len(labels)}, 3072), found {data.dtype} {data.shape}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_folder(data_dir: Path) -> Path:
    """``data_dir / 'cifar-10-batches-py'`` if it is a folder, else ``data_dir``."""
    subfolder = data_dir / _CIFAR_SUBFOLDER
    return subfolder if subfolder.is_dir() else data_dir


def cifar10(
    data_dir: str | os.PathLike[str] | None, limit_train: int | None = None, seed: int = 0
) -> Dataset:
    """CIFAR-10 (Krizhevsky, 2009): 32x32 colour images, 10 classes, from the python batches.

    Reads ``data_batch_1`` to ``data_batch_5`` and ``test_batch`` (pickles holding ``b"data"``,
    ``(N, 3072)`` uint8, and ``b"labels"``) from ``data_dir`` or its ``cifar-10-batches-py``
    subfolder. The pickles are read with an unpickler that only rebuilds numpy arrays.

    Parameters
    ----------
    data_dir
        The folder of the batches, or the folder containing ``cifar-10-batches-py``.
    limit_train, seed
        As for :func:`fashion_mnist`; ``limit_train=None`` keeps all 50000.

    Returns
    -------
    Dataset
        Images ``(N, 3, 32, 32)``.

    Raises
    ------
    MissingDataError
        If ``data_dir`` is None or a batch is missing.
    """
    check_limit(limit_train)
    folder = _cifar_folder(_required_folder(data_dir, "CIFAR-10", _CIFAR_HELP))
    missing = [name for name in _CIFAR_FILES if not (folder / name).is_file()]
    if missing:
        raise _missing("CIFAR-10", folder, _CIFAR_FILES, missing, _CIFAR_HELP)
    parts = [_read_cifar_batch(folder / name) for name in _CIFAR_FILES]
    train = tuple(np.concatenate(arrays) for arrays in zip(*parts[:-1], strict=True))
    return _from_folder("cifar10", "CIFAR-10", folder, (train, parts[-1]), limit_train, seed)


# --------------------------------------------------------------------------- cluttered


@dataclass(frozen=True)
class _Canvases:
    """Cluttered canvases and how they were made (what the tests check).

    ``images`` ``(n, size, size)`` uint8; ``positions`` ``(n, 2)`` the top-left row and column
    of each item; ``sources`` ``(n, patches)`` the index in the pool of the item each clutter
    patch was cut from.
    """

    images: np.ndarray
    positions: np.ndarray
    sources: np.ndarray


def _clutter(
    items: np.ndarray,
    index: np.ndarray,
    pool: np.ndarray,
    *,
    size: int,
    patches: int,
    patch_size: int,
    rng: np.random.Generator,
) -> _Canvases:
    """Place each of ``items`` ``(n, h, w)`` at a random position of a blank ``size x size``
    canvas and add ``patches`` random ``patch_size`` squares cut at random from *other* items
    of ``pool`` ``(N, h, w)`` (``index[i]`` is item ``i``'s own index in ``pool``, never a
    source of its clutter). Overlaps keep the brighter pixel, so clutter never erases the item.
    Vectorised: one fancy-indexed write per patch, for all canvases at once."""
    n, height, width = items.shape
    if len(pool) < 2:
        raise ValueError(f"the clutter needs at least 2 items to cut from; received {len(pool)}")
    rows = np.arange(n)[:, None, None]
    canvases = np.zeros((n, size, size), np.uint8)
    positions = np.stack(
        [rng.integers(0, size - height + 1, n), rng.integers(0, size - width + 1, n)], axis=1
    )
    canvases[
        rows,
        (positions[:, 0, None] + np.arange(height))[:, :, None],
        (positions[:, 1, None] + np.arange(width))[:, None, :],
    ] = items
    # Uniform over the other N - 1 items: draw from N - 1 and skip the item's own index.
    sources = rng.integers(0, len(pool) - 1, (n, patches))
    sources += sources >= np.asarray(index)[:, None]
    offset = np.arange(patch_size)
    for k in range(patches):
        cut_y, cut_x = (rng.integers(0, side - patch_size + 1, n) for side in (height, width))
        put_y, put_x = (rng.integers(0, size - patch_size + 1, n) for _ in range(2))
        piece = pool[
            sources[:, k, None, None],
            (cut_y[:, None] + offset)[:, :, None],
            (cut_x[:, None] + offset)[:, None, :],
        ]
        where = rows, (put_y[:, None] + offset)[:, :, None], (put_x[:, None] + offset)[:, None, :]
        canvases[where] = np.maximum(canvases[where], piece)
    return _Canvases(canvases, positions, sources)


def _check_clutter(size: Any, patches: Any, patch_size: Any) -> None:
    """Raise ValueError unless the cluttered set's geometry fits 28x28 items."""
    check_count("patch_size", patch_size)
    if isinstance(patches, bool) or not isinstance(patches, int | np.integer) or patches < 0:
        raise ValueError(f"patches must be an integer >= 0; received patches={patches!r}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 28:
        raise ValueError(f"size must be an integer >= 28 (the items' side); received size={size!r}")
    if patch_size > 28:
        raise ValueError(
            f"patch_size must be at most 28 (the items' side); received patch_size={patch_size!r}"
        )


def cluttered_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    limit_train: int | None = None,
    seed: int = 0,
    *,
    size: int = CLUTTERED_CANVAS,
    patches: int = CLUTTERED_PATCHES,
    patch_size: int = CLUTTERED_PATCH_SIZE,
    num_test: int | None = None,
) -> Dataset:
    """Fashion-MNIST items at a random place on a larger canvas, among pieces of other items.

    The cluttered-MNIST protocol of the attention and spatial-transformer papers (Mnih et al.,
    2014; Jaderberg et al., 2015) applied to Fashion-MNIST: each 28x28 item is pasted at a
    uniformly random position of a black ``size x size`` canvas, then ``patches`` squares of
    ``patch_size`` pixels, each cut at a random place of another item of the *same split*
    (training clutter from training items, test clutter from test items), are pasted at random
    positions; where pixels overlap the brighter one is kept. The label is the item's.

    Only the kept training items become canvases (``limit_train`` applies first), so a small
    subset builds in a fraction of a second and takes ``limit_train * size**2 * 4`` bytes; the
    full 60000 take about 1 GB as float32 at ``size=64``. The clutter of a training item is
    cut from any of the 60000 training items but itself.

    The test canvases do not depend on ``seed``: every run, whatever its seed, is measured on
    the same test images, as with the other data sets. They are the test items kept from a
    fixed permutation (all 10000 by default, :data:`CLUTTERED_TEST`), in file order.

    Parameters
    ----------
    data_dir
        The folder of the four Fashion-MNIST files (see :func:`fashion_mnist`).
    limit_train
        Keep only this many training items (see :func:`load`); None keeps all 60000.
    seed
        The seed of the choice of kept items and of their training canvases.
    size
        The side of the square canvas, at least 28.
    patches
        The number of clutter patches per canvas, at least 0.
    patch_size
        The side of a clutter patch, from 1 to 28.
    num_test
        Keep at most this many test items; None: :data:`CLUTTERED_TEST` (all 10000).

    Returns
    -------
    Dataset
        Images ``(N, 1, size, size)``.

    Raises
    ------
    MissingDataError
        If a file is missing; the message says where to get them.
    ValueError
        If an argument is out of range; the message names it.

    Examples
    --------
    >>> ds = cluttered_fashion_mnist(limit_train=100, num_test=50)  # doctest: +SKIP
    >>> ds.x_train.shape, ds.x_test.shape  # doctest: +SKIP
    ((100, 1, 64, 64), (50, 1, 64, 64))
    """
    check_limit(limit_train)
    if num_test is None:
        num_test = CLUTTERED_TEST
    check_count("num_test", num_test)
    _check_clutter(size, patches, patch_size)
    folder = FASHION_MNIST_DIR if data_dir is None else Path(data_dir)
    train, test = _idx_splits("Fashion-MNIST", folder, _FASHION_MNIST_HELP)
    geometry = {"size": size, "patches": patches, "patch_size": patch_size}
    splits = []
    for (images, labels), limit, split_seed, split in (
        (train, limit_train, seed, 0),
        (test, num_test, CLUTTERED_TEST_SEED, 1),
    ):
        keep = subset_index(len(labels), limit, split_seed)
        # A stream per (seed, split): the test canvases never depend on the training seed.
        rng = np.random.default_rng([split_seed, split])
        pool = images[:, 0]
        canvases = _clutter(pool[keep], keep, pool, rng=rng, **geometry)
        splits.append((canvases.images[:, None], labels[keep]))
    description = (
        f"Cluttered Fashion-MNIST from {folder}: 28x28 items on {size}x{size} canvases with "
        f"{patches} {patch_size}x{patch_size} clutter patches; "
        f"{len(splits[0][1])} train / {len(splits[1][1])} test"
    )
    return normalised("cluttered-fashion-mnist", description, 10, splits[0], splits[1])


SHAPES = ("disc", "square", "triangle", "plus", "ring", "diamond")
"""The classes of :func:`cluttered_shapes`, in label order."""


def _shapes(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One 28x28 uint8 item per label: its shape, of random size, place and brightness."""
    n = len(labels)
    rows, cols = np.mgrid[0:28, 0:28].astype(np.float32)
    radius = rng.uniform(6.0, 9.5, n)[:, None, None]  # every shape wider than a clutter patch
    centre = rng.uniform(10.0, 18.0, (n, 2))[:, :, None, None]
    dy, dx = rows - centre[:, 0], cols - centre[:, 1]
    distance = np.sqrt(dy**2 + dx**2)
    masks = [
        distance <= radius,
        np.maximum(abs(dy), abs(dx)) <= 0.8 * radius,
        (dy <= 0.7 * radius) & (dy >= 2 * abs(dx) - radius),
        (np.minimum(abs(dy), abs(dx)) <= 0.3 * radius) & (np.maximum(abs(dy), abs(dx)) <= radius),
        (distance <= radius) & (distance >= 0.55 * radius),
        abs(dy) + abs(dx) <= radius,
    ]
    items = np.choose(labels[:, None, None], masks)
    brightness = rng.integers(128, 256, n)[:, None, None]
    return (items * brightness).astype(np.uint8)


def cluttered_shapes(
    data_dir: str | os.PathLike[str] | None = None,
    limit_train: int | None = None,
    seed: int = 0,
    *,
    size: int = CLUTTERED_CANVAS,
    patches: int = CLUTTERED_PATCHES,
    patch_size: int = CLUTTERED_PATCH_SIZE,
    num_test: int | None = None,
) -> Dataset:
    """:func:`cluttered_fashion_mnist`'s protocol on generated items: no files needed.

    Each item is one of six filled shapes (:data:`SHAPES`) of random size (radius 6 to 9.5
    pixels, so no clutter patch holds a whole one), place and brightness on a 28x28 square;
    it is pasted at a random place of the canvas among ``patches`` pieces cut from other
    items. Telling a small disc from a small square or a diamond takes the pixels of its edge,
    and finding it takes the canvas, so, as with Fashion-MNIST items, how fast a network
    downsamples decides what it can tell apart (it is an easier task: fixed spectral pooling
    reaches about 99 % from a start where strided convolutions reach 77 %).

    Parameters are those of :func:`cluttered_fashion_mnist` (``limit_train``: the number of
    training items generated, 12000 when None; ``data_dir`` must be None).
    """
    if data_dir is not None:
        raise ValueError(f"cluttered-shapes reads no files; received data_dir={data_dir!r}")
    num_train = 12000 if limit_train is None else limit_train
    num_test = CLUTTERED_TEST if num_test is None else num_test
    for name, count in (("limit_train", num_train), ("num_test", num_test)):
        check_count(name, count)
        if count < 2:  # each item's clutter is cut from the others
            raise ValueError(f"{name} must be at least 2 for clutter; received {name}={count}")
    _check_clutter(size, patches, patch_size)
    geometry = {"size": size, "patches": patches, "patch_size": patch_size}
    splits = []
    for count, split_seed, split in ((num_train, seed, 0), (num_test, CLUTTERED_TEST_SEED, 1)):
        rng = np.random.default_rng([split_seed, split, 1])
        labels = rng.permutation(np.arange(count) % len(SHAPES))
        items = _shapes(labels, rng)
        canvases = _clutter(items, np.arange(count), items, rng=rng, **geometry)
        splits.append((canvases.images[:, None], labels.astype(np.int64)))
    description = (
        f"Cluttered shapes ({', '.join(SHAPES)}): 28x28 items on {size}x{size} canvases with "
        f"{patches} {patch_size}x{patch_size} clutter patches; "
        f"{num_train} train / {num_test} test"
    )
    return normalised("cluttered-shapes", description, len(SHAPES), splits[0], splits[1])


# --------------------------------------------------------------------------- by name


@contextlib.contextmanager
def cluttered_test_count(count: int) -> Iterator[None]:
    """Build ``count`` cluttered test canvases per :func:`load` inside the block (instead of
    :data:`CLUTTERED_TEST`): a smaller test set for quick runs, the same for every run."""
    global CLUTTERED_TEST
    check_count("count", count)
    saved, CLUTTERED_TEST = CLUTTERED_TEST, count
    try:
        yield
    finally:
        CLUTTERED_TEST = saved


def load(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    limit_train: int | None = None,
    seed: int = 0,
    *,
    limit_test: int | None = None,
) -> Dataset:
    """Load a data set by name: one of :data:`DATASETS`, ready to train on.

    Parameters
    ----------
    name
        One of :data:`DATASETS`.
    data_dir
        The folder of the files; None for the default (Fashion-MNIST only has one). It must be
        None for ``"synthetic"``, which reads no files.
    limit_train
        Keep at most this many training examples; None keeps all. For the file data sets the
        kept examples are the first ``limit_train`` of a permutation seeded by ``seed``, kept in
        file order, so a small subset covers every class. For ``"synthetic"`` it is the number
        of training images generated (their examples are independent draws anyway).
    seed
        The seed of the synthetic data and of the choice of kept examples.
    limit_test
        Keep at most this many test examples; None keeps all (the cluttered sets build
        :data:`CLUTTERED_TEST` canvases, ``"synthetic"`` 1024 images). For the file data sets
        the kept examples are a fixed subset that does not depend on ``seed``, so every run is
        measured on the same images; the generated sets build this many.

    Returns
    -------
    Dataset
        The data set, normalised with its training statistics.

    Raises
    ------
    ValueError
        On an unknown name, a ``limit_train`` that is not a positive integer, or a ``data_dir``
        given for ``"synthetic"``.
    MissingDataError
        If the files are not found; ``str(error)`` says where to get them.
    """
    check_limit(limit_train)
    if limit_test is not None:
        check_count("limit_test", limit_test)
    if name == "synthetic":
        if data_dir is not None:
            raise ValueError(f"the synthetic data set reads no files; received data_dir={data_dir}")
        return synthetic(num_train=limit_train or 4096, num_test=limit_test or 1024, seed=seed)
    if name in ("cluttered-fashion-mnist", "cluttered-shapes"):
        build = cluttered_fashion_mnist if name == "cluttered-fashion-mnist" else cluttered_shapes
        return build(data_dir, limit_train=limit_train, seed=seed, num_test=limit_test)
    loaders = {"fashion-mnist": fashion_mnist, "mnist": mnist, "cifar10": cifar10}
    if name not in loaders:
        raise ValueError(f"name must be one of {', '.join(DATASETS)}; received name={name!r}")
    dataset = loaders[name](data_dir, limit_train=limit_train, seed=seed)
    if limit_test is None:
        return dataset
    # A fixed seed: the same test images whatever the run's seed.
    x_test, y_test = subset(dataset.x_test, dataset.y_test, limit_test, CLUTTERED_TEST_SEED)
    return replace(dataset, x_test=x_test, y_test=y_test)
