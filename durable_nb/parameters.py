"""Notebook parameters, as papermill has them: a cell tagged ``parameters`` holds the
defaults, and a run overrides them with a cell of assignments right after it."""

from __future__ import annotations

import ast
import keyword
from collections.abc import Mapping
from typing import Any

from durable_nb.errors import ParameterError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def cell_source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def parameters_index(cells: list[Mapping[str, Any]]) -> int | None:
    """Index of the first cell tagged ``parameters``, if any."""
    return _tagged(cells, PARAMETERS_TAG)


def injected_index(cells: list[Mapping[str, Any]]) -> int | None:
    """Index of a cell a previous run injected (tagged ``injected-parameters``), if any."""
    return _tagged(cells, INJECTED_TAG)


def _tagged(cells: list[Mapping[str, Any]], tag: str) -> int | None:
    for i, cell in enumerate(cells):
        if tag in cell.get("metadata", {}).get("tags", []):
            return i
    return None


def assignments(values: Mapping[str, Any]) -> str:
    """The injected cell's source: one ``name = repr(value)`` line per parameter."""
    for name in values:
        if not name.isidentifier() or keyword.iskeyword(name):
            raise ParameterError(f"parameter name {name!r} is not a Python identifier: use a "
                                 "name like `step_seconds`")
    return "# Injected parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())


def declared_names(source: str) -> list[str]:
    """The names a parameters cell assigns at its top level, in order.

    The cell is IPython-transformed first, so a magic or ``!command`` line in it does not
    stop the names after it from being read.
    """
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        tree = ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError as exc:
        raise ParameterError(f"the cell tagged `{PARAMETERS_TAG}` does not parse: {exc}") from None
    names: list[str] = []

    def add(target: ast.expr) -> None:
        if isinstance(target, ast.Name) and target.id not in names:
            names.append(target.id)
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                add(element)

    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                add(target)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            add(node.target)
    return names


def check_parameters(cells: list[Mapping[str, Any]], values: Mapping[str, Any]) -> int | None:
    """Index of the parameters cell, once every name in ``values`` is one it assigns.

    A name the cell does not assign is refused (papermill injects it anyway): a misspelt
    ``-p step_second 0.1`` would otherwise run the notebook with its defaults.
    """
    assignments(values)  # each name is an identifier
    at = parameters_index(cells)
    if not values:
        return at
    if at is None:
        raise ParameterError(
            f"the notebook has no cell tagged `{PARAMETERS_TAG}`, so there is nothing to "
            f"override with {', '.join(values)}: tag the cell that assigns the defaults "
            f"`{PARAMETERS_TAG}` (in JupyterLab: the property inspector, Common Tools, Cell "
            "Tags), or leave out -p")
    declared = declared_names(cell_source(cells[at]))
    unknown = [name for name in values if name not in declared]
    if unknown:
        known = ", ".join(declared) or "none"
        raise ParameterError(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: the "
            f"cell tagged `{PARAMETERS_TAG}` (cell {at + 1}) assigns {known}")
    return at
