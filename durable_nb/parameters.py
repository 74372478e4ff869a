"""Notebook parameters, as papermill has them: a cell tagged ``parameters`` holds the
defaults, and a run overrides them with a cell of assignments right after it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def cell_source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def parameters_index(cells: list[Mapping[str, Any]]) -> int | None:
    """Index of the first cell tagged ``parameters``, if any."""
    for i, cell in enumerate(cells):
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            return i
    return None


def assignments(values: Mapping[str, Any]) -> str:
    """The injected cell's source: one ``name = repr(value)`` line per parameter."""
    for name in values:
        if not name.isidentifier():
            raise ValueError(f"parameter name {name!r} is not a Python identifier: use a "
                             "name like `step_seconds`")
    return "# Injected parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())
