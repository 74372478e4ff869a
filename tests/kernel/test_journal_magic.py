"""``%%journal`` in a real kernel: a cell of SQL shows a DataFrame; bad SQL, its message."""

from __future__ import annotations

from durable_nb.testing import KernelSession

SWEEP = (
    "%%activity\n"
    "def train(lr):\n"
    "    return {'loss': lr * 10}\n"
)


def test_a_journal_cell_shows_its_query_as_a_dataframe_and_o_keeps_it(kernel: KernelSession):
    kernel.run(SWEEP).raise_for_error()
    kernel.run("%%workflow sweep\nlosses = [train(lr) for lr in (0.3, 0.1)]\n"
               ).raise_for_error()
    out = kernel.run("%%journal\nSELECT seq, (result->>'loss')::DOUBLE AS loss\n"
                     "FROM steps ORDER BY loss\n").raise_for_error()
    shown = [d["text/plain"] for d in out.data if "text/plain" in d]
    assert len(shown) == 1 and "text/html" in out.data[0]
    assert shown[0].split() == ["seq", "loss", "0", "1", "1.0", "1", "0", "3.0"]
    kernel.run("%%journal -o best\nSELECT run_id, steps_completed FROM runs\n"
               ).raise_for_error()
    check = kernel.run("print(type(best).__name__, best.to_dict('records'))").raise_for_error()
    assert check.stdout.strip() == "DataFrame [{'run_id': 'sweep-1', 'steps_completed': 2}]"
    table = kernel.run("import durable_nb\n"
                       "print(list(durable_nb.results('sweep').sort_values('loss').loss))"
                       ).raise_for_error()
    assert table.stdout.strip() == "[1.0, 3.0]"


def test_bad_sql_shows_the_database_message_without_a_traceback(kernel: KernelSession):
    out = kernel.run("%%journal\nSELECT nope FROM steps\n")
    assert out.status == "error" and out.ename == "UsageError"
    assert 'Referenced column "nope" not found' in out.evalue
    assert "Traceback" not in out.text and not out.traceback
    assert "%%journal: " in out.stderr and "nope" in out.stderr
    refused = kernel.run("%%journal\nDELETE FROM events\n")
    assert refused.ename == "UsageError" and "DELETE statements are refused" in refused.evalue
    empty = kernel.run("%%journal\n\n")
    assert empty.ename == "UsageError" and "the cell holds no SQL" in empty.evalue
    bad_var = kernel.run("%%journal -o 2x\nSELECT 1\n")
    assert bad_var.ename == "UsageError" and "-o takes a variable name, got '2x'" in bad_var.evalue
    assert "usage: %%journal [-o VAR]" in bad_var.evalue
