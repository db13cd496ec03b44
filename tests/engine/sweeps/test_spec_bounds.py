"""Sweep specs refuse out-of-range settings as written: grid values, random ranges' min and max,
the spec's own numbers and --set overrides. Each expanded job is validated and nothing is enqueued."""

from __future__ import annotations

import math

import pytest

import db
from core.config_bounds import Bounds
from core.errors import LabError
from core.lab import Lab
from engine.cli import main
from engine.config import TrainConfig
from engine.sweeps.queue import enqueue_sweep
from engine.sweeps.spec import SweepSpec, expand, load_spec

BASE = {"data": {"tokens_per_domain": 4000}, "sae": {"d_sae": 256, "k": 8}}


def assert_nothing_enqueued(lab: Lab) -> None:
    assert db.query_rows(lab, "SELECT count(*) FROM jobs")[0][0] == 0
    assert db.query_rows(lab, "SELECT count(*) FROM sweeps")[0][0] == 0
    assert db.query_rows(lab, "SELECT count(*) FROM runs")[0][0] == 0


@pytest.mark.parametrize("spec, message", [
    ({"parameters": {"d_sae": [256, 10**20]}},
     r"sweep combination \(d_sae=100000000000000000000\) is invalid: config key 'config.sae.d_sae' = 100000000000000000000 is "
     r"out of range"),
    ({"parameters": {"seed": [0, -1]}}, r"'config.seed' = -1 is out of range"),
    ({"parameters": {"lr": [1e-3, math.nan]}}, r"'config.train.lr' = nan is not a finite number"),
    ({"parameters": {"k": [8]}, "base": {**BASE, "train": {"log_every_steps": 0}}},
     r"'config.train.log_every_steps' = 0 is out of range"),
    ({"method": "random", "parameters": {"seed": {"min": -5, "max": 5}}},
     r"sweep parameter 'seed' range min is invalid: config key 'config.seed' = -5"),
    ({"method": "random", "parameters": {"epochs": {"min": 1, "max": 1e9}}},
     r"sweep parameter 'epochs' range max is invalid: .* epochs must be above 0 and at most 10000"),
    ({"method": "random", "parameters": {"lr": {"min": math.nan, "max": 1e-2}}},
     r"sweep parameter 'lr' range must have numeric min <= max"),
    ({"method": "random", "parameters": {"lr": {"min": 1e-4, "max": math.inf}}},
     r"range max is invalid: config key 'config.train.lr' = inf is not a finite number"),
    ({"method": "random", "parameters": {"k": {"min": 4.5, "max": 16}}}, r"range min = 4.5 must be a whole number"),
    ({"method": "random", "parameters": {"hook": {"min": 1, "max": 2}}}, r"sweep parameter 'hook' is not numeric"),
    ({"run_cap": -3, "parameters": {"k": [8]}}, r"'sweep.run_cap' = -3 is out of range"),
    ({"seed": 2**40, "parameters": {"k": [8]}}, r"'sweep.seed' = 1099511627776 is out of range"),
])
def test_out_of_range_sweeps_enqueue_nothing(lab, spec, message):
    db.ensure_schema(lab)
    with pytest.raises(LabError, match=message) as e:
        enqueue_sweep(lab, load_spec({"name": "t", "base": BASE, **spec}))
    assert "\n" not in str(e.value)
    assert_nothing_enqueued(lab)


def test_random_ranges_within_bounds_sample_allowed_values():
    spec = SweepSpec.from_dict({"method": "random", "run_cap": 20, "seed": 1, "base": BASE,
                                "parameters": {"lr": {"min": 1e-4, "max": 10.0, "distribution": "log_uniform"},
                                               "epochs": {"min": 0.5, "max": 3.0}, "seed": {"min": 0, "max": 2**32 - 1}}})
    configs = expand(spec)
    assert len(configs) == 20
    lr: Bounds = TrainConfig.__dataclass_fields__["lr"].metadata["bounds"]
    assert all(lr.allows(c.train.lr) and 0.5 <= c.train.epochs <= 3.0 and 0 <= c.seed <= 2**32 - 1 for c in configs)


@pytest.mark.parametrize("args, message", [
    (["--set", "train.log_every_steps=0"], r"'config.train.log_every_steps' = 0 is out of range"),
    (["--set", "train.aux_coefficient=NaN"], r"'config.train.aux_coefficient' = nan is not a finite number"),
    (["--run-cap", "0"], r"'SweepSpec.run_cap' = 0 is out of range"),
])
def test_sweep_cli_refuses_bad_overrides_in_one_line(lab, capsys, args, message):
    db.ensure_schema(lab)
    assert main(["--lab", str(lab.root), "-q", "sweep", "topk-sweep", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and __import__("re").search(message, err[0]), err
    assert_nothing_enqueued(lab)
