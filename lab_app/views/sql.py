"""SQL over the lab database. Read-only by construction: a query can never change the lab."""

from __future__ import annotations

import streamlit as st

from core.errors import LabError
from db.readonly import run_readonly
from lab_app import access, data

access.require()  # the access gate, before this page draws anything (why on every page: lab_app/access.py)

EXAMPLES = {
    "Transfer matrix of the latest experiment (MSE)": """PIVOT (
  SELECT r.train_domain, e.eval_domain, round(e.mse, 5) AS mse
  FROM runs r JOIN eval_results e USING (run_id)
  WHERE r.group_id = (SELECT group_id FROM runs WHERE status = 'FINISHED' ORDER BY ended_at DESC LIMIT 1)
) ON eval_domain USING first(mse) ORDER BY train_domain""",
    "Quality score of every run": """SELECT r.run_id, r.layer, r.k, r.d_sae, r.train_domain, q.score, q.rating
FROM runs r JOIN quality_scores q USING (run_id) ORDER BY q.score DESC""",
    "Best layer by in-domain FVU": """SELECT r.layer, round(avg(m.fvu), 4) AS fvu, round(avg(m.r2), 4) AS r2,
       round(avg(m.transfer_ratio), 3) AS transfer, count(*) AS saes
FROM runs r JOIN run_metrics m USING (run_id)
GROUP BY r.layer ORDER BY fvu""",
    "Training curve of the latest run": """SELECT step, name, value FROM step_metrics
WHERE run_id = (SELECT run_id FROM runs ORDER BY created_at DESC LIMIT 1) AND name IN ('fvu', 'dead_frac')
ORDER BY step""",
    "Most selective features of a run": """SELECT feature, label, label_score, class, freq
FROM features WHERE run_id = (SELECT run_id FROM analysis_runs LIMIT 1) AND NOT dead
ORDER BY label_score DESC NULLS LAST LIMIT 20""",
    "Jobs of the latest sweep": """SELECT label, status, attempts, phase, step, total_steps, round(eta_seconds) AS eta_s, error
FROM jobs WHERE sweep_id = (SELECT sweep_id FROM sweeps ORDER BY created_at DESC LIMIT 1) ORDER BY seq""",
}

st.title("SQL")
st.caption("Read-only: only queries run (SELECT, WITH, FROM, PIVOT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN), on a read-only "
           "connection with file access, extensions and settings locked. DuckDB dialect: lambdas are written `lambda x: x + 1`.")
if not data.lab_ready():
    st.info("No lab database yet: run `make lab` or launch a sweep from the sidebar.")
    st.stop()
lab = data.lab()

left, right = st.columns([3, 2])
with left:
    example = st.selectbox("Example queries", ["—", *EXAMPLES], key="sql_example")
    if example != "—" and st.session_state.get("_sql_example") != example:
        st.session_state["sql_query"] = EXAMPLES[example]
        st.session_state["_sql_example"] = example
    st.session_state.setdefault("sql_query", EXAMPLES["Quality score of every run"])
    sql = st.text_area("Query", key="sql_query", height=180)
    b1, b2 = st.columns([1, 4], vertical_alignment="bottom")
    timeout = b2.number_input("Time limit (s)", 1, 300, 20, key="sql_timeout", width=160)
    if b1.button("Run", type="primary", key="sql_run", icon=":material/play_arrow:") or "sql_result" not in st.session_state:
        try:
            st.session_state["sql_result"] = (sql, run_readonly(lab, sql, timeout_seconds=float(timeout)), None)
        except LabError as e:
            st.session_state["sql_result"] = (sql, None, str(e))
    res = st.session_state.get("sql_result")
    if res:
        _, df, err = res
        if err:
            st.error(err)
        else:
            st.caption(f"{len(df):,} row(s)")
            st.dataframe(df, hide_index=True, key="sql_table")
            st.download_button("Download CSV", df.to_csv(index=False).encode(), "query.csv", "text/csv", key="sql_csv",
                               icon=":material/download:")
with right:
    st.markdown("**Schema**")
    schema = data.schema(lab)
    for table, cols in schema.groupby("table_name", sort=True):
        with st.expander(table):
            comment = cols["table_comment"].iloc[0]
            if comment:
                st.caption(comment)
            st.dataframe(cols[["column_name", "data_type", "column_comment"]], hide_index=True, key=f"schema_{table}")
