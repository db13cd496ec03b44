"""The findings schema documents itself (the SQL page shows the comments) and applies on top of the
earlier migrations."""

from __future__ import annotations

import db

TABLES = ("findings", "finding_revisions", "finding_features", "finding_evidence", "evidence_snapshots")


def test_every_findings_table_and_column_is_commented(lab):
    db.ensure_schema(lab)
    missing = db.query_rows(lab, "SELECT table_name, column_name FROM duckdb_columns() "
                                      "WHERE table_name IN (SELECT unnest(?)) AND coalesce(comment, '') = ''", [list(TABLES)])
    assert missing == []
    tables = dict(db.query_rows(lab, "SELECT table_name, comment FROM duckdb_tables() WHERE table_name IN (SELECT unnest(?))",
                                [list(TABLES)]))
    assert set(tables) == set(TABLES) and all(tables.values())
    assert (4, "findings") in db.query_rows(lab, "SELECT version, name FROM schema_migrations")
