"""People's SQL over the lab, which can never change the lab.

Two walls: statements are parsed first and anything but a query (SELECT / WITH / FROM / PIVOT /
DESCRIBE / SHOW / SUMMARIZE / EXPLAIN / PRAGMA) is refused with a message naming the statement; and the query
runs on a read-only connection with file system access, extension loading and settings locked,
so even a statement the parser let through cannot write, attach, copy out or install anything.
A timer interrupts queries that run too long.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from core.errors import LabError, first_line
from core.lab import Lab
from db.connection import connect, interrupt_after

ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA}


def check_read_only(sql: str) -> list[str]:
    """The statements of ``sql``, or a LabError naming the first one that is not a query."""
    if not sql or not sql.strip():
        raise LabError("empty query: write a SELECT, e.g. SELECT * FROM runs")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise LabError(f"the query does not parse ({str(e).splitlines()[0]}): fix the SQL") from None
    if not statements:
        raise LabError("empty query: write a SELECT, e.g. SELECT * FROM runs")
    for st in statements:
        if st.type == duckdb.StatementType.MULTI and st.query.lstrip().upper().startswith("PIVOT"):
            continue  # DuckDB expands PIVOT into several statements; the read-only connection still guards it
        if st.type not in ALLOWED:
            kind = st.type.name.replace("_", " ")
            raise LabError(f"{kind} statements are not allowed: the lab's SQL is read-only, use SELECT")
    return [st.query for st in statements]


def run_readonly(lab: Lab, sql: str, timeout_seconds: float = 20.0, max_rows: int = 100_000) -> pd.DataFrame:
    """Result of the last statement as a DataFrame (at most ``max_rows`` rows)."""
    statements = check_read_only(sql)
    with connect(lab, read_only=True, sandbox=True, wait_seconds=10) as con:
        try:
            with interrupt_after(con, timeout_seconds):
                for text in statements[:-1]:
                    con.execute(text)
                rel = con.execute(statements[-1])
                if rel.description is None:
                    return pd.DataFrame()
                cols = [d[0] for d in rel.description]
                rows = rel.fetchmany(max_rows)
                return pd.DataFrame(rows, columns=cols)
        except duckdb.InterruptException:
            raise LabError(f"the query ran longer than {timeout_seconds:.0f} s and was stopped: add a LIMIT or a WHERE") from None
        except duckdb.Error as e:
            first = first_line(e)
            raise LabError(f"the query failed: {first}") from None
