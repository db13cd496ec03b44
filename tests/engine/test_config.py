"""Configs: strict loading, overrides, one-line errors."""

from __future__ import annotations

import json

import pytest

from core.errors import LabError
from engine.config import ExperimentConfig, build_config, parse_domain


def test_defaults_are_the_seed_setup():
    c = ExperimentConfig().validate()
    assert (c.hook, c.layer, c.sae.architecture, c.sae.k, c.sae.d_sae) == ("mlp_out", 2, "topk", 16, 2048)
    assert c.domain_names == ["prose", "code"] and c.data.tokens_per_domain == 100_000 and c.data.val_fraction == 0.1


def test_round_trip_and_overrides(tmp_path):
    c = build_config(overrides=["sae.k=32", "data.domains=[\"prose\", \"legal=./x\"]", "train.lr=0.001"])
    assert c.sae.k == 32 and c.train.lr == 0.001
    assert c.data.domains[1].source == "file:./x"
    again = ExperimentConfig.from_dict(json.loads(c.to_json()))
    assert again == c


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sae.k=0"], "k must be at least 1"),
        (["sae.k=4096"], "larger than d_sae"),
        (["hook=mlp_in"], "unknown hook point"),
        (["sae.d_sea=10"], "unknown config key 'config.sae.d_sea'"),
        (["sae.k=\"many\""], "must be a whole number"),
        (["data.val_fraction=0.9"], "val_fraction"),
        (["train_domains=[\"wiki\"]"], "not among the domains"),
        (["sae.architecture=\"gated\""], "must be one of"),
    ],
)
def test_bad_settings_are_one_line_errors(overrides, message):
    with pytest.raises(LabError, match=message) as e:
        build_config(overrides=overrides)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", '{"sae": {"k": 16,}}', "not valid JSON \\(line 1"),
    ("bad.toml", "[sae\nk = 16", "not valid TOML"),
    ("list.json", "[1, 2]", "must hold an object"),
])
def test_malformed_config_files(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(LabError, match=message):
        build_config(tmp_path / name)


def test_unknown_domain_names_the_choices():
    with pytest.raises(LabError, match="use one of prose, code"):
        parse_domain("poetry")
