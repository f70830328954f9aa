"""Typed dataclasses from YAML and key=value strings: coercion, overrides, merging, help lines.

Generic over any dataclass whose fields carry `metadata` (help text, allowed `choices`): the run
configuration of `unift.config` is built with it. Every mistake is a one-line `UserError` naming
the key (unknown keys get a "did you mean" suggestion).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from unift.errors import UserError, suggest


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, typ: Any, where: str) -> Any:
    """Coerce a YAML or command-line value to `typ`, or raise a one-line UserError."""
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
