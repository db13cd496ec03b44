"""Allowed ranges of numeric config settings, declared once on each dataclass field.

A setting's range lives in its field's metadata (``d_sae: int = bounded(2048, ge=1, le=2**20)``) and
``ConfigBase`` checks it whenever a config is constructed -- from a file, ``--set``, a sweep spec, the
app, or ``replace()`` -- so every entry point refuses the same values with the same one-line message
before any run row or folder exists. Floats must also be finite unless a field says otherwise: NaN
compares false with every bound and would otherwise slip through any ``x < lo`` check.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
from dataclasses import MISSING, dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

from core.errors import LabError

SEED_MAX = 2**32 - 1  # numpy's seed range; torch accepts it too
METADATA_KEY = "bounds"


@dataclass(frozen=True)
class Bounds:
    """Inclusive (ge/le) or exclusive (gt/lt) limits; ``finite`` refuses NaN and +-inf."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    finite: bool = True

    def allows(self, v: float | int) -> bool:
        """Python compares ints with floats exactly, so a huge int is judged without rounding."""
        if isinstance(v, float) and math.isnan(v):
            return not self.finite
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def describe(self) -> str:
        low = f"at least {_num(self.ge)}" if self.ge is not None else f"above {_num(self.gt)}" if self.gt is not None else ""
        high = f"at most {_num(self.le)}" if self.le is not None else f"below {_num(self.lt)}" if self.lt is not None else ""
        return " and ".join(p for p in (low, high) if p) or ("a finite number" if self.finite else "a number")


def bounded(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, finite: bool = True) -> Any:
    """A dataclass field whose value (or, for a list, each entry) must lie within the given limits."""
    return field(default=default, metadata={METADATA_KEY: Bounds(ge=ge, gt=gt, le=le, lt=lt, finite=finite)})


def seed_field(default: int = 0) -> Any:
    """A random seed: what numpy and torch accept."""
    return bounded(default, ge=0, le=SEED_MAX)


class BoundsError(LabError):
    """A bounded field's value is out of range; ``at(where)`` restates it under the caller's key path."""

    def __init__(self, where: str, relative: str, detail: str):
        self.relative, self.detail = relative, detail
        super().__init__(f"config key '{where}.{relative}' {detail}")

    def at(self, where: str) -> LabError:
        return LabError(f"config key '{where}.{self.relative}' {self.detail}")


@dataclass(frozen=True)
class _Checked:
    name: str
    bounds: Bounds
    integer: bool  # int (else float)
    is_list: bool  # list of numbers: every entry is checked
    optional: bool  # None allowed
    default: Any


@functools.cache
def bounded_fields(cls: type) -> tuple[_Checked, ...]:
    """The fields of ``cls`` that declare bounds, with the number type each holds."""
    fields = [f for f in dataclasses.fields(cls) if METADATA_KEY in f.metadata]
    if not fields:
        return ()
    hints = get_type_hints(cls)
    out = []
    for f in fields:
        tp, optional = _strip_optional(hints[f.name])
        is_list = get_origin(tp) is list
        if is_list:
            tp = get_args(tp)[0]
        if tp not in (int, float):
            raise TypeError(f"{cls.__name__}.{f.name}: bounds need an int or float field, not {tp}")
        out.append(_Checked(f.name, f.metadata[METADATA_KEY], tp is int, is_list, optional, f.default))
    return tuple(out)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(get_args(tp))
    return tp, False


def check_fields(obj: Any, where: str) -> None:
    """Raise ``BoundsError`` for the first bounded field of ``obj`` whose value is not allowed."""
    for c in bounded_fields(type(obj)):
        value = getattr(obj, c.name)
        if value is None and c.optional:
            continue
        if c.is_list:
            if not isinstance(value, (list, tuple)):
                raise BoundsError(where, c.name,
                                  f"must be a list of {'whole numbers' if c.integer else 'numbers'}, got {_show(value)}")
            for i, v in enumerate(value):
                check_value(where, f"{c.name}[{i}]", v, c, f"each entry of {c.name}")
        else:
            check_value(where, c.name, value, c, c.name)


def check_value(where: str, relative: str, value: Any, c: _Checked, name: str) -> None:
    kind = "a whole number" if c.integer else "a number"
    ok_type = isinstance(value, numbers.Integral if c.integer else numbers.Real) and not isinstance(value, bool)
    if not ok_type:
        raise BoundsError(where, relative, f"must be {kind}, got {_show(value)}: fix the value in the config")
    x = int(value) if isinstance(value, numbers.Integral) else float(value)  # a huge int stays exact, not OverflowError
    nonfinite = isinstance(x, float) and not math.isfinite(x) and c.bounds.finite
    if not nonfinite and c.bounds.allows(x):
        return
    problem = "is not a finite number" if nonfinite else "is out of range"
    raise BoundsError(where, relative,
                      f"= {_show(value)} {problem}: {name} must be {c.bounds.describe()} ({_default(c.default)})")


def field_check(cls: type, path: list[str]) -> tuple[_Checked, str] | None:
    """The bounds of the setting at ``path`` below ``cls`` (e.g. ["train", "lr"]), or None if it has none."""
    hints = get_type_hints(cls)
    if path[0] not in hints:
        return None
    if len(path) > 1:
        sub, _ = _strip_optional(hints[path[0]])
        return field_check(sub, path[1:]) if dataclasses.is_dataclass(sub) else None
    for c in bounded_fields(cls):
        if c.name == path[0]:
            return c, path[0]
    return None


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _default(default: Any) -> str:
    if default is MISSING:
        return "no default"
    if default is None:
        return "omit it for the default"
    shown = _num(default) if isinstance(default, (int, float)) and not isinstance(default, bool) else repr(default)
    return f"default {shown}"


def _show(value: Any) -> str:
    """The value as the user wrote it, kept to one readable line (a 5000-digit int is not)."""
    try:
        text = repr(value) if not isinstance(value, numbers.Integral) or isinstance(value, bool) else str(int(value))
    except ValueError:  # an int too long for str()
        return f"a {int(value).bit_length()}-bit number"
    return text if len(text) <= 60 else text[:40] + f"... ({len(text)} characters)"

