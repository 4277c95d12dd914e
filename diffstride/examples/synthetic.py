"""The embedded default data set: four classes that live in a known band of spatial frequencies.

Why it is built this way
------------------------
DiffStride learns *how much* to downsample. To see whether it learns the right amount, the
default data set is one where the right amount is known in advance: :func:`synthetic` puts all
of its class information in a fixed band of spatial frequencies. Spectral downsampling by a
total stride ``S`` per axis keeps the frequencies below about ``size / (2 S)`` cycles per image,
so the labels survive exactly while that limit stays above the band
(:func:`synthetic_max_stride`). Too much downsampling destroys the labels; less than that only
wastes compute.

The set is generated in-process from a seed, so the example runs anywhere, with no download and
no files; that is why it is a module of its own, apart from the file readers
(:mod:`diffstride.examples.datasets`). The band arithmetic (:func:`synthetic_band`,
:func:`synthetic_frequencies`, :func:`synthetic_max_stride`) is public because the demo and the
tests state their expectations with it rather than with copies of the numbers. What it returns
is the same :class:`~diffstride.examples.data.Dataset` as every other source, normalised the
same way.
"""

from __future__ import annotations

import numpy as np

from diffstride.examples.data import Dataset, check_count, normalised

__all__ = [
    "SYNTHETIC_NOISE_STD",
    "synthetic",
    "synthetic_band",
    "synthetic_frequencies",
    "synthetic_max_stride",
]

SYNTHETIC_NOISE_STD = 1.0
"""Standard deviation of the white Gaussian noise added to every synthetic image."""


def synthetic_band(size: int) -> int:
    """The highest per-axis frequency (cycles per image) carrying class information: ``size // 4``.

    Parameters
    ----------
    size
        The side of the square images, at least 16 (so that the band is at least 2 and the
        class frequencies differ from each other and from the distractor's).

    Returns
    -------
    int
        The band.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 16:
        raise ValueError(f"size must be an integer >= 16; received {size!r}")
    return int(size) // 4


def synthetic_frequencies(size: int) -> tuple[tuple[int, int], ...]:
    """The integer frequency pair ``(k_y, k_x)`` of each synthetic class, in cycles per image.

    With ``b = synthetic_band(size)``: ``(b, 1), (1, b), (b, b), (b, -b)``: a mostly horizontal
    grating, a mostly vertical one and the two diagonals. Every pair has a per-axis maximum of
    exactly ``b``, so a crop that loses frequency ``b`` on either axis loses every class at once.

    Parameters
    ----------
    size
        The side of the square images (see :func:`synthetic_band`).

    Returns
    -------
    tuple of (int, int)
        One pair per class, indexed by label.
    """
    band = synthetic_band(size)
    return (band, 1), (1, band), (band, band), (band, -band)


def synthetic_max_stride(size: int) -> float:
    """The total stride per axis above which the synthetic labels are lost: ``size / (2 band)``.

    A crop to ``size / S`` pixels keeps per-axis frequencies below ``size / (2 S)``, which holds
    the class band while ``S < size / (2 band)``: 2.0 for ``size = 32`` (exclusive). ``size``
    is the side of the square images, as for :func:`synthetic_frequencies`.
    """
    return size / (2 * synthetic_band(size))


def _gratings(
    ky: np.ndarray,
    kx: np.ndarray,
    size: int,
    rng: np.random.Generator,
    amplitude: tuple[float, float],
) -> np.ndarray:
    """Cosine gratings ``a cos(2 pi (ky i + kx j) / size + phase)``, random phase and amplitude."""
    n = len(ky)
    rows, cols = np.mgrid[0:size, 0:size]
    phase = rng.uniform(0.0, 2.0 * np.pi, n)[:, None, None]
    scale = rng.uniform(*amplitude, n)[:, None, None]
    angle = 2.0 * np.pi * (ky[:, None, None] * rows + kx[:, None, None] * cols) / size
    return scale * np.cos(angle + phase)


def _synthetic_split(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic images ``(n, 1, size, size)`` and their balanced, shuffled labels."""
    pairs = np.array(synthetic_frequencies(size))
    labels = rng.permutation(np.arange(n) % len(pairs))
    images = _gratings(pairs[labels, 0], pairs[labels, 1], size, rng, (0.8, 1.2))
    distractor = rng.integers(0, 2, size=(n, 2))
    images += _gratings(distractor[:, 0], distractor[:, 1], size, rng, (0.0, 2.0))
    images += rng.normal(0.0, SYNTHETIC_NOISE_STD, images.shape)
    return images[:, None].astype(np.float32), labels.astype(np.int64)


def synthetic(
    num_train: int = 4096, num_test: int = 1024, size: int = 32, seed: int = 0
) -> Dataset:
    """The embedded default data set: four classes that live in a known frequency band.

    Grayscale ``size x size`` images (one channel), four balanced classes. An image of class
    ``c`` is the sum of

    * a 2-D cosine grating ``a cos(2 pi (k_y i + k_x j) / size + phi)`` at the class's integer
      frequency pair ``(k_y, k_x)`` (:func:`synthetic_frequencies`), random phase ``phi`` and
      random amplitude ``a`` in [0.8, 1.2]. With ``band = size // 4`` the pairs are
      ``(band, 1), (1, band), (band, band), (band, -band)``; for ``size = 32``, band 8:
      ``(8, 1), (1, 8), (8, 8), (8, -8)``;
    * a low-frequency distractor: a grating at a pair drawn uniformly from ``{0, 1}^2``, random
      phase and amplitude in [0, 2]. It carries no label, and is there so that keeping only
      the very lowest frequencies is not enough;
    * white Gaussian noise of standard deviation 1.0 (``SYNTHETIC_NOISE_STD``), so that the
      task is not trivial.

    What downsampling the labels allow is best said as an output size: every class has
    frequency ``band`` on at least one axis, so the last feature map must keep that frequency,
    which takes at least ``2 band + 1`` pixels per axis (17 for ``size = 32``), a total
    downsampling of ``size / (2 band + 1)``, about 1.9. A hard spectral crop by a total stride
    ``S`` keeps frequencies below ``size / (2 S)``: the labels survive for
    ``S < size / (2 band)`` (:func:`synthetic_max_stride`, 2.0 for ``size = 32``). DiffStride's
    soft mask ``clip((R + T - d) / R, 0, 1)`` still passes frequency ``band`` (attenuated)
    while ``T > band - R``, and its output then has about ``2 (R + T) > 2 band`` pixels: the
    same limit on the output size, reached at larger stride *values* (the ramp keeps ``R``
    more bins). Beyond it the classes are indistinguishable; short of it, compute is wasted.
    With ``R = 4`` DiffStride cannot shrink a map below about ``2 (R + 1) = 10`` pixels, so the
    band (``> R``) is what makes the limit reachable.

    Parameters
    ----------
    num_train, num_test
        The number of training and test images.
    size
        The side of the images, at least 16.
    seed
        The seed. The training and test splits draw from independent streams, so the test
        split depends on ``seed`` and ``size`` only, not on ``num_train``.

    Returns
    -------
    Dataset
        Named ``"synthetic"``, normalised with the training statistics.
    """
    check_count("num_train", num_train)
    check_count("num_test", num_test)
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    train = _synthetic_split(num_train, size, train_rng)
    test = _synthetic_split(num_test, size, test_rng)
    description = (
        f"synthetic: 4 cosine-grating classes at frequencies {synthetic_frequencies(size)} "
        f"of {size}x{size} images (labels lost for total stride >= "
        f"{synthetic_max_stride(size):g}), {num_train} train / {num_test} test"
    )
    return normalised("synthetic", description, len(synthetic_frequencies(size)), train, test)
