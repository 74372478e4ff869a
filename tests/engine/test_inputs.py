"""Which names a workflow cell reads from the notebook, and how each is recorded."""

from __future__ import annotations

import math
import threading

import pytest

from durable_nb.engine.inputs import (
    MODULE,
    UNRECORDED,
    VALUE,
    capture,
    cell_inputs,
    free_names,
    restore,
)
from durable_nb.errors import MissingInput


@pytest.mark.parametrize(("code", "expected"), [
    ("results = [train(x) for x in grid]", ["grid", "train"]),
    ("total = 0\nfor x in grid:\n    total += x\n", ["grid"]),
    ("import numpy as np\ny = np.zeros(n)", ["n"]),
    ("def f(a):\n    return a * scale\nout = f(data)", ["data", "scale"]),
    ("def f():\n    global acc\n    acc = 1\nf()\nprint(acc)", ["print"]),
    ("class C:\n    k = base\nz = C()", ["base"]),
    ("best = min(results, key=lambda r: r[metric])", ["metric", "min", "results"]),
    ("if (m := pick(grid)) > 3:\n    print(m)", ["grid", "pick", "print"]),
    ("with open(p) as fh:\n    text = fh.read()", ["open", "p"]),
    ("try:\n    x = go()\nexcept E as err:\n    log(err)", ["E", "go", "log"]),
])
def test_free_names_are_what_the_cell_reads_but_does_not_assign(code, expected):
    assert free_names(code) == expected


def test_builtins_and_history_names_are_not_inputs_unless_the_notebook_defines_them():
    ns = {"grid": [1], "print": "shadowed", "_": 3, "_i4": "", "_7": 1, "_cache": {},
          "get_ipython": object()}
    names = ["grid", "print", "min", "_", "_i4", "_7", "_cache", "get_ipython", "unknown"]
    assert cell_inputs(names, ns, hidden={"get_ipython"}) == [
        "grid", "print", "_cache", "unknown"]


def test_values_modules_and_unencodable_values_are_recorded_each_in_its_way():
    grid = capture("grid", [1, 2, 3])
    assert grid.kind == VALUE and grid.payload and grid.payload.json == "[1,2,3]"
    assert restore(grid, "r-1") == [1, 2, 3]
    assert capture("grid", [1, 2, 3]).digest == grid.digest
    assert capture("grid", [1, 2, 4]).digest != grid.digest
    assert capture("s", {3, 1, 2}).digest == capture("s", {1, 2, 3}).digest

    mod = capture("m", math)
    assert mod.kind == MODULE and restore(mod, "r-1") is math

    lock = capture("model", threading.Lock())
    assert lock.kind == UNRECORDED and lock.digest is None
    assert lock.why == "cannot pickle '_thread.lock' object"
    with pytest.raises(MissingInput, match="Run the cells that define `model`"):
        restore(lock, "r-1")


def test_an_input_round_trips_through_its_journal_event():
    from durable_nb.engine.inputs import Input

    original = capture("cfg", ({"lr": 0.1}, (1, 2)))
    ev = original.as_event("r-1")
    assert ev["kind"] == "run_input" and ev["name"] == "cfg"
    back = Input.from_row(dict(ev))
    assert back == original and restore(back, "r-1") == ({"lr": 0.1}, (1, 2))
