"""numpy front-end: the cross-framework reference, with analytic gradients.

numpy has no autodiff, so the vector-Jacobian products come from the core itself: the
hand-written VJP of the masked crop (``_agnostic.masked_crop_vjp``, the same one torch runs)
and the agnostic chain rule from the masks to the strides (``_agnostic.stride_vjp``). They are
accumulated in float64 whatever the input's dtype (the crop is still decided in the input's
precision), which makes them a sharp reference for every backend's autodiff. The conformance
suite holds them to float64 central finite differences, to the original's golden gradients and
to an independent derivation written separately (``diffstride_conformance.oracle``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat.numpy as np_xp
import numpy as np

from diffstride import _agnostic, _api, _sizes
from diffstride._layers import DiffStrideMixin, diffstride_init
from diffstride._options import Options, document_options, with_options
from diffstride._registry import get_backend
from diffstride._validation import check_data_format, check_input, check_stride_values

__all__ = [
    "DiffStride",
    "diffstride",
    "diffstride_vjp",
    "spectral_pooling",
    "spectral_pooling_vjp",
]


diffstride, spectral_pooling = _api.bind("numpy")


def _cotangent(cotangent: Any, x: np.ndarray, axes: Sequence[int], output_size: Any) -> Any:
    """The cotangent as float64, after checking it has the output's shape."""
    expected = list(x.shape)
    for axis, size in zip(axes, output_size, strict=True):
        expected[axis] = size
    cotangent = np.asarray(cotangent)
    if cotangent.shape != tuple(expected):
        raise ValueError(
            f"cotangent must have the output's shape {tuple(expected)}; received shape "
            f"{cotangent.shape}"
        )
    return cotangent.astype(np.float64)


@with_options
def diffstride_vjp(
    x: np.ndarray,
    strides: Any,
    cotangent: np.ndarray,
    *,
    output_size: Sequence[int] | None = None,
    **options: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic gradients of ``sum(diffstride(x, strides, ...) * cotangent)``.

    Returns ``(grad_x, grad_strides)`` with the dtypes of ``x`` and ``strides``
    (``grad_strides`` has ``strides``' length). ``method`` is accepted and ignored: the VJP
    is the same whatever path the forward pass takes.

    {options}

    >>> import numpy as np
    >>> from diffstride.numpy import diffstride, diffstride_vjp
    >>> x = np.random.default_rng(0).normal(size=(1, 2, 16, 16))
    >>> y = diffstride(x, (2.0, 2.0))
    >>> grad_x, grad_strides = diffstride_vjp(x, (2.0, 2.0), np.ones_like(y))
    >>> grad_x.shape, grad_strides.shape
    ((1, 2, 16, 16), (2,))
    """
    config = Options.from_kwargs(options, where="diffstride_vjp()")
    x = np.asarray(x)
    prepared = _api.prepare(get_backend("numpy"), x, strides, config, output_size=output_size)
    window, sizes, axes = prepared.window, prepared.sizes, prepared.axes
    masks = _agnostic.window_masks(
        prepared.thresholds, window, sizes, config.smoothness_factor, inside=config.inside, xp=np_xp
    )
    masks64 = [m.astype(np.float64) for m in masks]
    _, spectrum = _agnostic.masked_crop(
        x.astype(np.float64), masks64, window, sizes=sizes, axes=axes, xp=np_xp
    )
    cotangent = _cotangent(cotangent, x, axes, window.output_size)
    grad_x, *grad_masks = _agnostic.masked_crop_vjp(
        cotangent, spectrum, masks64, window, sizes=sizes, axes=axes, xp=np_xp
    )
    grad_strides = _agnostic.stride_vjp(
        grad_masks,
        prepared.strides,
        prepared.thresholds,
        window,
        sizes,
        xp=np_xp,
        **config.mask_keywords,
    )
    strides_dtype = strides.dtype if isinstance(strides, np.ndarray) else x.dtype
    return grad_x.astype(x.dtype), np.asarray(grad_strides, dtype=strides_dtype)


def spectral_pooling_vjp(
    x: np.ndarray, strides: Any, cotangent: np.ndarray, *, data_format: str = "channels_first"
) -> np.ndarray:
    """Analytic gradient of ``sum(spectral_pooling(x, strides) * cotangent)`` w.r.t. ``x``.

    >>> import numpy as np
    >>> from diffstride.numpy import spectral_pooling_vjp
    >>> spectral_pooling_vjp(np.ones((1, 1, 8, 8)), 2, np.ones((1, 1, 4, 4))).shape
    (1, 1, 8, 8)
    """
    x = np.asarray(x)
    data_format = check_data_format(data_format)
    sizes = check_input(x, data_format, get_backend("numpy"))
    axes = Options(data_format=data_format).axes(x.ndim)
    window = _sizes.spectral_window(sizes, check_stride_values(strides, rank=len(sizes)))
    _, spectrum = _agnostic.masked_crop(
        x.astype(np.float64), None, window, sizes=sizes, axes=axes, xp=np_xp
    )
    cotangent = _cotangent(cotangent, x, axes, window.output_size)
    grad_x, *_ = _agnostic.masked_crop_vjp(
        cotangent, spectrum, None, window, sizes=sizes, axes=axes, xp=np_xp
    )
    return grad_x.astype(x.dtype)


class DiffStride(DiffStrideMixin):
    """The reference layer: ``layer(x)`` and ``layer.vjp(x, cotangent)`` on numpy arrays, for
    1, 2 or 3 spatial axes (as many as ``strides`` has entries; any with ``shared_stride``).

    ``self.strides`` is a float32 array; calls do not project it (``layer.project(sizes)``
    does, as the other frameworks' training calls; with ``ramp="inside"`` it only clips).
    With ``trainable=False``, :meth:`vjp` returns zeros for the strides.

    {options}

    >>> import numpy as np
    >>> from diffstride.numpy import DiffStride
    >>> layer = DiffStride((2.0, 2.0))
    >>> x = np.ones((1, 2, 32, 32), np.float32)
    >>> y = layer(x)
    >>> grad_x, grad_strides = layer.vjp(x, np.ones(y.shape))
    >>> y.shape, grad_strides.shape
    ((1, 2, 24, 24), (2,))
    """

    __init__ = diffstride_init()

    def _make_strides(self, trainable: bool) -> None:
        self.trainable = trainable
        self.strides = np.asarray(self.initial_value, dtype=np.float32)

    def _stride_values(self) -> np.ndarray:
        return self.strides

    def __call__(self, x: np.ndarray) -> np.ndarray:
        backend = get_backend("numpy")
        return _api.diffstride_on(
            backend,
            x,
            self.strides.astype(x.dtype),
            self.options,
            sizes=self._checked_sizes(x, backend),
            name=self._stride_name(),
        )

    def project(self, input_size: Sequence[int]) -> np.ndarray:
        """``S <- clip(max(S, N / (N - R)), lower, upper)`` in place; returns the new value."""
        sizes = tuple(input_size)
        self.strides = self._projected(self.strides, sizes, clip=True, xp=np_xp)
        return self.strides

    def vjp(self, x: np.ndarray, cotangent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(grad_x, grad_strides)`` of ``sum(self(x) * cotangent)``."""
        self._checked_sizes(x, get_backend("numpy"))
        grad_x, grad_strides = diffstride_vjp(
            x, self.strides.astype(x.dtype), cotangent, **self.options.as_dict()
        )
        if not self.trainable:
            grad_strides = np.zeros_like(grad_strides)
        return grad_x, grad_strides.astype(np.float32)

    def __repr__(self) -> str:
        return f"DiffStride({self._extra_repr()})"


DiffStride.__doc__ = document_options(DiffStride.__doc__)
