"""The workflow library: hand-made seed workflows, augmented into many distinct ones.

Phase 1 of the method (SFT) needs a large, varied set of valid workflows to teach the
language of workflows; the collection stage needs the same set to sample designs from.
`build_library` grows it from seeds by random augmentation (`augment.py`): a random walk
that starts from a seed or from any workflow already in the library, so compositions of
many changes appear. Workflows are told apart by their canonical hash (`canonical.py`);
the seeds come first. Every workflow kept is validated against the catalog and checked for
coherence (`coherence.py`): a failure there is a bug in an augmentation and raises
`LibraryError`, it is never dropped silently. The same seeds, catalog and `seed` give the
same library.

The shipped seeds (``resources/seeds``, described in its README) share one placeholder
prompt, one negative prompt and one noise seed, so that distinct hashes mean distinct
designs, not different request texts.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .api import from_api, parse_json_text, read_json_file, save_api
from .augment import augment_with_ops
from .canonical import workflow_hash
from .coherence import coherence_problems
from .graph import Workflow
from .schema import Catalog
from .validate import validate

INDEX_NAME = "index.jsonl"
#: Augmentations applied per step of the random walk: between 1 and this many.
MAX_OPS_PER_STEP = 3
#: Chance that a step starts from a seed rather than from any workflow of the library.
SEED_RESTART = 0.3
#: Attempts allowed per requested workflow before `build_library` gives up.
ATTEMPTS_PER_WORKFLOW = 20


class LibraryError(ValueError):
    """The library cannot be built: an invalid workflow, or too few distinct ones."""


@dataclass(frozen=True)
class LibraryEntry:
    """One library workflow with its canonical hash and provenance."""

    workflow: Workflow
    hash: str
    origin: str  # the seed it descends from
    ops: tuple[str, ...]  # augmentations applied to that seed, in order


def load_seed_library() -> dict[str, Workflow]:
    """The shipped seed workflows by name (file stem), sorted by name."""
    folder = resources.files("flowforge").joinpath("resources", "seeds")
    seeds = {}
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".json"):
            text = entry.read_text("utf-8")
            seeds[entry.name.removesuffix(".json")] = from_api(
                parse_json_text(text, entry.name), entry.name
            )
    return seeds


def load_workflow_dir(path: Path | str) -> dict[str, Workflow]:
    """Every API-format ``*.json`` workflow of a directory by file stem (``index.jsonl``, a
    saved library's index, is not a workflow). Raises LibraryError for a missing or empty one."""
    folder = Path(path)
    if not folder.is_dir():
        raise LibraryError(f"{folder}: not a directory")
    files = sorted(p for p in folder.glob("*.json") if p.name != INDEX_NAME)
    if not files:
        raise LibraryError(f"{folder}: no *.json workflow files")
    return {p.stem: from_api(read_json_file(p), str(p)) for p in files}


def check_workflow(workflow: Workflow, catalog: Catalog, what: str) -> None:
    """Raise LibraryError listing every validation error and coherence problem."""
    problems = [*validate(workflow, catalog).errors, *coherence_problems(workflow)]
    if problems:
        details = "; ".join(str(problem) for problem in problems)
        raise LibraryError(f"{what} is not a valid, coherent workflow: {details}")


def _seed_entries(seeds: Mapping[str, Workflow], catalog: Catalog) -> list[LibraryEntry]:
    entries: list[LibraryEntry] = []
    seen: set[str] = set()
    for name in sorted(seeds):
        check_workflow(seeds[name], catalog, f"seed {name!r}")
        digest = workflow_hash(seeds[name])
        if digest not in seen:
            seen.add(digest)
            entries.append(LibraryEntry(seeds[name], digest, name, ()))
    return entries


def build_library(
    seeds: Mapping[str, Workflow],
    catalog: Catalog,
    size: int,
    seed: int,
    on_progress: Callable[[int], None] | None = None,
    *,
    max_attempts: int | None = None,
) -> list[LibraryEntry]:
    """`size` distinct (by canonical hash) valid, coherent workflows: seeds first.

    `on_progress(count)` is called with the number of workflows so far each time one is
    added. Raises LibraryError when a seed or an augmented workflow fails validation or
    coherence (a bug), or when `max_attempts` augmentations (default
    ``ATTEMPTS_PER_WORKFLOW * size``) did not reach `size`.
    """
    if size < 1:
        raise LibraryError(f"size must be at least 1, got {size}")
    if not seeds:
        raise LibraryError("no seed workflows")
    entries = _seed_entries(seeds, catalog)
    starts = list(entries)
    seen = {entry.hash for entry in entries}
    limit = max_attempts if max_attempts is not None else ATTEMPTS_PER_WORKFLOW * size
    rng = random.Random(seed)
    if on_progress is not None:
        on_progress(min(len(entries), size))
    attempts = 0
    while len(entries) < size:
        if attempts >= limit:
            raise LibraryError(
                f"only {len(entries)} distinct workflows after {attempts} augmentations "
                f"(asked for {size}); add seeds or allow more attempts"
            )
        attempts += 1
        parent = rng.choice(starts if rng.random() < SEED_RESTART else entries)
        result = augment_with_ops(parent.workflow, catalog, rng, rng.randint(1, MAX_OPS_PER_STEP))
        digest = workflow_hash(result.workflow)
        if digest in seen:
            continue
        ops = parent.ops + result.ops
        check_workflow(result.workflow, catalog, f"{parent.origin} after {list(ops)}")
        seen.add(digest)
        entries.append(LibraryEntry(result.workflow, digest, parent.origin, ops))
        if on_progress is not None:
            on_progress(len(entries))
    return entries[:size]


def save_library(entries: Sequence[LibraryEntry], out_dir: Path | str) -> Path:
    """Write ``HASH.json`` (API format) per workflow and ``index.jsonl``; returns the index.

    The index has one JSON line per workflow, in library order: its ``hash``, ``file``,
    ``origin`` (its seed) and ``ops`` (the augmentations applied to that seed). It is JSON
    Lines, not ``.json``, so that ``flowforge validate DIR/*.json`` sees only workflows.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for entry in entries:
        name = f"{entry.hash}.json"
        save_api(entry.workflow, folder / name)
        index.append(
            {"hash": entry.hash, "file": name, "origin": entry.origin, "ops": list(entry.ops)}
        )
    path = folder / INDEX_NAME
    path.write_text("".join(json.dumps(row) + "\n" for row in index), encoding="utf-8")
    return path
