"""Runnable examples: ``python -m diffstride.examples.demo`` and the training command."""
