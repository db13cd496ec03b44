"""Every numeric setting has one declared range, and every way in refuses what is outside it.

The property tests throw extreme and random values (huge ints, negatives, 0, NaN, +-inf, wrong types)
at every numeric field of every settings class, through ``from_dict`` (config files, sweep specs, the
app), ``--set`` text and direct construction / ``replace()``: each value is either accepted and then
within its declared range, or refused with a one-line ``LabError`` that names the field. The CLI
tests check that refused values write nothing: no run rows, no run folders.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import db
from core.config_base import ConfigBase
from core.config_bounds import METADATA_KEY, SEED_MAX, Bounds
from core.errors import LabError
from core.lab import Lab
from engine.analysis.config import AnalysisConfig
from engine.cli import main
from engine.cli_args import comma_list
from engine.config import ExperimentConfig, TrainConfig, build_config
from engine.interventions.spec import InterventionOptions
from engine.sweeps.spec import SweepSpec
from tests.helpers import run_cli

ROOTS: dict[str, type] = {"config": ExperimentConfig, "sweep": SweepSpec, "analysis": AnalysisConfig,
                          "options": InterventionOptions}


def _strip(tp: Any) -> tuple[Any, bool, bool]:
    """(scalar type, optional, is_list) of a field annotation."""
    optional = False
    if get_origin(tp) is Union or type(tp).__name__ == "UnionType":
        args = [a for a in get_args(tp) if a is not type(None)]
        optional = len(args) < len(get_args(tp))
        tp = args[0] if len(args) == 1 else tp
    is_list = get_origin(tp) is list
    return (get_args(tp)[0] if is_list else tp), optional, is_list


def numeric_fields(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], type, dataclasses.Field]]:
    """(path, owning class, field) of every int/float setting below ``cls``, sections included."""
    out = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _, _ = _strip(hints[f.name])
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and issubclass(tp, ConfigBase):
            out += numeric_fields(tp, prefix + (f.name,))
        elif tp in (int, float):
            out.append((prefix + (f.name,), cls, f))
    return out


FIELDS = [(root, path, owner, f) for root, cls in ROOTS.items() for path, owner, f in numeric_fields(cls)]
CASES = [(root, path) for root, path, _, _ in FIELDS]
FIELD_OF = {(root, path): (owner, f) for root, path, owner, f in FIELDS}

EXTREMES: list[Any] = [0, -1, 1, -0.0, 0.5, 1e-300, 2**31, 2**32, 2**63, 10**20, -(10**20), 10**400, 1e300, -1e300,
                       math.nan, math.inf, -math.inf, True, False, None, "5", "nan", "", [], [1, -1], {}]
# Number-like junk text (an explicit alphabet also spares Hypothesis building a Unicode table: seconds).
JUNK_TEXT = st.text(alphabet="0123456789.-+eEnaNifIty []\"\n é", max_size=8)
VALUES = st.one_of(st.sampled_from(EXTREMES), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                   JUNK_TEXT, st.booleans(), st.none(), st.lists(st.integers(-5, 2000), max_size=3))
SET_TEXTS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "-1", "0", "1e20", "9" * 400, "9" * 5000, "\"5\"",
             "true", "null", "[]", "[0, -1]", "{}", "", "abc", "0.5", "1.5"]
SETTINGS = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def load(root: str, data: dict[str, Any]) -> Any:
    """The loading path each settings class takes in the lab."""
    if root == "config":
        return build_config(base=data)  # CLI, config files, sweep jobs and the app all end here
    if root == "sweep":
        return SweepSpec.from_dict(data, "sweep").check_bounds("sweep")
    if root == "analysis":
        return AnalysisConfig.from_dict(data, "analysis").validate()
    return InterventionOptions.from_dict(data, "options").validate()


def get(obj: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        obj = getattr(obj, part)
    return obj


def assert_refusal(e: LabError, path: tuple[str, ...]) -> None:
    msg = str(e)
    assert msg and "\n" not in msg and "Traceback" not in msg
    assert path[-1] in msg, f"the message does not name the setting {path[-1]!r}: {msg}"


def assert_within_bounds(owner: type, f: dataclasses.Field, value: Any) -> None:
    """Re-derives 'allowed' from the declared limits, independently of the checking code."""
    b: Bounds = f.metadata[METADATA_KEY]
    tp, optional, is_list = _strip(get_type_hints(owner)[f.name])
    if value is None:
        assert optional, f"{f.name} accepted None but is not optional"
        return
    for v in (value if is_list else [value]):
        assert not isinstance(v, bool)
        assert isinstance(v, numbers.Integral if tp is int else numbers.Real), (f.name, v)
        if tp is float and b.finite:
            assert math.isfinite(v), (f.name, v)
        assert b.ge is None or v >= b.ge, (f.name, v, b)
        assert b.gt is None or v > b.gt, (f.name, v, b)
        assert b.le is None or v <= b.le, (f.name, v, b)
        assert b.lt is None or v < b.lt, (f.name, v, b)


def check_loaded(root: str, path: tuple[str, ...], build) -> None:
    owner, f = FIELD_OF[(root, path)]
    try:
        cfg = build()
    except LabError as e:
        assert_refusal(e, path)
        return
    assert_within_bounds(owner, f, get(cfg, path))


# -- the declarations ---------------------------------------------------------------------------------
def test_every_numeric_setting_declares_its_range_once():
    assert len(FIELDS) > 50  # every section of every settings class was found
    undeclared = [f"{root}.{'.'.join(path)}" for root, path, _, f in FIELDS if METADATA_KEY not in f.metadata]
    assert not undeclared, f"numeric settings without bounds: {undeclared}"
    for root, path, owner, f in FIELDS:
        b: Bounds = f.metadata[METADATA_KEY]
        assert (b.ge, b.gt) != (None, None) and (b.le, b.lt) != (None, None), f"{root}.{'.'.join(path)} is unbounded on one side"
        if path[-1] == "seed":
            assert (b.ge, b.le) == (0, SEED_MAX)
    for root, cls in ROOTS.items():  # the defaults lie within their own ranges
        defaults = cls() if root != "sweep" else cls(parameters={"k": [8]})
        for path, owner, f in numeric_fields(cls):
            assert_within_bounds(owner, f, get(defaults, path))


# -- every field x every extreme, then random values ----------------------------------------------------
def test_every_field_takes_every_extreme_value_or_refuses_it_in_one_line():
    for root, path in CASES:
        for value in EXTREMES:
            check_loaded(root, path, lambda: load(root, nest(path, value)))


@SETTINGS
@given(case=st.sampled_from(CASES), value=VALUES)
def test_random_values_through_from_dict(case, value):
    root, path = case
    check_loaded(root, path, lambda: load(root, nest(path, value)))


@SETTINGS
@given(case=st.sampled_from([c for c in CASES if c[0] == "config"]),
       text=st.one_of(st.sampled_from(SET_TEXTS), JUNK_TEXT, st.integers().map(str), st.floats().map(json.dumps)))
def test_random_set_overrides(case, text):
    root, path = case
    check_loaded(root, path, lambda: build_config(overrides=[f"{'.'.join(path)}={text}"]))


@SETTINGS
@given(case=st.sampled_from(CASES), value=VALUES)
def test_random_values_through_replace(case, value):
    """Direct construction and dataclasses.replace (the sweep queue's path) check the same bounds."""
    root, path = case
    owner, f = FIELD_OF[(root, path)]
    section = owner(parameters={"k": [8]}) if owner is SweepSpec else owner()
    try:
        changed = dataclasses.replace(section, **{f.name: value})
    except LabError as e:
        assert_refusal(e, path)
        return
    assert_within_bounds(owner, f, getattr(changed, f.name))


def test_a_value_set_after_construction_is_caught_by_validate():
    c = ExperimentConfig()
    c.train.aux_coefficient = math.nan
    with pytest.raises(LabError, match=r"config key 'config.train.aux_coefficient' = nan is not a finite number"):
        c.validate()


def test_replace_checks_bounds_and_the_message_names_value_and_range():
    with pytest.raises(LabError) as e:
        TrainConfig().replace(log_every_steps=0)
    assert str(e.value) == ("config key 'TrainConfig.log_every_steps' = 0 is out of range: "
                            "log_every_steps must be at least 1 and at most 1000000000 (default 5)")
    with pytest.raises(LabError, match=r"'config.seed' = -1 is out of range: seed must be at least 0 and at most 4294967295"):
        build_config(overrides=["seed=-1"])


# -- the listed bad inputs, through the real CLI ----------------------------------------------------
LISTED = {
    "d_sae 10^20": (["--set", "sae.d_sae=100000000000000000000"], r"'config.sae.d_sae' = 100000000000000000000 is out of range"),
    "log_every_steps 0": (["--set", "train.log_every_steps=0"], r"'config.train.log_every_steps' = 0 is out of range"),
    "negative warmup_steps": (["--set", "train.warmup_steps=-5"], r"'config.train.warmup_steps' = -5 is out of range"),
    "negative checkpoint_every_seconds": (["--set", "train.checkpoint_every_seconds=-1"],
                                          r"'config.train.checkpoint_every_seconds' = -1.0 is out of range"),
    "seed -1": (["--seed", "-1"], r"'config.seed' = -1 is out of range: seed must be at least 0"),
    "dead_after_tokens -1": (["--set", "train.dead_after_tokens=-1"], r"'config.train.dead_after_tokens' = -1 is out of range"),
    "aux_coefficient NaN": (["--set", "train.aux_coefficient=NaN"],
                            r"'config.train.aux_coefficient' = nan is not a finite number"),
    "lr infinite": (["--set", "train.lr=1e999"], r"'config.train.lr' = inf is not a finite number"),
    "empty --domains": (["--domains", ""], r"--domains is empty"),
    "empty --domains entry": (["--domains", "prose,,code"], r"--domains 'prose,,code' has an empty entry \(entry 2\)"),
    "empty --train-domains entry": (["--train-domains", "prose,"], r"--train-domains 'prose,' has an empty entry"),
    "empty --layers": (["--layers", ""], r"--layers is empty"),
    "empty --layers entry": (["--layers", "0,,2"], r"--layers '0,,2' has an empty entry \(entry 2\)"),
    "SAE larger than memory": (["--set", "sae.d_sae=1048576", "--set", "train.batch_size=1048576"],
                               r"GiB .* more than this machine's"),
}


def assert_nothing_written(lab: Lab) -> None:
    assert db.query_rows(lab, "SELECT count(*) FROM runs")[0][0] == 0
    assert not lab.runs.exists() or not any(lab.runs.iterdir())


@pytest.mark.parametrize("case", list(LISTED))
def test_listed_bad_inputs_are_refused_by_the_cli_and_write_nothing(tmp_path, capsys, case):
    args, message = LISTED[case]
    lab = Lab.at(tmp_path / "lab")
    db.ensure_schema(lab)
    assert main(["--lab", str(lab.root), "-q", "train", *args]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert __import__("re").search(message, err[0]), err[0]
    assert_nothing_written(lab)


@pytest.mark.parametrize("args", [
    ["train", "--set", "sae.d_sae=100000000000000000000"],
    ["run", "--seed", "-1"],
    ["train", "--set", "train.aux_coefficient=NaN"],
    ["train", "--domains", "prose,,code"],
])
def test_refused_values_in_a_real_process(tmp_path, args):
    fresh = tmp_path / "fresh"
    proc = run_cli(*args, lab=fresh, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert not fresh.exists(), "a refused command left a lab folder behind"


def test_refused_values_leave_an_existing_lab_without_runs(tmp_path):
    lab = Lab.at(tmp_path / "lab")
    db.ensure_schema(lab)
    proc = run_cli("train", "--set", "train.log_every_steps=0", "--set", "seed=-1", lab=lab.root, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert_nothing_written(lab)


def test_comma_lists_refuse_empty_entries_and_keep_the_rest():
    assert comma_list("--domains", " prose , code ", "prose,code") == ["prose", "code"]
    for text in ["", "  ", "prose,,code", ",prose", "prose,"]:
        with pytest.raises(LabError, match="--domains"):
            comma_list("--domains", text, "prose,code")
