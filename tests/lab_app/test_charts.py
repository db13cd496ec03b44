"""Chart specs that a person reads: axes that say something, encodings that show."""

from __future__ import annotations

import pandas as pd

from lab_app import charts


def runs(times: list[str]) -> pd.DataFrame:
    n = len(times)
    return pd.DataFrame({"ended_at": pd.to_datetime(times), "fvu": [0.5, 0.3][:n], "layer": [2] * n,
                         "train_domain": ["prose", "code"][:n], "run_id": ["a", "b"][:n], "k": [8] * n, "d_sae": [512] * n})


def test_runs_finished_within_a_second_get_a_readable_time_axis():
    spec = charts.metric_over_time(runs(["2026-11-21 03:52:52.9", "2026-11-21 03:52:53.7"]), "fvu").to_dict()
    x = spec["encoding"]["x"]
    lo, hi = (pd.Timestamp(v) for v in x["scale"]["domain"])
    assert hi - lo == pd.Timedelta(minutes=10)  # not a millisecond-wide axis labelled ".900"
    assert x["axis"]["format"] == "%b %d %H:%M"
    assert spec["mark"]["type"] == "point" and spec["encoding"]["shape"]["field"] == "trained_on"  # "imported (…)" if imported


def test_runs_spread_over_days_keep_the_data_extent():
    spec = charts.metric_over_time(runs(["2026-11-01 10:00", "2026-11-21 10:00"]), "fvu").to_dict()
    assert "domain" not in spec["encoding"]["x"].get("scale", {})


def test_transfer_over_time_has_a_readable_title_k_in_the_colour_and_a_line_at_one():
    d = runs(["2026-11-21 03:52:52.9", "2026-11-21 03:52:53.7"]).assign(transfer_ratio=[1.2, 0.9], k=[8, 16])
    spec = charts.metric_over_time(d, "transfer_ratio", "transfer ×").to_dict()
    points, rule = spec["layer"]
    assert points["encoding"]["y"]["title"] == "transfer ×"  # not the raw key transfer_ratio
    assert points["encoding"]["color"]["field"] == "config"  # layer and k together: k = 8 and k = 16 differ
    assert rule["mark"]["type"] == "rule" and spec["datasets"][rule["data"]["name"]] == [{"y": 1.0}]


def test_pareto_axes_do_not_start_at_zero():
    df = pd.DataFrame({"l0": [8.0, 16.0], "fvu": [0.30, 0.25], "layer": [2, 2], "architecture": ["topk"] * 2,
                       "k": [8, 16], "d_sae": [2048] * 2})
    spec = charts.pareto(df, df, "layer").to_dict()
    enc = spec["layer"][0]["encoding"]
    assert enc["x"]["scale"]["zero"] is False and enc["y"]["scale"]["zero"] is False
