"""DiffStride on every installed framework, next to the numpy reference.

    python -m diffstride.examples.frameworks

Prints, per backend: the output shape, the stride gradient and the largest relative
difference from the numpy reference (output and gradients).

Every backend runs through the public entry point, ``diffstride.diffstride(..., backend=name)``,
and is fed and read through its adapter's own hooks (``from_numpy``, ``vjp``, ``concrete``), so
the comparison exercises what a user's call exercises, with no conversion code of its own.
"""

from __future__ import annotations

import numpy as np

import diffstride
from diffstride import numpy as reference


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    strides = np.array([2.0, 2.5], dtype=np.float32)
    y_ref = reference.diffstride(x, strides)
    cot = rng.standard_normal(y_ref.shape).astype(np.float32)
    gx_ref, gs_ref = reference.diffstride_vjp(x, strides, cot)
    print(f"input {x.shape}, strides {strides.tolist()}, R = 4")
    print(
        f"diffstride.output_size((32, 32), {strides.tolist()}) = "
        f"{diffstride.output_size((32, 32), tuple(strides.tolist()))}"
    )
    header = f"{'backend':<18}{'output shape':<18}{'d output':>10}{'d grad x':>10}"
    print(f"{header}{'d grad S':>10}  grad strides")
    for name in diffstride.available_backends():
        backend = diffstride.get_backend(name)
        xb, sb = backend.from_numpy(x), backend.from_numpy(strides)
        if backend.differentiable:
            y, (gx, gs) = backend.vjp(
                lambda a, b, name=name: diffstride.diffstride(a, b, backend=name), [xb, sb], cot
            )
        else:
            y = backend.concrete(diffstride.diffstride(xb, sb, backend=name))
            gx, gs = gx_ref, gs_ref
        errors = [
            np.abs(a - b).max() / np.abs(b).max()
            for a, b in ((y, y_ref), (gx, gx_ref), (gs, gs_ref))
        ]
        grads = f"{np.round(gs, 4).tolist()}" if backend.differentiable else "(no autodiff)"
        print(
            f"{name:<18}{tuple(y.shape)!s:<18}"
            + "".join(f"{e:>10.1e}" for e in errors)
            + f"  {grads}"
        )
    print(f"{'numpy VJP':<18}{y_ref.shape!s:<18}{'':>30}  {np.round(gs_ref, 4).tolist()}")


if __name__ == "__main__":
    main()
