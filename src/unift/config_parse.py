"""Typed dataclasses from YAML and key=value strings: coercion, overrides, merging, help lines.

Field types: bool, int, float, str, a nested dataclass, `list[T]` of one of the scalar types
(YAML list, or on the command line `[0, 1, 2]` or `0,1,2`), `dict[str, D]` of a dataclass D, and
`dict[str, Any]` (kept as given, for sub-configs checked elsewhere).

Generic over any dataclass whose fields carry `metadata` (help text, allowed `choices`): the run
configuration of `unift.config` is built with it. Every mistake is a one-line `UserError` naming
the key (unknown keys get a "did you mean" suggestion).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import yaml

from unift.errors import UserError, suggest


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, typ: Any, where: str) -> Any:
    """Coerce a YAML or command-line value to `typ`, or raise a one-line UserError."""
    origin = typing.get_origin(typ)
    if origin is list:
        return _coerce_list(value, typing.get_args(typ)[0], where)
    if origin is dict:
        return _coerce_dict(value, typing.get_args(typ)[1], where)
    if typ is Any:
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if typ is float:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"{where}: expected a number, got {value!r}")
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if value is None:
            return ""
        raise UserError(f"{where}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {typ!r}")  # a bug, not a user error


def _coerce_list(value: Any, item: Any, where: str) -> list:
    if isinstance(value, str):  # from the command line: "[0, 1]" or "0,1"
        text = value.strip()
        try:
            value = yaml.safe_load(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
        except yaml.YAMLError:
            raise UserError(f"{where}: expected a list such as [0, 1, 2], got {text!r}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise UserError(f"{where}: expected a list, got {value!r}")
    return [coerce(v.strip() if isinstance(v, str) else v, item, f"{where}[{i}]") for i, v in enumerate(value)]


def _coerce_dict(value: Any, item: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping of names, got {value!r}")
    if dataclasses.is_dataclass(item):
        return {str(k): build(item, v, f"{where}.{k}") for k, v in value.items()}
    return {str(k): coerce(v, item, f"{where}.{k}") for k, v in value.items()}


def build(cls: type, values: Any, where: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise UserError(f"{where or 'config'}: expected a mapping of keys, got {values!r}")
    types_ = field_types(cls)
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in types_:
            raise UserError(f"unknown config key '{path}'{suggest(str(key), types_)}")
        typ = types_[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = build(typ, value, path)
        else:
            kwargs[key] = coerce(value, typ, path)
            choices = next(f for f in dataclasses.fields(cls) if f.name == key).metadata.get("choices")
            if choices and kwargs[key] not in choices:
                close = suggest(kwargs[key], choices)
                hint = close if "did you mean" in close else ""
                raise UserError(f"{path}: unknown value '{kwargs[key]}' (allowed: {', '.join(choices)}){hint}")
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """['train.lr=1e-4', 'method=dft'] -> nested dict of raw strings."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key=value (e.g. train.lr=1e-4)")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), raw)  # typed by the field it sets (see _coerce)
    return tree


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def describe(cls: type, prefix: str = "") -> list[str]:
    """Lines 'key (type, default): help' for every field, for --help-config."""
    lines = []
    for f in dataclasses.fields(cls):
        typ = field_types(cls)[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(typ):
            lines.extend(describe(typ, key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {key} = {default!r}  # {f.metadata.get('help', '')}")
    return lines
