"""The run tables' short names: what sets a run apart in its sweep, not every setting it has."""

from __future__ import annotations

import pandas as pd

from lab_app.run_table import short_names


def runs(rows: list[tuple[str, str | None, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["run_id", "sweep_id", "name"])


def test_a_sweep_names_its_runs_by_the_settings_it_varies_and_the_domain():
    names = short_names(runs([
        ("a", "s1", "custom: layer=2, k=8, d_sae=2048, architecture=topk/code"),
        ("b", "s1", "custom: layer=2, k=16, d_sae=2048, architecture=topk/prose"),
        ("c", "s2", "layer-sweep: layer=0/code"),
        ("d", "s2", "layer-sweep: layer=3/code"),
        ("e", None, "small/prose"),
    ]))
    assert names.tolist() == ["k=8 · code", "k=16 · prose", "layer=0 · code", "layer=3 · code", "small/prose"]


def test_a_one_configuration_sweep_is_named_by_what_differs_from_the_default_experiment():
    names = short_names(runs([("a", "s1", "custom: layer=2, k=4, d_sae=128, architecture=topk/code"),
                              ("b", "s1", "custom: layer=2, k=4, d_sae=128, architecture=topk/prose")]))
    assert names.tolist() == ["k=4, d_sae=128 · code", "k=4, d_sae=128 · prose"]


def test_a_run_without_a_name_is_named_by_its_id():
    assert short_names(runs([("20261203-x", None, "")])).tolist() == ["20261203-x"]
