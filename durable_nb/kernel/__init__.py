"""IPython integration: ``%load_ext durable_nb`` registers the durable magics and
``%%journal``."""

from __future__ import annotations

from typing import Any

from durable_nb.kernel.cells import await_workflow_cells
from durable_nb.kernel.journal_magic import JournalMagics
from durable_nb.kernel.magics import DurableMagics


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(DurableMagics)
    ipython.register_magics(JournalMagics)
    if await_workflow_cells not in ipython.input_transformers_post:
        ipython.input_transformers_post.append(await_workflow_cells)


def unload_ipython_extension(ipython: Any) -> None:
    if await_workflow_cells in ipython.input_transformers_post:
        ipython.input_transformers_post.remove(await_workflow_cells)


__all__ = ["DurableMagics", "JournalMagics", "load_ipython_extension", "unload_ipython_extension"]
