"""Helpers to drive real kernels, shared by the test suite and ``make demo``."""

from durable_nb.testing.kernel import CellResult, KernelSession

__all__ = ["CellResult", "KernelSession"]
