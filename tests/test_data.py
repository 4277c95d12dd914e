"""The training example's data: the synthetic band property (``synthetic``), the file readers
and the cluttered set (``datasets``), and the shared steps and batching (``data``)."""

from __future__ import annotations

import gzip
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from diffstride.examples import data, datasets, synthetic

# --------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``compress``) and return its path."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_fake_mnist(folder: Path, num_train: int = 30, num_test: int = 10) -> None:
    """The four MNIST-format files, training ones gzipped and test ones raw."""
    rng = np.random.default_rng(0)
    for split, n, compress in (("train", num_train, True), ("t10k", num_test, False)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, compress=compress)


def write_fake_cifar(folder: Path, per_batch: int = 4) -> None:
    """The six CIFAR-10 python batches, ``per_batch`` examples each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def band_features(x: np.ndarray, band: int) -> np.ndarray:
    """Magnitudes of the 2-D FFT at per-axis frequencies ``|k| <= band``: phase-invariant."""
    k = np.abs(np.fft.fftfreq(x.shape[-1], 1.0 / x.shape[-1]))
    spectrum = np.abs(np.fft.fft2(x[:, 0]))[:, k <= band][:, :, k <= band]
    return spectrum.reshape(len(x), -1)


def low_pass(x: np.ndarray, cutoff: int) -> np.ndarray:
    """Keep only the per-axis frequencies ``|k| < cutoff`` (a hard spectral crop, not resized)."""
    k = np.abs(np.fft.fftfreq(x.shape[-1], 1.0 / x.shape[-1]))
    mask = (k[:, None] < cutoff) & (k[None, :] < cutoff)
    return np.fft.ifft2(np.fft.fft2(x) * mask).real


def nearest_centroid_accuracy(
    f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray
) -> float:
    """Test accuracy of a nearest-centroid classifier on standardised features."""
    mean, std = f_train.mean(0), f_train.std(0) + 1e-9
    f_train, f_test = (f_train - mean) / std, (f_test - mean) / std
    centroids = np.stack([f_train[y_train == c].mean(0) for c in np.unique(y_train)])
    predicted = ((f_test[:, None] - centroids) ** 2).sum(-1).argmin(1)
    return float((predicted == y_test).mean())


@pytest.fixture(scope="module")
def small_synthetic() -> data.Dataset:
    return synthetic.synthetic(num_train=1024, num_test=512, size=32, seed=0)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_dtypes(small_synthetic: data.Dataset) -> None:
    ds = small_synthetic
    assert ds.x_train.shape == (1024, 1, 32, 32)
    assert ds.x_test.shape == (512, 1, 32, 32)
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    assert ds.num_classes == 4
    assert ds.name == "synthetic"
    assert ds.input_shape == (1, 32, 32)
    assert "synthetic" in ds.description
    np.testing.assert_array_equal(np.bincount(ds.y_train), [256] * 4)


def test_synthetic_is_deterministic_by_seed() -> None:
    a, b = synthetic.synthetic(64, 32, seed=3), synthetic.synthetic(64, 32, seed=3)
    c = synthetic.synthetic(64, 32, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_synthetic_test_split_does_not_depend_on_num_train() -> None:
    a, b = synthetic.synthetic(64, 32, seed=1), synthetic.synthetic(128, 32, seed=1)
    # Equal up to normalisation, which uses each one's training statistics.
    x_a, x_b = a.x_test - a.x_test.mean(), b.x_test - b.x_test.mean()
    np.testing.assert_allclose(x_a / x_a.std(), x_b / x_b.std(), atol=1e-4)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_synthetic_is_normalised_with_train_statistics(small_synthetic: data.Dataset) -> None:
    x = small_synthetic.x_train.astype(np.float64)
    assert abs(x.mean()) < 1e-5
    assert x.std() == pytest.approx(1.0, abs=1e-5)
    # The test split uses the training statistics, so it is only close to standard.
    assert abs(small_synthetic.x_test.mean()) < 0.05
    assert small_synthetic.x_test.std() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(("size", "expected"), [(32, 2.0), (64, 2.0), (18, 2.25), (16, 2.0)])
def test_synthetic_max_stride(size: int, expected: float) -> None:
    assert synthetic.synthetic_max_stride(size) == expected
    band = synthetic.synthetic_band(size)
    pairs = synthetic.synthetic_frequencies(size)
    assert len(set(pairs)) == 4
    assert all(max(abs(ky), abs(kx)) == band for ky, kx in pairs)


@pytest.mark.parametrize("size", [8, 15, 32.0, True])
def test_synthetic_rejects_small_or_non_integer_sizes(size: object) -> None:
    with pytest.raises(ValueError, match="size must be an integer >= 16"):
        synthetic.synthetic(8, 8, size=size)  # type: ignore[arg-type]


def test_synthetic_labels_are_recoverable_from_the_band(small_synthetic: data.Dataset) -> None:
    ds, band = small_synthetic, synthetic.synthetic_band(32)
    accuracy = nearest_centroid_accuracy(
        band_features(ds.x_train, band), ds.y_train, band_features(ds.x_test, band), ds.y_test
    )
    assert accuracy > 0.9


def test_synthetic_labels_are_lost_without_the_band(small_synthetic: data.Dataset) -> None:
    # Removing per-axis frequencies >= band is what a total stride of size / (2 band) does.
    ds, band = small_synthetic, synthetic.synthetic_band(32)
    x_train, x_test = low_pass(ds.x_train, band), low_pass(ds.x_test, band)
    accuracy = nearest_centroid_accuracy(
        band_features(x_train, band), ds.y_train, band_features(x_test, band), ds.y_test
    )
    assert accuracy < 0.4  # chance is 0.25


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_round_trip(tmp_path: Path, compress: bool, dtype: type) -> None:
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    path = write_idx(tmp_path / "array-idx3", array, compress=compress)
    result = datasets.read_idx(path)
    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    assert result.flags.writeable
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "bad magic number"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "bad magic number"),
        (b"\x00\x00", "bad magic number"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "truncated header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x00\x00", "3 bytes|11 bytes"),
        (b"\x1f\x8b not really gzip", "not a valid gzip file"),
    ],
)
def test_read_idx_rejects_malformed_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        datasets.read_idx(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- (Fashion-)MNIST


def test_fashion_mnist_reads_gzipped_and_raw_files(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    ds = datasets.fashion_mnist(tmp_path)
    assert ds.x_train.shape == (30, 1, 28, 28)
    assert ds.x_test.shape == (10, 1, 28, 28)
    assert ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int64
    assert (ds.num_classes, ds.name) == (10, "fashion-mnist")
    np.testing.assert_array_equal(ds.y_test, np.arange(10))
    assert abs(ds.x_train.mean()) < 1e-5


def test_limit_train_keeps_a_seeded_subset(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    full = datasets.load("mnist", tmp_path)
    a = datasets.load("mnist", tmp_path, limit_train=7, seed=5)
    b = datasets.load("mnist", tmp_path, limit_train=7, seed=5)
    assert a.x_train.shape == (7, 1, 28, 28)
    assert len(a.x_test) == len(full.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert len(set(a.y_train.tolist())) > 1
    assert datasets.load("mnist", tmp_path, limit_train=1000).x_train.shape == full.x_train.shape


def test_limit_keeps_file_order() -> None:
    x = np.arange(100)
    kept, _ = data.subset(x, x, 10, seed=0)
    assert len(kept) == 10
    assert np.all(np.diff(kept) > 0)
    assert not np.array_equal(kept, np.arange(10))


def test_missing_fashion_mnist_says_where_to_get_it(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(data.MissingDataError) as info:
        datasets.fashion_mnist(tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path) in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "https://github.com/zalandoresearch/fashion-mnist" in message
    assert "--data-dir" in message
    assert "t10k-labels-idx1-ubyte" in message
    assert info.value.folder == tmp_path
    assert "train-images-idx3-ubyte" not in info.value.missing


def test_mnist_requires_a_folder() -> None:
    with pytest.raises(data.MissingDataError, match="MNIST has no default folder"):
        datasets.load("mnist")


def test_mismatched_images_and_labels_are_an_error(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    labels = np.zeros(3, np.uint8)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, compress=False)
    with pytest.raises(ValueError, match="do not match"):
        datasets.fashion_mnist(tmp_path)


@pytest.mark.skipif(
    not datasets.FASHION_MNIST_DIR.is_dir(),
    reason=f"Fashion-MNIST is not installed in {datasets.FASHION_MNIST_DIR} "
    "(apt-get install dataset-fashion-mnist)",
)
def test_installed_fashion_mnist() -> None:
    ds = datasets.load("fashion-mnist", limit_train=100)
    assert ds.x_train.shape == (100, 1, 28, 28)
    assert ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.num_classes == 10
    assert set(ds.y_test.tolist()) == set(range(10))
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)


# --------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("subfolder", ["cifar-10-batches-py", ""])
def test_cifar10_reads_the_python_batches(tmp_path: Path, subfolder: str) -> None:
    write_fake_cifar(tmp_path / subfolder)
    ds = datasets.cifar10(tmp_path, limit_train=15)
    assert ds.x_train.shape == (15, 3, 32, 32)
    assert ds.x_test.shape == (4, 3, 32, 32)
    assert (ds.num_classes, ds.name) == (10, "cifar10")
    assert ds.y_train.dtype == np.int64
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 2, 3)), 1.0, atol=1e-5)


def test_cifar10_keeps_the_channel_layout(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path)
    raw = pickle.loads((tmp_path / "test_batch").read_bytes())[b"data"]
    ds = datasets.cifar10(tmp_path)
    # Rows are 1024 red, then 1024 green, then 1024 blue values: channel 1 is the green block.
    green = raw[:, 1024:2048].reshape(-1, 32, 32).astype(np.float64)
    correlation = np.corrcoef(green.ravel(), ds.x_test[:, 1].ravel())[0, 1]
    assert correlation == pytest.approx(1.0)


def test_missing_cifar10_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(data.MissingDataError) as info:
        datasets.load("cifar10", tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message
    assert "data_batch_5" in message


class _Exploit:
    def __reduce__(self) -> tuple:
        return (print, ("this must not run",))


def test_cifar10_refuses_pickles_that_run_code(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": _Exploit()}))
    with pytest.raises(ValueError, match=r"refusing to load builtins\.print") as info:
        datasets.cifar10(tmp_path)
    assert "data_batch_3" in str(info.value)


# --------------------------------------------------------------------------- load


def test_load_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"name=.nope."):
        datasets.load("nope")


@pytest.mark.parametrize("limit", [0, -3, 2.5, True, "10"])
def test_load_rejects_bad_limits(limit: object) -> None:
    with pytest.raises(ValueError, match="limit_train must be a positive integer"):
        datasets.load("synthetic", limit_train=limit)  # type: ignore[arg-type]


def test_load_synthetic(tmp_path: Path) -> None:
    ds = datasets.load("synthetic", limit_train=40, seed=2)
    assert ds.x_train.shape == (40, 1, 32, 32)
    assert len(ds.x_test) == 1024
    with pytest.raises(ValueError, match="reads no files"):
        datasets.load("synthetic", data_dir=tmp_path)


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_example_once(shuffle: bool) -> None:
    x, y = np.arange(23, dtype=np.float32)[:, None] * 2, np.arange(23)
    pairs = list(data.batches(x, y, 5, shuffle=shuffle, seed=0))
    assert [len(b) for b, _ in pairs] == [5, 5, 5, 5, 3]
    seen = np.concatenate([t for _, t in pairs])
    np.testing.assert_array_equal(np.sort(seen), y)
    np.testing.assert_array_equal(np.concatenate([b for b, _ in pairs])[:, 0], seen * 2)
    assert np.array_equal(seen, y) != shuffle


def test_batches_are_seeded() -> None:
    x = y = np.arange(50)
    first = [b for b, _ in data.batches(x, y, 8, shuffle=True, seed=1)]
    again = [b for b, _ in data.batches(x, y, 8, shuffle=True, seed=1)]
    other = [b for b, _ in data.batches(x, y, 8, shuffle=True, seed=2)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_batches_validate_their_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        data.batches(np.zeros(3), np.zeros(3), 0, shuffle=False, seed=0)
    with pytest.raises(ValueError, match="same length"):
        data.batches(np.zeros(3), np.zeros(4), 2, shuffle=False, seed=0)


# --------------------------------------------------------------------------- cluttered

needs_fashion_mnist = pytest.mark.skipif(
    not datasets.FASHION_MNIST_DIR.is_dir(),
    reason=f"Fashion-MNIST is not installed in {datasets.FASHION_MNIST_DIR} "
    "(apt-get install dataset-fashion-mnist)",
)


def write_split_valued_mnist(folder: Path, num_train: int = 40, num_test: int = 12) -> None:
    """MNIST-format files whose training pixels are 0 or in [1, 100] and test pixels 0 or in
    [150, 255], each item a full 28x28 block, so any pixel tells its split apart."""
    rng = np.random.default_rng(1)
    for split, n, low, high in (("train", num_train, 1, 101), ("t10k", num_test, 150, 256)):
        images = rng.integers(low, high, (n, 28, 28), dtype=np.uint8)
        images[0, 0, 0] = high - 1  # the split's largest value occurs
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte", images, compress=False)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress=False)


def raw_pixels(ds: data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Undo the normalisation of a data set whose training split has raw values 0 and 100."""
    zero, top = float(ds.x_train.min()), float(ds.x_train.max())
    scale = 100.0 / (top - zero)
    return (ds.x_train - zero) * scale, (ds.x_test - zero) * scale


def unit_range(ds: data.Dataset) -> np.ndarray:
    """The test split's pixels mapped affinely onto [0, 1]: the same whatever the training
    statistics it was normalised with."""
    x = ds.x_test.astype(np.float64)
    return (x - x.min()) / (x.max() - x.min())


def test_cluttered_shapes_dtypes_and_labels(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    ds = datasets.cluttered_fashion_mnist(tmp_path, limit_train=20, seed=1, size=40, num_test=6)
    assert ds.x_train.shape == (20, 1, 40, 40)
    assert ds.x_test.shape == (6, 1, 40, 40)
    assert ds.x_train.dtype == ds.x_test.dtype == np.float32
    assert ds.y_train.dtype == ds.y_test.dtype == np.int64
    assert (ds.num_classes, ds.name, ds.input_shape) == (10, "cluttered-fashion-mnist", (1, 40, 40))
    assert "40x40" in ds.description
    assert abs(ds.x_train.mean()) < 1e-5
    assert ds.x_train.std() == pytest.approx(1.0, abs=1e-5)
    # The kept items, labels and order are fashion_mnist's for the same limit and seed.
    plain = datasets.fashion_mnist(tmp_path, limit_train=20, seed=1)
    np.testing.assert_array_equal(ds.y_train, plain.y_train)
    assert datasets.load("cluttered-fashion-mnist", tmp_path).x_train.shape == (30, 1, 64, 64)


def test_cluttered_is_deterministic_and_seeded(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    a = datasets.load("cluttered-fashion-mnist", tmp_path, limit_train=30, seed=3)
    b = datasets.load("cluttered-fashion-mnist", tmp_path, limit_train=30, seed=3)
    c = datasets.load("cluttered-fashion-mnist", tmp_path, limit_train=30, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    # Same items (no limit), other positions and clutter.
    np.testing.assert_array_equal(a.y_train, c.y_train)
    assert not np.array_equal(a.x_train, c.x_train)
    # The test canvases do not depend on the training seed (up to the train normalisation).
    raw_a, raw_c = unit_range(a), unit_range(c)
    np.testing.assert_allclose(raw_a, raw_c, atol=1e-3)


def test_cluttered_train_and_test_clutter_come_from_their_own_split(tmp_path: Path) -> None:
    write_split_valued_mnist(tmp_path)
    ds = datasets.cluttered_fashion_mnist(tmp_path, limit_train=25, seed=2, patches=12)
    train, test = raw_pixels(ds)
    assert train.min() == pytest.approx(0.0, abs=1e-3)
    assert train.max() == pytest.approx(100.0, abs=1e-3)
    background = np.isclose(test, 0.0, atol=1e-3)
    # Every non-black test pixel has a test value (>= 150): no training item leaks in.
    assert test[~background].min() >= 150.0 - 1e-2
    assert background.any()


def constant_items(n: int, side: int = 28) -> np.ndarray:
    """``n`` items, item ``i`` a full block of value ``i + 1``: a pixel names its item."""
    return np.broadcast_to(np.arange(1, n + 1, dtype=np.uint8)[:, None, None], (n, side, side))


def test_clutter_places_the_item_and_keeps_it_visible() -> None:
    pool = np.random.default_rng(0).integers(1, 256, (20, 28, 28), dtype=np.uint8)
    index = np.array([0, 3, 7, 19])
    rng = np.random.default_rng(5)
    made = datasets._clutter(pool[index], index, pool, size=50, patches=6, patch_size=8, rng=rng)
    assert made.images.shape == (4, 50, 50)
    assert made.images.dtype == np.uint8
    assert made.sources.shape == (4, 6)
    for canvas, (row, col), item in zip(made.images, made.positions, pool[index], strict=True):
        assert 0 <= row <= 22
        assert 0 <= col <= 22
        window = canvas[row : row + 28, col : col + 28]
        assert np.all(window >= item)  # overlaps keep the brighter pixel: the item stays
    bare = datasets._clutter(pool[index], index, pool, size=50, patches=0, patch_size=8, rng=rng)
    for canvas, (row, col), item in zip(bare.images, bare.positions, pool[index], strict=True):
        np.testing.assert_array_equal(canvas[row : row + 28, col : col + 28], item)
        assert canvas.sum(dtype=np.int64) == item.sum(dtype=np.int64)


def test_clutter_comes_from_other_items_only() -> None:
    pool = constant_items(12)
    index = np.arange(12)
    rng = np.random.default_rng(0)
    made = datasets._clutter(pool, index, pool, size=64, patches=10, patch_size=8, rng=rng)
    assert np.all(made.sources != index[:, None])
    assert np.all((made.sources >= 0) & (made.sources < 12))
    assert len(np.unique(made.sources)) == 12  # every other item gets used somewhere
    for i, (canvas, (row, col)) in enumerate(zip(made.images, made.positions, strict=True)):
        outside = canvas.copy()
        outside[row : row + 28, col : col + 28] = 0
        values = set(np.unique(outside).tolist()) - {0}
        assert values  # clutter is there
        assert i + 1 not in values  # ... and none of it is the item itself
        assert values <= {int(s) + 1 for s in made.sources[i]}


def test_clutter_is_vectorised_fast_enough() -> None:
    pool = np.random.default_rng(0).integers(0, 256, (6000, 28, 28), dtype=np.uint8)
    index = np.arange(6000)
    start = time.perf_counter()
    made = datasets._clutter(
        pool, index, pool, size=64, patches=8, patch_size=8, rng=np.random.default_rng(0)
    )
    assert time.perf_counter() - start < 5.0  # about 0.1 s on a laptop core
    assert made.images.shape == (6000, 64, 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 27}, "size must be an integer >= 28"),
        ({"size": 64.0}, "size must be an integer >= 28"),
        ({"patches": -1}, "patches must be an integer >= 0; received patches=-1"),
        ({"patches": True}, "patches must be an integer >= 0"),
        ({"patch_size": 0}, "patch_size must be a positive integer; received 0"),
        ({"patch_size": 29}, "patch_size must be at most 28.*patch_size=29"),
        ({"num_test": 0}, "num_test must be a positive integer; received 0"),
        ({"limit_train": -5}, "limit_train must be a positive integer"),
    ],
)
def test_cluttered_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    write_fake_mnist(tmp_path)
    with pytest.raises(ValueError, match=message):
        datasets.cluttered_fashion_mnist(tmp_path, **kwargs)


def test_clutter_needs_two_items() -> None:
    pool = constant_items(1)
    with pytest.raises(ValueError, match="at least 2 items"):
        datasets._clutter(
            pool,
            np.zeros(1, int),
            pool,
            size=40,
            patches=1,
            patch_size=4,
            rng=np.random.default_rng(),
        )


def test_missing_cluttered_fashion_mnist_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(data.MissingDataError) as info:
        datasets.load("cluttered-fashion-mnist", tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "the folder does not exist" in message


@needs_fashion_mnist
def test_installed_cluttered_fashion_mnist() -> None:
    ds = datasets.load("cluttered-fashion-mnist", limit_train=300, seed=7)
    assert ds.x_train.shape == (300, 1, datasets.CLUTTERED_CANVAS, datasets.CLUTTERED_CANVAS)
    assert ds.x_test.shape == (10000, 1, datasets.CLUTTERED_CANVAS, datasets.CLUTTERED_CANVAS)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
    plain = datasets.load("fashion-mnist", limit_train=300, seed=7)
    np.testing.assert_array_equal(ds.y_train, plain.y_train)
    other = datasets.load("cluttered-fashion-mnist", limit_train=300, seed=8)
    assert not np.array_equal(ds.y_train, other.y_train)


@needs_fashion_mnist
def test_installed_cluttered_canvases_hold_their_item() -> None:
    # Without clutter, each canvas is its Fashion-MNIST item, moved (up to the normalisation).
    ds = datasets.cluttered_fashion_mnist(limit_train=50, seed=2, patches=0, num_test=20)
    plain = datasets.fashion_mnist(limit_train=50, seed=2)
    for canvas, item in zip(ds.x_train[:, 0], plain.x_train[:, 0], strict=True):
        lit_canvas, lit_item = canvas > canvas.min() + 1e-4, item > item.min() + 1e-4
        row = lit_canvas.any(1).argmax() - lit_item.any(1).argmax()
        col = lit_canvas.any(0).argmax() - lit_item.any(0).argmax()
        window = canvas[row : row + 28, col : col + 28]
        assert np.corrcoef(window.ravel(), item.ravel())[0, 1] == pytest.approx(1.0, abs=1e-5)
        assert lit_canvas.sum() == lit_item.sum()


def test_cluttered_test_size_reads_the_module_constant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake_mnist(tmp_path)
    assert datasets.load("cluttered-fashion-mnist", tmp_path).x_test.shape[0] == 10  # all
    monkeypatch.setattr(datasets, "CLUTTERED_TEST", 4)
    ds = datasets.load("cluttered-fashion-mnist", tmp_path)
    assert ds.x_test.shape == (4, 1, 64, 64)
    assert np.all(np.diff(ds.y_test) > 0)  # kept in file order (the labels are 0..9)
    assert datasets.cluttered_fashion_mnist(tmp_path, num_test=7).x_test.shape[0] == 7


def test_cached_files_do_not_leak_changes_between_loads(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path)
    first = datasets.fashion_mnist(tmp_path)
    first.y_train[:] = 9
    first.x_train[:] = 0.0
    again = datasets.fashion_mnist(tmp_path)
    np.testing.assert_array_equal(again.y_train, np.arange(30) % 10)
    assert again.x_train.std() == pytest.approx(1.0, abs=1e-5)


def test_generated_cluttered_shapes_need_no_files() -> None:
    shapes = datasets.load("cluttered-shapes", limit_train=60, seed=1)
    assert shapes.x_train.shape == (60, 1, 64, 64)
    assert shapes.num_classes == len(datasets.SHAPES) == 6
    assert np.bincount(shapes.y_train).tolist() == [10] * 6  # balanced
    again = datasets.load("cluttered-shapes", limit_train=60, seed=1)
    np.testing.assert_array_equal(shapes.x_train, again.x_train)
    other = datasets.load("cluttered-shapes", limit_train=60, seed=2)
    assert not np.array_equal(other.x_train, shapes.x_train)  # the seed draws the training set
    with datasets.cluttered_test_count(50):
        small, small_other = (
            datasets.load("cluttered-shapes", limit_train=30, seed=s) for s in (1, 2)
        )
    assert small.x_test.shape == (50, 1, 64, 64)
    # the test canvases do not depend on the seed (up to the training set's normalisation)
    np.testing.assert_array_equal(small.y_test, small_other.y_test)
    with pytest.raises(ValueError, match="limit_train must be at least 2 for clutter"):
        datasets.load("cluttered-shapes", limit_train=1)
    with pytest.raises(ValueError, match="reads no files; received data_dir="):
        datasets.load("cluttered-shapes", data_dir="/tmp")
    with pytest.raises(ValueError, match="count must be a positive integer; received 0"):
        datasets.cluttered_test_count(0).__enter__()


def test_a_shape_item_is_its_class_drawn_once() -> None:
    rng = np.random.default_rng(0)
    labels = np.arange(600) % 6
    items = datasets._shapes(labels, rng)
    assert items.shape == (600, 28, 28)
    assert items.dtype == np.uint8
    drawn = items > 0
    height, width = drawn.any(axis=2).sum(axis=1), drawn.any(axis=1).sum(axis=1)
    patch = datasets.CLUTTERED_PATCH_SIZE
    assert (np.maximum(height, width) > patch).all()  # no clutter patch holds a whole item
    area = drawn.sum(axis=(1, 2))
    assert (items.max(axis=(1, 2)) >= 128).all()
    # the ring is the disc with a hole: less area at the same radius distribution
    assert area[labels == 4].mean() < area[labels == 0].mean()
