"""``python -m diffstride.examples.train``: see :mod:`diffstride.examples.train`."""

from diffstride.examples.train import main

if __name__ == "__main__":
    raise SystemExit(main())
