"""``Backend``: the contract between the agnostic core and one framework.

A framework reaches diffstride through an adapter: a subclass of :class:`Backend` registered
in the entry-point group ``diffstride.backends``. The base class is the whole contract. Six
members are required (the core cannot run without them) and are checked when the adapter is
loaded; every optional capability has a default here that is correct for an eager,
static-shape framework without custom gradients, so the core asks the adapter and never probes
it with ``getattr``. ``docs/backends.md`` lists the namespace functions the core calls on each
path.

What the core calls, and on what:

* ``namespace()``: the Array API namespace (with ``fft``) every computation runs on;
* ``stop_gradient(x)``: on the strides' projection only;
* ``concrete(x)``: on small arrays only (the strides with the thresholds, the kept counts),
  never on the input ``x``; it returns ``None`` where values are symbolic (jit, graph mode),
  and a lazy framework may compute its (tiny) argument here;
* ``owns(x)``: to dispatch ``diffstride.diffstride``; it must not import the framework.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

__all__ = ["MATMUL_LAYOUTS", "REQUIRED", "Backend", "Tuning", "check_matmul_layouts"]

#: The members an adapter must define; loading an adapter checks each one.
REQUIRED = ("name", "module", "owns", "namespace", "stop_gradient", "concrete")
#: The GEMM path's layouts an adapter may name in ``matmul_layouts``.
MATMUL_LAYOUTS = ("permuted", "stacked")


def check_matmul_layouts(layouts: Any, owner: str, name: str = "matmul_layouts") -> None:
    """A ``ValueError`` naming ``owner`` unless ``layouts`` is a pair (channels_first,
    channels_last) of :data:`MATMUL_LAYOUTS`."""
    if not (
        isinstance(layouts, tuple)
        and len(layouts) == 2
        and all(layout in MATMUL_LAYOUTS for layout in layouts)
    ):
        raise ValueError(
            f"{owner} must set {name} to a pair (channels_first, channels_last) of "
            f"{' or '.join(map(repr, MATMUL_LAYOUTS))}; received {name}={layouts!r}"
        )


@dataclass(frozen=True)
class Tuning:
    """How fast, never what: the performance choices an adapter may make, measured on a
    machine, apart from the contract. Every value computes the same map; an adapter overrides
    the class attribute ``tuning`` with its own (``Tuning(matmul_layouts=...)``).

    Attributes
    ----------
    matmul_layouts
        ``(channels_first, channels_last)``: how the GEMM path lays out its products.
        ``"permuted"``: one 2-D GEMM per axis over a permuted intermediate. ``"stacked"``: a
        matrix times a stack of slices that the namespace's ``matmul`` reads as they lie
        (see ``diffstride._matmul.apply_separable``).
    fft_channels_first
        The FFT path runs a channels_last input on a channels-first view: for FFTs that copy
        non-innermost axes innermost themselves at every transform (torch on CPU).
    auto_matmul_max_sizes
        ``(DiffStride, fixed pooling)``: up to which spatial size ``method="auto"`` takes the
        GEMMs. The default takes the FFTs for DiffStride and the GEMMs for fixed pooling up
        to 32 (measured on 2 CPU cores).
    auto_matmul_max_volume
        ``(channels_first, channels_last)``: within the size limit, DiffStride's ``auto``
        takes the GEMMs only while one sample (channels times spatial sizes) has at most this
        many elements; ``0``: no bound. For GEMMs whose transposes slow down past a size.
    auto_matmul_min_channels
        ``(channels_first, channels_last)``: within the size limit, DiffStride's ``auto``
        takes the GEMMs only while the channels number at least this times the largest
        spatial size; ``0``: no bound. For GEMMs that run thin over few channels.
    """

    matmul_layouts: tuple[str, str] = ("permuted", "permuted")
    fft_channels_first: bool = False
    auto_matmul_max_sizes: tuple[int, int] = (0, 32)
    auto_matmul_max_volume: tuple[int, int] = (0, 0)
    auto_matmul_min_channels: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        check_matmul_layouts(self.matmul_layouts, "Tuning")
        if not isinstance(self.fft_channels_first, bool):
            raise TypeError(
                "Tuning.fft_channels_first must be a bool; received "
                f"fft_channels_first={self.fft_channels_first!r}"
            )
        sizes = self.auto_matmul_max_sizes
        if not (
            isinstance(sizes, tuple)
            and len(sizes) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes)
        ):
            raise ValueError(
                "Tuning.auto_matmul_max_sizes must be a pair of ints >= 0 (DiffStride, fixed "
                f"pooling); received auto_matmul_max_sizes={sizes!r}"
            )
        for name, kinds in (("auto_matmul_max_volume", int), ("auto_matmul_min_channels", float)):
            pair = getattr(self, name)
            if not (
                isinstance(pair, tuple)
                and len(pair) == 2
                and all(
                    isinstance(n, (int, kinds)) and not isinstance(n, bool) and n >= 0 for n in pair
                )
            ):
                kind = "ints" if kinds is int else "numbers"
                raise ValueError(
                    f"Tuning.{name} must be a pair of {kind} >= 0 (channels_first, "
                    f"channels_last); received {name}={pair!r}"
                )

    def gemms_fit(self, shape: tuple[Any, ...], axes: tuple[int, ...]) -> bool:
        """Whether DiffStride's ``auto`` may take the GEMMs for an input of ``shape``
        transformed along ``axes`` (the sample's volume and channel bounds of its layout; the
        size limit is apart). ``True`` where a size is not an int (symbolic)."""
        ndim = len(shape)
        spatial = [a % ndim for a in axes]
        if not all(isinstance(n, int) for n in shape[1:]):
            return True
        channels = 1
        for axis in range(1, ndim):
            if axis not in spatial:
                channels *= shape[axis]
        sizes = [shape[a] for a in spatial]
        layout = 0 if spatial[-1] == ndim - 1 else 1
        max_volume = self.auto_matmul_max_volume[layout]
        if max_volume and channels * int(np.prod(sizes)) > max_volume:
            return False
        return channels >= self.auto_matmul_min_channels[layout] * max(sizes, default=0)


#: The tuning members an adapter once set directly on its class (still read, deprecated).
_TUNING_FIELDS = tuple(field.name for field in fields(Tuning))


class Backend:
    """Base class of a diffstride adapter: what a framework must provide, and what it may.

    Required
    --------
    name
        Registry name, e.g. ``"torch"``.
    module
        The framework's top-level module, e.g. ``"torch"`` (``available_backends`` checks it
        with ``find_spec``, importing nothing).
    owns(x)
        Is ``x`` an array of this framework? Must not import the framework (look it up in
        ``sys.modules``), and must answer from ``type(x)`` alone: dispatch remembers the
        answer per type.
    namespace()
        The Array API namespace the core runs on, ``fft`` included.
    stop_gradient(x)
        ``x`` with no gradient flowing back through it.
    concrete(x)
        A small array (strides, thresholds, counts; never the input) as numpy, or ``None``
        where its value is symbolic.

    Optional capabilities (defaults: none of them)
    ----------------------------------------------
    differentiable
        Gradients flow through the namespace's functions. Without it the conformance suite
        skips the gradient checks and never calls :meth:`vjp`.
    dynamic_shapes, size(x, axis)
        Symbolic sizes can slice and reshape arrays (TensorFlow graph mode); ``size`` reads a
        size at run time as a 0-d integer array.
    cond(predicate, if_true, if_false)
        Choose a computation at run time (where sizes are symbolic).
    custom_vjp(forward, backward)
        A differentiable function with the core's hand-written VJP, or ``None`` (autodiff of
        the forward pass is then used); the primals and residual are spelled out on the
        method.
    tracing(), untraced(fn)
        Whether a tracer records a graph that a value read would split (``torch.compile``),
        and ``fn`` run outside that tracer.
    full_precision()
        A context in which automatic mixed precision is off (torch ``autocast``).
    exact_gemms(x)
        Whether float32 GEMMs on ``x`` run at float32 precision (not TensorFloat-32 or
        bfloat16 passes): where not, ``method="auto"`` takes the FFTs.

    Performance
    -----------
    tuning
        A :class:`Tuning`: the GEMM layouts, the FFT path's channels-first view and the
        sizes up to which ``method="auto"`` takes the GEMMs. Performance only.
    upload(arrays, device)
        The numpy arrays the library keeps on the device as arrays there (default: one
        ``asarray`` each); torch packs them into one copy on CUDA.

    The conformance suite's testing hooks (``from_numpy``, ``test_inputs``, ``vjp``) are
    not part of this class: see ``diffstride_conformance.TestingHooks``.
    """

    name: ClassVar[str]
    module: ClassVar[str]
    differentiable: ClassVar[bool] = False
    dynamic_shapes: ClassVar[bool] = False
    tuning: ClassVar[Tuning] = Tuning()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """An adapter that sets a tuning member on its class (as before :class:`Tuning`)
        still gets it, with a deprecation warning."""
        super().__init_subclass__(**kwargs)
        legacy = {name: cls.__dict__[name] for name in _TUNING_FIELDS if name in cls.__dict__}
        if legacy:
            warnings.warn(
                f"{cls.__qualname__} sets {', '.join(sorted(legacy))} on the class; set "
                f"tuning = diffstride.Tuning(...) instead",
                DeprecationWarning,
                stacklevel=2,
            )
            cls.tuning = replace(cls.tuning, **legacy)

    def owns(self, x: Any) -> bool:
        raise NotImplementedError

    def namespace(self) -> Any:
        raise NotImplementedError

    def stop_gradient(self, x: Any) -> Any:
        raise NotImplementedError

    def concrete(self, x: Any) -> np.ndarray | None:
        raise NotImplementedError

    def size(self, x: Any, axis: int) -> Any:
        """The run-time size of ``x`` along ``axis`` (only asked where ``dynamic_shapes``)."""
        return x.shape[axis]

    def cond(self, predicate: Any, if_true: Callable[[], Any], if_false: Callable[[], Any]) -> Any:
        return if_true() if bool(predicate) else if_false()

    def custom_vjp(
        self,
        forward: Callable[..., tuple[Any, Any]],
        backward: Callable[..., tuple[Any, ...]],
        *,
        reference: Callable[..., Any] | None = None,
    ) -> Callable[..., Any] | None:
        """``f(*primals) = forward(*primals)[0]`` whose gradient is ``backward(residual,
        primals, cotangent, needs)``; ``None`` where not supported.

        The primals are the input ``x`` and, for DiffStride, either one mask vector per
        spatial axis (they carry the strides' gradient) or the strides followed by three
        constant arrays of the host plan (see ``_plan``); fixed pooling passes ``x`` alone.
        ``forward`` returns ``(out, residual)``, the residual a framework array to keep for
        the backward pass. ``backward`` returns one gradient per primal, in order; ``needs``
        is a tuple of bools, one per primal (all ``True`` for a framework without the
        notion), and a primal not needed may get ``None``. ``reference(*primals)`` computes
        ``f`` with differentiable operations throughout (``None``: ``forward`` does): a
        framework that differentiates the backward pass again (torch ``create_graph=True``)
        differentiates it instead. ``f`` is built once per configuration and reused."""
        del forward, backward, reference
        return None

    def tracing(self) -> bool:
        return False

    def full_precision(self) -> AbstractContextManager[Any]:
        """A scope in which the framework's automatic mixed precision (torch ``autocast``)
        does not lower the core's GEMMs and FFTs: the core runs half-precision inputs in
        float32 and returns the input's dtype."""
        return contextlib.nullcontext()

    def exact_gemms(self, x: Any) -> bool:
        """Whether the GEMMs on ``x`` (an input, or a tracer of one) compute in ``x``'s
        precision. Where the framework lowers float32 products by default (TensorFlow runs
        them in TensorFloat-32 on recent NVIDIA GPUs, and in bfloat16 passes on TPUs), the
        GEMM path computes another map than the FFTs, to about three digits;
        ``method="auto"``, which picks a path for speed, then takes the FFTs so that it
        never changes the values."""
        del x
        return True

    def reusable_arrays(self) -> AbstractContextManager[Any]:
        """A scope in which the arrays the library creates to keep across calls (the host
        plan's constants on the device) can serve any later call: torch turns inference mode
        off, whose tensors autograd refuses to save for a training call's backward."""
        return contextlib.nullcontext()

    def upload(self, arrays: Sequence[np.ndarray], device: Any) -> tuple[Any, ...]:
        """``arrays`` (numpy, in any memory order: the host plan's constants or fixed
        pooling's GEMM matrices, made where ``reusable_arrays`` holds) as arrays on
        ``device`` (``None``: the namespace's default), one each, in order, with their
        shapes, dtypes and values. The results may share the numpy arrays' memory; nothing
        writes to them, and a later upload must leave them as they are. A training step
        whose strides moved uploads a new plan in every layer: where each host-to-device
        copy synchronises (torch on CUDA), an adapter may pack them into one copy."""
        xp = self.namespace()
        # np.require, not np.ascontiguousarray: that makes a 0-d array 1-d
        return tuple(xp.asarray(np.require(a, requirements="C"), device=device) for a in arrays)

    def untraced(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn

    def __repr__(self) -> str:
        return f"<diffstride backend {self.name!r}>"


def missing_members(adapter: Any) -> list[str]:
    """The required members ``adapter`` leaves undefined (not overridden from the base)."""
    missing = []
    for member in REQUIRED:
        value = getattr(type(adapter), member, None)
        if value is None or value is getattr(Backend, member, None):
            missing.append(member)
    return missing
