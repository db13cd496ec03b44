"""Strict dataclass <-> dict conversion shared by every config in the lab.

Configs are saved with every run and read back from JSON/TOML files a person edits by hand, so
``from_dict`` refuses unknown keys and wrong types with a message that names the key and the fix,
instead of silently ignoring a typo such as ``d_sea``. Numeric fields declare their allowed range
once (``core.config_bounds.bounded``); every construction checks it, ``replace()`` included.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from core.config_bounds import BoundsError, check_fields
from core.errors import LabError

T = TypeVar("T", bound="ConfigBase")


class ConfigBase:
    """Mixin for dataclass configs: ``to_dict``/``from_dict`` with strict checking."""

    def __post_init__(self) -> None:
        # Every construction -- from_dict, direct, dataclasses.replace -- checks the declared bounds.
        check_fields(self, type(self).__name__)

    def check_bounds(self: T, where: str = "") -> T:
        """Re-check the bounds of this config and every section in it (values may be set after
        construction); a failure names the key under ``where``."""
        where = where or type(self).__name__
        check_fields(self, where)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, ConfigBase):
                value.check_bounds(f"{where}.{f.name}")
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    if isinstance(v, ConfigBase):
                        v.check_bounds(f"{where}.{f.name}[{i}]")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], data: Any, where: str = "") -> T:
        return _load(cls, data, where or cls.__name__)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _load(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _load(arg, value, where)
            except LabError as e:
                errors.append(str(e))
        raise LabError(f"config key '{where}' must be {_type_name(tp)}, got {value!r}: fix the value in the config")
    if origin is typing.Literal:
        if value in get_args(tp):
            return value
        raise LabError(f"config key '{where}' must be one of {_type_name(tp)}, got {value!r}: pick one of those")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise LabError(f"config key '{where}' must be a list, got {value!r}: write it as [..]")
        (item_tp,) = get_args(tp)
        return [_load(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise LabError(f"config key '{where}' must be a table/object, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if hasattr(tp, "coerce"):
            value = tp.coerce(value, where)
            if isinstance(value, tp):
                return value
        if not isinstance(value, dict):
            raise LabError(f"config section '{where}' must be a table/object, got {value!r}")
        hints = get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise LabError(
                f"unknown config key '{where}.{unknown[0]}': valid keys in '{where}' are {', '.join(sorted(names))}"
            )
        kwargs = {k: _load(hints[k], v, f"{where}.{k}") for k, v in value.items()}
        try:
            return tp(**kwargs)
        except BoundsError as e:  # raised by tp's own __post_init__: restate under this key path
            raise e.at(where) from None
        except TypeError as e:
            raise LabError(f"config section '{where}' is incomplete ({e}): add the missing keys") from None
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LabError(f"config key '{where}' must be a number, got {value!r}: fix the value in the config")
        try:
            return float(value)
        except OverflowError:  # an int beyond the float range
            raise LabError(f"config key '{where}' is a number too large to hold (a {value.bit_length()}-bit integer): fix the "
                           "value in the config") from None
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise LabError(f"config key '{where}' must be a whole number, got {value!r}: fix the value in the config")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise LabError(f"config key '{where}' must be true or false, got {value!r}: fix the value in the config")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise LabError(f"config key '{where}' must be text, got {value!r}: quote the value in the config")
        return value
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` from ``--set``; the value is read as JSON when it parses, else as text."""
    if "=" not in text:
        raise LabError(f"--set '{text}' is not of the form key=value: write e.g. --set sae.k=32")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise LabError(f"--set '{text}' has an empty key: write e.g. --set sae.k=32")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    except ValueError as e:  # e.g. an integer with more digits than Python converts
        raise LabError(f"--set '{key.strip()}' has a value that cannot be read ({e}): give a smaller number") from None
    return path, value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {} if part not in node else node[part]
            if not isinstance(node[part], dict):
                raise LabError(f"--set {'.'.join(path)}: '{part}' is not a section: check the key")
        node = node[part]
    node[path[-1]] = value
