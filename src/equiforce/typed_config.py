"""Typed configuration sections: YAML mappings -> frozen dataclasses, errors naming the key.

The toolkit every command's config uses (``train.config``, ``workflows.distill.config``, ...):
``build_section`` builds a dataclass from a mapping, recursing into nested dataclass fields,
rejecting unknown keys and checking scalar types against the annotations; ``check_field``
raises a ``ConfigError`` whose message starts with the key path (``training.lr: must be > 0``);
``read_yaml_config`` adds the file name.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar

import yaml

__all__ = ["ConfigError", "build_section", "check_field", "plain", "read_yaml_config"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key path."""


def check_field(condition: bool, path: str, message: str) -> None:
    """Raise ``ConfigError("<path>: <message>")`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{path}: {message}")


def build_section(cls: type, values: Any, path: str) -> Any:
    """Recursively build dataclass ``cls`` from ``values``, checking keys and scalar types."""
    check_field(
        isinstance(values, Mapping), path or "<root>", f"expected a mapping, got {values!r}"
    )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in values:
        if name not in fields:
            raise ConfigError(f"{path}{name}: unknown key; known: {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _convert(hints[name], value, f"{path}{name}")
    missing = [n for n, f in fields.items() if n not in kwargs and _is_required(f)]
    if missing:
        raise ConfigError(f"{path}{missing[0]}: is required")
    return cls(**kwargs)


def _is_required(f: dataclasses.Field) -> bool:
    no_default = f.default is dataclasses.MISSING
    return no_default and f.default_factory is dataclasses.MISSING


def _convert(hint: Any, value: Any, path: str) -> Any:
    """Check/convert one value against its annotation (dataclass, Optional, scalar, Literal)."""
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else build_section(hint, value, path + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            check_field(type(None) in args, path, "cannot be null")
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, path)
    if origin is Literal:
        check_field(value in args, path, f"must be one of {list(args)}, got {value!r}")
        return value
    if hint is float:
        return _as_float(value, path)
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        check_field(ok, path, f"expected an integer, got {value!r}")
        return value
    if hint is bool:
        check_field(isinstance(value, bool), path, f"expected true/false, got {value!r}")
        return value
    if hint is str:
        check_field(isinstance(value, str), path, f"expected a string, got {value!r}")
        return value
    return value


def _as_float(value: Any, path: str) -> float:
    """A number; also a numeric string, because YAML 1.1 reads ``1e-3`` (no dot) as text."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        check_field(math.isfinite(number), path, f"expected a number, got {value!r}")
        return number
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    check_field(ok, path, f"expected a number, got {value!r}")
    return float(value)


def plain(value: Any) -> Any:
    """Tuples -> lists and mappings -> dicts, recursively (YAML friendly)."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def read_yaml_config(path: str | Path, from_dict: Callable[[Mapping[str, Any]], T]) -> T:
    """Parse a YAML file with ``from_dict`` (e.g. ``RunConfig.from_dict``).

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: a key is unknown or a value invalid (the message names the file and the
            key path).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path) as handle:
        values = yaml.safe_load(handle)
    try:
        return from_dict(values or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
