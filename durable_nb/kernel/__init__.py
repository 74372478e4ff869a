"""IPython integration: ``%load_ext durable_nb`` registers the durable magics."""

from __future__ import annotations

from typing import Any

from durable_nb.kernel.magics import DurableMagics


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(DurableMagics)


__all__ = ["DurableMagics", "load_ipython_extension"]
