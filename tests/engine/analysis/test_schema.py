"""The analysis schema documents itself: every table, view and column carries a comment (the SQL
page shows them), and the migration applies on top of the earlier ones."""

from __future__ import annotations

import db

TABLES = ("analysis_runs", "features", "feature_domain_stats", "token_sequences", "feature_context_rows", "feature_neighbours",
          "feature_token_effects", "clusters", "feature_matches")


def test_every_analysis_table_view_and_column_is_commented(lab):
    db.ensure_schema(lab)
    names = list(TABLES) + ["feature_contexts"]
    missing = db.query_rows(lab, "SELECT table_name, column_name FROM duckdb_columns() "
                                      "WHERE table_name IN (SELECT unnest(?)) AND coalesce(comment, '') = ''", [names])
    assert missing == []
    tables = dict(db.query_rows(lab, "SELECT table_name, comment FROM duckdb_tables() WHERE table_name IN (SELECT unnest(?))",
                                [list(TABLES)]))
    assert set(tables) == set(TABLES) and all(tables.values())
    views = db.query_rows(lab, "SELECT comment FROM duckdb_views() WHERE view_name = 'feature_contexts'")
    assert views and views[0][0]
