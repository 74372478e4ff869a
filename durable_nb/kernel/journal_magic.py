"""``%%journal``: a cell of read-only SQL over the journal's views, shown as a DataFrame."""

from __future__ import annotations

import keyword
from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from durable_nb.errors import QueryError
from durable_nb.kernel.magics import _parse, _usage_error

if TYPE_CHECKING:
    import pandas as pd


@magics_class
class JournalMagics(Magics):
    """Query the journal from a cell: ``durable_nb.sql`` without the Python around it."""

    @magic_arguments()
    @argument("-o", "--output", dest="output", default=None, metavar="VAR",
              help="also store the DataFrame in the variable VAR")
    @cell_magic
    def journal(self, line: str, cell: str) -> pd.DataFrame:
        """Run the cell's SQL over the views ``runs`` and ``steps``; returns a DataFrame.

        One read-only query, as ``durable_nb.sql`` runs it. A query the database refuses
        shows its message alone: the fix is in the SQL, not in any Python frame.

        Usage: %%journal [-o VAR]
        """
        opts = _parse(self.journal, line)
        if opts.output is not None and (not opts.output.isidentifier()
                                        or keyword.iskeyword(opts.output)):
            raise _usage_error(self.journal, f"%%journal: -o takes a variable name, got "
                                             f"{opts.output!r}")
        if not cell.strip():
            raise UsageError("%%journal: the cell holds no SQL. Write one query below the "
                             "magic line, e.g. SELECT * FROM runs")
        from durable_nb.api import sql  # pandas loads on first query, not with the extension

        try:
            table = sql(cell)
        except QueryError as exc:
            raise UsageError(f"%%journal: {exc}") from None
        if opts.output is not None:
            assert self.shell is not None
            self.shell.user_ns[opts.output] = table
        return table
