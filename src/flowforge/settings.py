"""Settings added after runs exist: what identifies a run leaves them out while at a default
that does what the code did before them.

A run is identified by its settings: ``flowforge run`` hashes each stage's sections into the
stage key (a changed key redoes the stage), and a GRPO run refuses to resume under other
settings. A new setting whose default changes nothing would still change both, so upgrading
flowforge would redo (or refuse) every run made before it, for nothing. A field declared with
`added_setting` is therefore left out of the run's identity while it holds that default
(`to_json` with `identity`, `added_defaults`); set to anything else, it counts like any setting.

Only a default that reproduces the old behaviour exactly may be marked: a marked field whose
default changed results would let an old run resume as if nothing had changed.

A setting removed after runs exist is listed in `RETIRED` with the value that did what the
code does without it: a record holding that value is the same run as one without the setting.

Likewise a run's place is not its identity: a run directory moved or copied with a stage half
done resumes there (`moved_paths`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: The field metadata key `added_setting` sets.
ADDED = "flowforge.added_setting"

#: Settings removed after runs recorded them, each with the value that did what the code
#: does now without it. SFT's ``library_candidates`` (session 36) became ``library_share``
#: (session 37): ``true`` is share 1, the default.
RETIRED: Mapping[str, Any] = {"library_candidates": True}


def without_retired(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded config without the `RETIRED` settings that hold their retired value (any
    other value stays, and so differs from every config asked for now)."""
    return {k: v for k, v in recorded.items() if not (k in RETIRED and v == RETIRED[k])}


def added_setting(default: T) -> T:
    """A dataclass field default for a setting added after runs existed, whose `default` does
    exactly what the code did without it (see the module docstring)."""
    return dataclasses.field(default=default, metadata={ADDED: True})


def added_defaults(config_type: type) -> dict[str, Any]:
    """The top-level settings of a config dataclass declared with `added_setting`, with their
    defaults as JSON values: what a run made before each of them used."""
    return {
        f.name: to_json(f.default)
        for f in dataclasses.fields(config_type)
        if f.metadata.get(ADDED) and f.default is not dataclasses.MISSING
    }


def to_json(config: Any, identity: bool = False) -> Any:
    """A config as JSON values (tuples as lists, paths as strings). With `identity`, without
    the settings declared with `added_setting` that hold their default: what identifies a run
    (the record of a run keeps them all)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {
            f.name: to_json(getattr(config, f.name), identity)
            for f in dataclasses.fields(config)
            if not (identity and f.metadata.get(ADDED) and getattr(config, f.name) == f.default)
        }
    if isinstance(config, list | tuple):
        return [to_json(v, identity) for v in config]
    if isinstance(config, Path):
        return str(config)
    return config


def moved_paths(recorded: dict[str, Any], was: str, now: str) -> dict[str, Any]:
    """A run record's settings as if recorded at `now`, the run's directory, when it was
    recorded at `was`: every path under the old root replaced by the same path under the new
    one. The root is what the two directories do not share at their end (``/a/run/sft`` moved
    to ``/b/copy/sft``: ``/a/run`` -> ``/b/copy``).

    Why: a stage of ``flowforge run`` records its inputs (the run's SFT, library, triplets)
    by absolute path, and a resumed stage refuses other settings. A run directory moved or
    copied while a stage was half done would then refuse to resume it, though nothing but the
    place changed."""
    old_parts, new_parts = Path(was).parts, Path(now).parts
    shared = 0
    while (
        shared < min(len(old_parts), len(new_parts)) - 1
        and old_parts[-1 - shared] == new_parts[-1 - shared]
    ):
        shared += 1
    old_root = str(Path(*old_parts[: len(old_parts) - shared]))
    new_root = str(Path(*new_parts[: len(new_parts) - shared]))
    if old_root == new_root:
        return recorded

    def moved(value: Any) -> Any:
        if isinstance(value, str) and (value == old_root or value.startswith(old_root + "/")):
            return new_root + value[len(old_root) :]
        if isinstance(value, list):
            return [moved(v) for v in value]
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        return value

    return {k: moved(v) for k, v in recorded.items()}


def changed_settings(
    recorded: Mapping[str, Any],
    config: Mapping[str, Any],
    out_key: str,
    added: Mapping[str, Any] | None = None,
) -> list[str]:
    """The settings (sorted) in which a resumed run's recorded config differs from `config`,
    the one asked for now; empty when it is the same run. The record is read with the
    `added` settings' old values filled in (`added_defaults`) and its paths under the run's
    present place (`moved_paths`); the run directory itself (`out_key`) is no setting."""
    wanted = json.loads(json.dumps(dict(config)))
    saved = {**(added or {}), **without_retired(recorded)}
    saved = moved_paths(saved, str(saved.get(out_key)), str(wanted.get(out_key)))
    saved.pop(out_key, None)
    wanted.pop(out_key, None)
    return sorted(k for k in {*saved, *wanted} if saved.get(k) != wanted.get(k))
