"""Typed configuration sections: YAML mappings -> frozen dataclasses, errors naming the key.

The toolkit every command's config uses (``train.config``, ``workflows.distill.config``, ...):
``build_section`` builds a dataclass from a mapping, recursing into nested dataclass fields,
rejecting unknown keys and checking scalar types against the annotations (``X | tuple[X,
...]``: one value, or a list converted to a tuple element by element); ``check_field``
raises a ``ConfigError`` whose message starts with the key path (``training.lr: must be > 0``);
``read_yaml_config`` adds the file name and applies command-line overrides
(``apply_overrides``: ``--set training.lr=0.01``), which are checked like the file's values.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "build_section",
    "check_field",
    "plain",
    "read_yaml_config",
]

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
    """Check/convert one value against its annotation (dataclass, Optional, scalar, Literal,
    ``dict[str, X]``)."""
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else build_section(hint, value, path + ".")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            check_field(type(None) in args, path, "cannot be null")
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, path)
        return _scalar_or_tuple(inner, value, path)
    if origin is Literal:
        check_field(value in args, path, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin is dict:
        check_field(isinstance(value, Mapping), path, f"expected a mapping, got {value!r}")
        for key in value:
            check_field(isinstance(key, str), f"{path}.{key}", "keys must be strings")
        return {key: _convert(args[1], item, f"{path}.{key}") for key, item in value.items()}
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


def _scalar_or_tuple(hints: list[Any], value: Any, path: str) -> Any:
    """``value`` against ``X | tuple[X, ...]``: a list is converted element by element to a
    tuple, anything else as an ``X``."""
    sequences = [h for h in hints if typing.get_origin(h) is tuple]
    scalars = [h for h in hints if h not in sequences]
    if len(sequences) != 1 or len(scalars) != 1:
        raise TypeError(f"{path}: unsupported annotation {hints} (X | tuple[X, ...] only)")
    if not isinstance(value, (list, tuple)):
        return _convert(scalars[0], value, path)
    element = typing.get_args(sequences[0])[0]
    return tuple(_convert(element, item, f"{path}[{k}]") for k, item in enumerate(value))


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


def apply_overrides(values: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``values`` with ``KEY.PATH=VALUE`` overrides applied, in order (``values`` untouched).

    VALUE is read as YAML: ``0.01`` a number, ``true``/``false``, ``null``, ``[16, 16]`` a
    list, ``{enabled: false}`` a mapping, anything else a string. Sections missing from
    ``values`` are created; whether a key exists and a value fits is left to the config's
    own checks (which name the key path).

    Raises:
        ConfigError: an override that is not ``KEY.PATH=VALUE``, or a path through a value
            that is not a section (naming the override).
    """
    result = plain(values)
    if overrides and not isinstance(result, dict):
        raise ConfigError(f"--set: the configuration is not a mapping of sections ({result!r})")
    for item in overrides:
        key, equals, text = item.partition("=")
        parts = key.strip().split(".")
        if not equals or not all(parts):
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. training.lr=0.01")
        section = result
        for depth, name in enumerate(parts[:-1]):
            section = section.setdefault(name, {})
            if not isinstance(section, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {item!r}: {where} is a value, not a section")
        section[parts[-1]] = yaml.safe_load(text) if text.strip() else ""
    return result


def read_yaml_config(
    path: str | Path, from_dict: Callable[[Mapping[str, Any]], T], overrides: Sequence[str] = ()
) -> T:
    """Parse a YAML file with ``from_dict`` (e.g. ``RunConfig.from_dict``), after
    ``apply_overrides``.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: a key is unknown or a value invalid (the message names the file and the
            key path), or an override is malformed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path) as handle:
        values = yaml.safe_load(handle)
    try:
        return from_dict(apply_overrides(values or {}, overrides))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
