"""SQL over the lab database. Read-only by construction: a query can never change the lab."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.errors import LabError
from db.readonly import run_readonly
from lab_app import access, data, run_table

access.require()  # the access gate, before this page draws anything (why on every page: lab_app/access.py)

RUN_TABLE = """SELECT r.run_id, r.name, r.sweep_id, m.fvu, m.transfer_ratio, m.l0, m.dead_frac, q.score, q.rating,
       r.layer, r.k, r.d_sae, r.architecture, r.train_domain, r.ended_at
FROM runs r LEFT JOIN run_metrics m USING (run_id) LEFT JOIN quality_scores q USING (run_id)
ORDER BY r.created_at DESC"""

# Saved queries that answer the seed's questions; each names the chart that shows its answer (x, y, colour, mark).
EXAMPLES: dict[str, tuple[str, tuple[str, str, str | None, str] | None]] = {
    "Every run with its metrics and quality": (RUN_TABLE, ("l0", "fvu", "train_domain", "point")),
    "Best layer: in-domain FVU and transfer per layer": ("""SELECT r.layer, round(avg(m.fvu), 4) AS fvu,
       round(avg(m.r2), 4) AS r2, round(avg(m.transfer_ratio), 3) AS transfer, count(*) AS saes
FROM runs r JOIN run_metrics m USING (run_id)
GROUP BY r.layer ORDER BY fvu""", ("layer", "fvu", None, "bar")),
    "k trade-off: FVU, L0 and dead latents per k": ("""SELECT r.architecture, r.k,
       round(avg(m.fvu), 4) AS fvu, round(avg(m.l0), 1) AS l0,
       round(avg(m.dead_frac), 3) AS dead, round(avg(m.transfer_ratio), 3) AS transfer, count(*) AS saes
FROM runs r JOIN run_metrics m USING (run_id)
WHERE r.status = 'FINISHED'
GROUP BY ALL ORDER BY r.architecture, r.k""", ("k", "fvu", "architecture", "line")),
    "Transfer over time (1 = no loss on the other domains)": ("""SELECT r.ended_at, r.run_id, r.name,
       r.layer, r.k, r.train_domain, round(m.transfer_ratio, 3) AS transfer
FROM runs r JOIN run_metrics m USING (run_id)
WHERE r.status = 'FINISHED' ORDER BY r.ended_at""", ("ended_at", "transfer", "train_domain", "point")),
    "Transfer matrix of the latest experiment (MSE)": ("""PIVOT (
  SELECT r.train_domain, e.eval_domain, round(e.mse, 5) AS mse
  FROM runs r JOIN eval_results e USING (run_id)
  WHERE r.group_id = (SELECT group_id FROM runs WHERE status = 'FINISHED' ORDER BY ended_at DESC LIMIT 1)
) ON eval_domain USING first(mse) ORDER BY train_domain""", None),
    "Quality score of every run": ("""SELECT r.run_id, r.layer, r.k, r.d_sae, r.train_domain, q.score, q.rating
FROM runs r JOIN quality_scores q USING (run_id) ORDER BY q.score DESC""", None),
    "Training curve of the latest run": ("""SELECT step, name, value FROM step_metrics
WHERE run_id = (SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1) AND name IN ('fvu', 'dead_frac')
ORDER BY step""", ("step", "value", "name", "line")),
    "Most selective features of a run": ("""SELECT feature, label, label_score, class, freq
FROM features WHERE run_id = (SELECT run_id FROM analysis_runs LIMIT 1) AND NOT dead
ORDER BY label_score DESC NULLS LAST LIMIT 20""", None),
    "Jobs of the latest sweep": ("""SELECT label, status, attempts, phase, step, total_steps, round(eta_seconds) AS eta_s, error
FROM jobs WHERE sweep_id = (SELECT sweep_id FROM sweeps ORDER BY created_at DESC LIMIT 1) ORDER BY seq""", None),
}
MARKS = ["point", "line", "bar"]
NONE = "—"
OWN = "— your own query (every run with its metrics, to start) —"


def result_chart(df: pd.DataFrame, x: str, y: str, colour: str | None, mark: str) -> alt.Chart:
    """The reader's chart of a query result; types come from the columns (time, number, or category)."""
    def enc(col: str) -> str:
        kind = df[col].dtype
        if pd.api.types.is_datetime64_any_dtype(kind):
            return f"{col}:T"
        return f"{col}:Q" if pd.api.types.is_numeric_dtype(kind) else f"{col}:N"

    base = alt.Chart(df)
    chart = {"point": base.mark_point(filled=True, size=70), "line": base.mark_line(point=True),
             "bar": base.mark_bar()}[mark]
    zero = mark == "bar"
    enc_y = alt.Y(enc(y), title=y, scale=alt.Scale(zero=zero)) if enc(y).endswith(":Q") else alt.Y(enc(y), title=y)
    encodings = {"x": alt.X(enc(x), title=x, sort=None), "y": enc_y, "tooltip": list(df.columns[:8])}
    if colour:
        encodings["color"] = alt.Color(colour if enc(colour).endswith(":N") else f"{colour}:N", title=colour)
    return chart.encode(**encodings).properties(height=320)


st.title("SQL")
st.caption("Read-only: only queries run (SELECT, WITH, FROM, PIVOT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN), on a read-only "
           "connection with file access, extensions and settings locked. DuckDB dialect: lambdas are written `lambda x: x + 1`.")
lab = data.lab_or_stop()

left, right = st.columns([3, 2])
with left:
    example = st.selectbox("Saved queries", [OWN, *EXAMPLES], key="sql_example",
                           help="queries that answer the seed's questions; each opens with its chart")
    if example != OWN and st.session_state.get("_sql_example") != example:
        st.session_state["sql_query"] = EXAMPLES[example][0]
        st.session_state["_sql_example"] = example
        st.session_state.pop("sql_result", None)  # a saved query runs when it is chosen
        chart = EXAMPLES[example][1]
        st.session_state["sql_chart"] = chart is not None
        if chart:
            st.session_state["sql_chart_spec"] = chart
    st.session_state.setdefault("sql_query", RUN_TABLE)
    sql = st.text_area("Query", key="sql_query", height=180)
    b1, b2 = st.columns([1, 4], vertical_alignment="bottom")
    timeout = b2.number_input("Time limit (s)", 1, 300, 20, key="sql_timeout", width=160)
    if b1.button("Run", type="primary", key="sql_run", icon=":material/play_arrow:") or "sql_result" not in st.session_state:
        try:
            st.session_state["sql_result"] = (sql, run_readonly(lab, sql, timeout_seconds=float(timeout)), None)
        except LabError as e:
            st.session_state["sql_result"] = (sql, None, str(e))
with right:
    st.markdown("**Schema**")
    schema = data.schema(lab)
    # A scrolling box the height of the editor: ~40 tables' expanders pushed the result below the fold.
    box = st.container(height=330)
    for table, cols in schema.groupby("table_name", sort=True):
        with box.expander(table):
            comment = cols["table_comment"].iloc[0]
            if comment:
                st.caption(comment)
            st.dataframe(cols[["column_name", "data_type", "column_comment"]], hide_index=True, key=f"schema_{table}",
                         column_config={"column_name": "column", "data_type": "type",
                                        "column_comment": st.column_config.TextColumn("meaning", width="large")})

# The result at full width, under the editor: at 3/5 of the page its metric columns were off-screen.
res = st.session_state.get("sql_result")
if res:
    _, df, err = res
    if err:
        st.error(err)
    else:
        st.caption(f"{len(df):,} row(s)")
        if "run_id" in df.columns:
            run_table.show(df, "sql_table", default=list(df.columns))
        else:
            st.dataframe(df, hide_index=True, key="sql_table")
        c1, c2 = st.columns([1, 4], vertical_alignment="center")
        c1.download_button("Download CSV", df.to_csv(index=False).encode(), "query.csv", "text/csv", key="sql_csv",
                           icon=":material/download:")
        cols = list(df.columns)
        if len(df) and len(cols) >= 2 and c2.toggle("Chart this result", key="sql_chart"):
            x0, y0, col0, mark0 = st.session_state.get("sql_chart_spec") or (cols[0], cols[1], None, "point")
            numeric = [c for c in cols if pd.api.types.is_numeric_dtype(df[c].dtype)] or cols
            with st.container(horizontal=True):
                mark = st.segmented_control("Mark", MARKS, default=mark0 if mark0 in MARKS else "point", key="sql_chart_mark")
                x = st.selectbox("x", cols, index=cols.index(x0) if x0 in cols else 0, key="sql_chart_x")
                y = st.selectbox("y", numeric, index=numeric.index(y0) if y0 in numeric else min(1, len(numeric) - 1),
                                 key="sql_chart_y")
                colours = [NONE, *cols]
                colour = st.selectbox("Colour", colours, index=colours.index(col0) if col0 in colours else 0,
                                      key="sql_chart_colour")
            st.altair_chart(result_chart(df, x, y, None if colour == NONE else colour, mark or "point"), width="stretch")
