"""Reads of the analysis: the inspector's payload in one call, the map, search; re-analysis replaces
a run's rows atomically; the CLI commands; errors a user can cause."""

from __future__ import annotations

import pytest

import db
from core.errors import LabError

TABLES = ("features", "feature_domain_stats", "feature_context_rows", "feature_neighbours", "feature_token_effects", "clusters")


def counts(lab, run_id: str) -> dict[str, int]:
    return {t: int(db.query(lab, f"SELECT count(*) FROM {t} WHERE run_id = ?", [run_id]).iloc[0, 0]) for t in TABLES}


def live_feature(analyzed) -> int:
    return int(db.query(analyzed.lab, "SELECT feature FROM features WHERE run_id = ? AND NOT dead AND label_score IS NOT NULL "
                                           "ORDER BY label_score DESC LIMIT 1", [analyzed.run_id]).iloc[0, 0])


def test_feature_detail_returns_everything_the_inspector_needs(analyzed):
    from engine.analysis.queries import feature_detail

    f = live_feature(analyzed)
    d = feature_detail(analyzed.lab, analyzed.run_id, f)
    assert d["feature"]["feature"] == f and d["feature"]["label"] and d["feature"]["map_x"] is not None
    assert [s["domain"] for s in d["domains"]] == analyzed.config.domain_names
    assert all(len(s["hist_counts"]) == 20 for s in d["domains"])
    for dom, s in zip(analyzed.config.domain_names, d["domains"]):
        if s["n_fires"]:
            top = d["contexts"][dom]["top"]
            assert 1 <= len(top) <= 20 and [c["rank"] for c in top] == list(range(len(top)))
            assert all(len(c["tokens"]) == len(c["acts"]) for c in top)
            assert d["contexts"][dom]["quantile"]
    assert len(d["neighbours"]["decoder"]) == 10 and len(d["neighbours"]["activation"]) >= 1
    assert all(n["neighbour"] != f for n in d["neighbours"]["decoder"])
    assert d["neighbours"]["decoder"][0]["label"] is not None  # neighbours come with their labels
    assert len(d["token_effects"]["up"]) == 10 and len(d["token_effects"]["down"]) == 10
    ups = [e["effect"] for e in d["token_effects"]["up"]]
    assert ups == sorted(ups, reverse=True) and d["token_effects"]["down"][0]["effect"] < 0 < ups[0]
    assert not any(e["token"].startswith("[unused") for e in d["token_effects"]["up"])
    assert d["analysis"]["settings"]["n_clusters"] == 10


def test_reanalysis_replaces_rows_and_is_deterministic(analyzed, stores):
    from engine.analysis.analyze import analyze_run

    before = counts(analyzed.lab, analyzed.run_id)
    cols = "feature, map_x, map_y, map_z, cluster, label, label_score, class"
    map_before = db.query(analyzed.lab, f"SELECT {cols} FROM features WHERE run_id = ? ORDER BY feature", [analyzed.run_id])
    ctx_before = db.query(analyzed.lab, "SELECT feature, domain, kind, rank, seq, pos FROM feature_contexts WHERE run_id = ? "
                                             "ORDER BY ALL", [analyzed.run_id])
    analyze_run(analyzed.lab, analyzed.run_id, seed=0)
    assert counts(analyzed.lab, analyzed.run_id) == before
    assert all(v > 0 for v in before.values())
    dup = db.query(analyzed.lab, "SELECT count(*) FROM (SELECT run_id, feature, domain, kind, rank FROM feature_context_rows "
                                      "GROUP BY ALL HAVING count(*) > 1)").iloc[0, 0]
    assert dup == 0  # the context rows' key is unique by construction (the table has no index)
    assert db.query(analyzed.lab, "SELECT count(*) FROM analysis_runs WHERE run_id = ?", [analyzed.run_id]).iloc[0, 0] == 1
    map_after = db.query(analyzed.lab, f"SELECT {cols} FROM features WHERE run_id = ? ORDER BY feature", [analyzed.run_id])
    assert map_after.equals(map_before)  # same seed: same map, clusters, labels
    ctx_after = db.query(analyzed.lab, "SELECT feature, domain, kind, rank, seq, pos FROM feature_contexts WHERE run_id = ? "
                                            "ORDER BY ALL", [analyzed.run_id])
    assert ctx_after.equals(ctx_before)
    # token strings are stored once per activation set, not once per analysis
    n_seq = db.query(analyzed.lab, "SELECT count(*) FROM token_sequences").iloc[0, 0]
    assert n_seq == sum(s.meta["n_sequences"] for s in stores.values())


def test_a_failed_write_leaves_the_previous_analysis_whole(analyzed):
    import pyarrow as pa

    from engine.analysis.write import replace_analysis

    before = counts(analyzed.lab, analyzed.run_id)
    broken = {"features": pa.table({"run_id": [analyzed.run_id], "feature": [0]})}  # violates NOT NULL columns

    with pytest.raises(Exception):
        replace_analysis(analyzed.lab, analyzed.run_id, broken, lambda: pa.table({"run_id": [analyzed.run_id]}))
    assert counts(analyzed.lab, analyzed.run_id) == before


def test_concept_map_and_feature_lists(analyzed):
    from engine.analysis.queries import concept_map, list_features, search_features

    df = concept_map(analyzed.lab, analyzed.run_id)
    n_live = analyzed.summary["n_live"]
    assert len(df) == n_live and df[["map_x", "map_y", "map_z", "cluster"]].notna().all().all()
    assert {"freq_prose", "freq_code", "mean_act_prose", "freq_sel_code"} <= set(df.columns)
    assert df["tsne_x"].isna().all()  # t-SNE is an option, off by default
    best = list_features(analyzed.lab, analyzed.run_id, order_by="label_score", limit=5)
    assert best["label_score"].is_monotonic_decreasing
    lean = list_features(analyzed.lab, analyzed.run_id, feature_class="code-leaning", limit=1000)
    assert (lean["class"] == "code-leaning").all()
    f = live_feature(analyzed)
    token = db.query(analyzed.lab, "SELECT label_tokens[1] FROM features WHERE run_id = ? AND feature = ?",
                     [analyzed.run_id, f]).iloc[0, 0]
    hits = search_features(analyzed.lab, analyzed.run_id, token.strip())
    assert f in set(hits["feature"])
    assert list(search_features(analyzed.lab, analyzed.run_id, str(f))["feature"]) == [f]


def test_user_errors_are_one_line_lab_errors(analyzed, lab):
    from engine.analysis.analyze import analyze_run
    from engine.analysis.queries import feature_detail, list_features, search_features, top_texts

    with pytest.raises(LabError, match="unknown run"):
        analyze_run(analyzed.lab, "no-such-run")
    with pytest.raises(LabError, match="has no feature analysis"):
        feature_detail(analyzed.lab, "never-analysed", 0)
    with pytest.raises(LabError, match="does not exist"):
        feature_detail(analyzed.lab, analyzed.run_id, 10**6)
    with pytest.raises(LabError, match="unknown domain"):
        top_texts(analyzed.lab, analyzed.run_id, 0, domain="poetry")
    with pytest.raises(LabError, match="cannot order"):
        list_features(analyzed.lab, analyzed.run_id, order_by="label; DROP TABLE runs")
    with pytest.raises(LabError, match="empty search"):
        search_features(analyzed.lab, analyzed.run_id, " ")
    with pytest.raises(LabError, match="no lab database"):
        feature_detail(lab, "x", 0)


def test_cli_commands(analyzed, capsys):
    from engine.cli import main

    lab = str(analyzed.lab.root)
    f = live_feature(analyzed)
    assert main(["--lab", lab, "-q", "feature", "--run", analyzed.run_id, str(f)]) == 0
    out = capsys.readouterr().out
    assert f"feature {f} of run {analyzed.run_id}" in out and "nearest by decoder" in out
    assert main(["--lab", lab, "-q", "top-texts", "--run", analyzed.run_id, "--feature", str(f), "-n", "3"]) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if "[[" in ln]) == 3
    assert main(["--lab", lab, "-q", "probe", "--run", analyzed.run_id, "import numpy as np"]) == 0
    out = capsys.readouterr().out
    assert "import" in out and "(special token)" in out and "strongest over the text" in out
    assert main(["--lab", lab, "-q", "match", analyzed.run_id, analyzed.run_ids[1], "--show", "3"]) == 0
    assert "mean best cosine" in capsys.readouterr().out
    assert main(["--lab", lab, "-q", "analyze"]) == 2
    assert "no runs to analyse" in capsys.readouterr().err
    assert main(["--lab", lab, "-q", "analyze", "--all"]) == 0  # training already analysed every run
    assert "already has a feature analysis" in capsys.readouterr().out
    assert main(["--lab", lab, "-q", "analyze", "--all", "--redo", "--json"]) == 0
    out = capsys.readouterr().out
    assert analyzed.run_ids[1] in out and '"n_live"' in out
    assert main(["--lab", lab, "-q", "analyze", "--all", "--set", "n_clusters=0"]) == 2
    assert "n_clusters" in capsys.readouterr().err


def test_analysis_after_training_reports_failure_without_raising(analyzed, capsys):
    from engine.analysis.analyze import analyze_after_training

    assert analyze_after_training(analyzed.lab, "no-such-run") is None
    err = capsys.readouterr().err
    assert "warning: run no-such-run finished but its feature analysis failed" in err and "analyze no-such-run" in err


def test_a_lab_without_the_analysis_tables_says_how_to_get_them(lab):
    from engine.analysis.queries import analysis_info, feature_detail

    with db.connect(lab) as con:  # a database created before the analysis migration existed
        con.execute("CREATE TABLE runs (run_id VARCHAR)")
    assert analysis_info(lab, "r1") is None
    with pytest.raises(LabError, match="analyze r1"):
        feature_detail(lab, "r1", 0)
