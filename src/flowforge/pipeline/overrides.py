"""Settings from a file applied to frozen dataclass configs, checked against their types.

A config file (TOML or JSON) names only what it changes; everything else keeps the value of
the config it is applied to (the embedded defaults or the ``--quick`` preset). Each value is
checked against the field's type and converted where the file format cannot say it (a list
for a tuple, a string for a path, an int for a float); anything else (an unknown key, a
string for an int) is an error naming the dotted setting, so a typo never passes silently.
The dataclass's own ``__post_init__`` then checks combinations.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")


class ConfigFileError(ValueError):
    """A config file that cannot be read or names a setting wrongly; one line."""


def read_config_file(path: Path) -> dict[str, Any]:
    """A ``.toml`` or ``.json`` file as a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot read ({error.strerror})") from None
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ConfigFileError(f"{path}: use a .toml or .json config file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ConfigFileError(f"{path}: not valid {path.suffix[1:].upper()}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: the top level must be a table of settings")
    return data


def apply(config: T, changes: Mapping[str, Any], where: str = "") -> T:
    """`config` with `changes` applied (nested dataclasses by nested tables)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"{type(config).__name__} is not a dataclass instance")
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    values: dict[str, Any] = {}
    for key, value in changes.items():
        path = f"{where}{key}"
        if key not in names:
            raise ConfigFileError(f"unknown setting {path!r}; known here: {', '.join(names)}")
        current = getattr(config, key)
        if current is None and isinstance(value, Mapping):
            current = _optional_table(hints[key])  # `X | None` unset: X's defaults
        if dataclasses.is_dataclass(current) and not isinstance(current, type):
            if not isinstance(value, Mapping):
                raise ConfigFileError(f"{path} is a table of settings, not {value!r}")
            values[key] = apply(current, value, f"{path}.")
        else:
            values[key] = convert(value, hints[key], path)
    try:
        return dataclasses.replace(config, **values)
    except (ValueError, TypeError) as error:
        section = where.rstrip(".") or "the run config"
        message = str(error)
        if not message.startswith((f"{section}:", f"{section}.")):  # it names its setting
            message = f"settings of {section}: {message}"
        raise ConfigFileError(message) from None


def _optional_table(hint: Any) -> Any:
    """The defaults of the dataclass in an optional setting's hint (``X | None``), which a
    table in the file sets; None when the hint has no dataclass (the table is then refused
    by `convert`)."""
    if typing.get_origin(hint) not in (Union, types.UnionType):
        return None
    args = typing.get_args(hint)
    kinds = [a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)]
    return kinds[0]() if len(kinds) == 1 else None


def convert(value: Any, hint: Any, path: str) -> Any:
    """`value` as type `hint` (the subset of types configs use), or ConfigFileError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return convert(value, option, path)
            except ConfigFileError:
                continue
        raise _wrong(path, value, hint)
    if origin is Literal:
        if value in args:
            return value
        raise ConfigFileError(f"{path} must be one of {list(args)}, not {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _wrong(path, value, hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise _wrong(path, value, hint)
        return tuple(
            convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    return _scalar(value, hint, path)


def _scalar(value: Any, hint: Any, path: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Path:
        if isinstance(value, str):
            return Path(value)
    elif hint is Any:
        return value
    raise _wrong(path, value, hint)


def _wrong(path: str, value: Any, hint: Any) -> ConfigFileError:
    shown = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return ConfigFileError(f"{path} must be {shown}, not {value!r}")
