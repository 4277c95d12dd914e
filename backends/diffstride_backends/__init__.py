"""Thin adapters that connect the agnostic DiffStride core to each framework.

Each adapter supplies only what the Array API standard lacks: a stop-gradient, a way to read
concrete values, and (for TensorFlow, which has no standard namespace) the few functions the
core calls. None imports its framework at import time; see ``diffstride._registry``.
"""
