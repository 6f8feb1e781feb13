"""Collection: judge a sampling plan of (prompt, workflow, seed) items, resumably.

``collect`` creates a run directory or resumes one. Creating it chooses the whole sampling
plan up front (`plan_collection`, see ``plan.py``) and stores it, with the resolved config,
in the journal (``journal.py``) in one transaction. Then, batch by batch, it judges only the
plan items without a final result, and records each batch's results in one transaction.
Killing it at any moment and running the same command again finishes the same plan; a
resume reads the plan from the journal, never the prompt set or library again.

Judge errors (docs/collection.md): a result whose error starts with ``transient:``, or an
exception raised by ``Judge.score`` (recorded as ``transient: <Type>: <message>``), is
retried up to ``max_attempts`` times with exponential backoff, then recorded; any other
error is recorded at once. A judge that breaks the contract (wrong number of results,
non-finite scores) stops the run with `JudgeContractError`: its results would be wrong,
not missing.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import __version__
from ..files import write_text_atomic
from ..judge.base import Judge, JudgeItem, JudgeResult
from ..judge.loader import LoadedJudge
from ..settings import moved_paths
from ..workflow.graph import Workflow
from ..workflow.library import build_library, load_seed_library, load_workflow_dir
from ..workflow.schema import Catalog, catalog_from_object_info
from .journal import (
    TRANSIENT_PREFIX,
    ItemResult,
    Journal,
    PlanItem,
    error_kind,
    is_transient,
    open_journal,
    writer_lock,
)
from .plan import Plan, RequestTemplate, plan_items
from .prompts import Prompt, Split, load_prompt_file, load_prompts

CONFIG_FILE = "config.json"
SPLITS: Mapping[str, Split] = {"train": "train", "heldout": "heldout", "all": "all"}
MAX_BACKOFF_SECONDS = 60.0
#: Settings that may change when a run is resumed: they decide how, not what, is judged.
OPERATIONAL = frozenset({"out", "batch_size", "max_attempts", "backoff_seconds", "retry_transient"})
#: Settings compared through the judge id instead (``sim`` and ``sim:0`` are one judge).
JUDGE_SETTINGS = frozenset({"judge", "judge_opt"})

ProgressCallback = Callable[[int, int], None]


class CollectError(ValueError):
    """A collection that cannot start or resume as asked. One line saying what to change."""


class JudgeContractError(RuntimeError):
    """The judge returned something the Judge contract does not allow; the run stops."""


@dataclass(frozen=True)
class CollectConfig:
    """Everything that decides a collection run; saved as RUN/config.json and in the journal.

    Field names are the CLI flags (``batch_size`` is ``--batch-size``).
    """

    out: Path  # the run directory (created, or resumed if it holds a journal)
    judge: str = "sim"  # judge spec: sim, sim:SEED or package.module:factory
    judge_opt: tuple[tuple[str, str], ...] = ()  # --judge-opt key=value pairs, as strings
    prompts: str = "train"  # a shipped split (train, heldout, all) or a .txt/.jsonl prompt file
    library: Path | None = None  # a directory of API-JSON workflows; None: build the default
    library_size: int = 200  # size of the default library (used only when library is None)
    library_sample: int | None = None  # judge a seeded sample of this many library workflows
    pairs: int | None = None  # random subset: this many (prompt, workflow) pairs
    seeds: int = 1  # seeds per (prompt, workflow) pair, shared by all workflows of a prompt
    grid: bool = False  # every prompt with every workflow instead of a random subset
    seed: int = 0  # the plan's random seed (and the default library's)
    negative: str = ""  # written into every workflow's $NEGATIVE (design must use the same)
    batch_size: int = 256  # items per judge.score call and per journal transaction
    max_attempts: int = 3  # tries per item for transient errors (1: never retry)
    backoff_seconds: float = 1.0  # wait before retry k is backoff_seconds * 2**(k-1), <= 60 s
    retry_transient: bool = False  # on resume, judge again items whose error was transient

    def __post_init__(self) -> None:
        if self.grid == (self.pairs is not None):
            raise CollectError(
                "give exactly one of --grid (every prompt x every workflow) or --pairs N"
            )
        positive = {"seeds": self.seeds, "batch_size": self.batch_size}
        positive |= {"max_attempts": self.max_attempts, "library_size": self.library_size}
        if self.pairs is not None:
            positive["pairs"] = self.pairs
        if self.library_sample is not None:
            positive["library_sample"] = self.library_sample
        for name, value in positive.items():
            if value < 1:
                raise CollectError(f"--{name.replace('_', '-')} must be at least 1, not {value}")
        if not (0 <= self.backoff_seconds <= MAX_BACKOFF_SECONDS):
            raise CollectError(
                f"--backoff-seconds must be in [0, {MAX_BACKOFF_SECONDS:g}], "
                f"not {self.backoff_seconds}"
            )
        keys = [key for key, _ in self.judge_opt]
        if len(set(keys)) != len(keys):
            raise CollectError("a --judge-opt key is given twice")

    def to_json(self) -> dict[str, Any]:
        """The config as JSON values (paths as strings, judge options as an object)."""
        data = asdict(self)
        data["out"] = str(self.out)
        data["library"] = None if self.library is None else str(self.library)
        data["judge_opt"] = dict(sorted(self.judge_opt))
        return data

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> CollectConfig:
        known = {f.name for f in fields(CollectConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CollectError(f"unknown collect setting(s): {', '.join(unknown)}")
        values = dict(data)
        values["out"] = Path(values["out"])
        values["library"] = None if values.get("library") is None else Path(values["library"])
        values["judge_opt"] = tuple(sorted(dict(values.get("judge_opt", {})).items()))
        return CollectConfig(**values)


@dataclass(frozen=True)
class CollectSummary:
    """What one `collect` call did. Counts are of plan items (one item, one count)."""

    run: Path
    judge_id: str
    created: bool  # False when an existing run was resumed
    total: int  # items in the plan
    duplicates: int  # library workflows left out of the plan as repeats of another design
    skipped_done: int  # items that already had a final result when this call started
    judged: int  # items given a final result by this call
    scored: int  # of those, how many got scores
    errors_by_kind: Mapping[str, int] = field(default_factory=dict)  # this call, by error kind
    run_errors_by_kind: Mapping[str, int] = field(default_factory=dict)  # the whole run's
    retried: int = 0  # items that needed more than one attempt
    judging_seconds: float = 0.0
    elapsed_seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Judgements per second while judging (planning and startup excluded)."""
        return self.judged / self.judging_seconds if self.judging_seconds > 0 else 0.0


def plan_collection(
    config: CollectConfig,
    prompts: Sequence[Prompt],
    library: Mapping[str, Workflow],
    *,
    judge_id: str,
    catalog: Catalog,
) -> Plan:
    """The plan `config` asks for: the full grid (``--grid``) or ``--pairs`` random pairs,
    each with ``--seeds`` seeds, over the library or ``--library-sample`` of it,
    deterministic given ``--seed`` (see `plan.plan_items`)."""
    return plan_items(
        prompts,
        library,
        pairs=None if config.grid else config.pairs,
        seeds=config.seeds,
        seed=config.seed,
        judge_id=judge_id,
        catalog=catalog,
        library_sample=config.library_sample,
    )


def load_prompt_set(prompts: str) -> list[Prompt]:
    """``--prompts``: a shipped split name (train, heldout, all) or a .txt/.jsonl file."""
    split = SPLITS.get(prompts)
    return load_prompt_file(Path(prompts)) if split is None else load_prompts(split)


def load_library(config: CollectConfig, catalog: Catalog) -> dict[str, Workflow]:
    """``--library DIR`` (file stem -> workflow), or a default library of ``--library-size``
    built from the shipped seeds with ``--seed`` for the judge's catalog (hash -> workflow)."""
    if config.library is not None:
        return load_workflow_dir(config.library)
    entries = build_library(load_seed_library(), catalog, config.library_size, config.seed)
    return {entry.hash: entry.workflow for entry in entries}


def judge_catalog(judge: Judge, judge_id: str) -> Catalog:
    """The node schemas and model files of the judge's install (its ``object_info``)."""
    return catalog_from_object_info(judge.object_info(), source=f"judge {judge_id}")


def collect(
    config: CollectConfig,
    judge: LoadedJudge,
    on_progress: ProgressCallback | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> CollectSummary:
    """Create or resume the run in ``config.out`` and judge every plan item without a result.

    `on_progress(done, total)` counts plan items with a final result: the first call (before
    any judging) reports the items a resumed run had already done; then one call per batch.
    Raises CollectError when the run exists with other settings, or is being collected by
    another process; JudgeContractError when the judge breaks the contract.
    """
    started = time.monotonic()
    with writer_lock(config.out), _open_run(config, judge) as (journal, created):
        todo = journal.pending(retry_transient=config.retry_transient)
        templates = {
            digest: RequestTemplate(text, config.negative)
            for digest, text in journal.workflow_texts().items()
        }
        session = _Session(journal, judge, config, templates, on_progress, sleep)
        session.start(total=journal.plan_size(), done=journal.plan_size() - len(todo))
        for start in range(0, len(todo), config.batch_size):
            session.judge_batch(todo[start : start + config.batch_size])
        return CollectSummary(
            run=config.out,
            judge_id=judge.judge_id,
            created=created,
            total=session.total,
            duplicates=int(journal.meta()["plan_duplicates"]),
            skipped_done=session.total - len(todo),
            judged=session.judged,
            scored=session.scored,
            errors_by_kind=dict(session.errors),
            run_errors_by_kind=journal.error_counts(),
            retried=session.retried,
            judging_seconds=time.monotonic() - session.started,
            elapsed_seconds=time.monotonic() - started,
        )


class _Session:
    """One `collect` call's judging: batches, retries, journal writes, counts, progress."""

    def __init__(
        self,
        journal: Journal,
        judge: LoadedJudge,
        config: CollectConfig,
        templates: Mapping[str, RequestTemplate],
        on_progress: ProgressCallback | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.journal, self.judge, self.config = journal, judge, config
        self.templates, self.on_progress, self.sleep = templates, on_progress, sleep
        self.total = self.done = self.judged = self.scored = self.retried = 0
        self.errors: Counter[str] = Counter()
        self.started = time.monotonic()

    def start(self, total: int, done: int) -> None:
        self.total, self.done, self.started = total, done, time.monotonic()
        self._report()

    def judge_batch(self, batch: Sequence[PlanItem]) -> None:
        """Judge a batch until every item has a final result; record each attempt's finals.

        Items whose result is transient are sent again (alone, not with the whole batch)
        after a backoff, until ``max_attempts``; then their transient error is recorded.
        """
        started = time.time()
        items = [
            JudgeItem(p.prompt, self.templates[p.workflow_hash].fill(p.prompt, p.seed), p.seed)
            for p in batch
        ]
        waiting = list(range(len(batch)))
        for attempt in range(1, self.config.max_attempts + 1):
            results = _score(self.judge, [items[i] for i in waiting])
            last = attempt == self.config.max_attempts
            final = [
                ItemResult(batch[i], result.scores, result.error, attempt, started, time.time())
                for i, result in zip(waiting, results, strict=True)
                if last or not is_transient(result.error)
            ]
            self._record(final)
            waiting = [
                i for i, result in zip(waiting, results, strict=True)
                if not last and is_transient(result.error)
            ]  # fmt: skip
            if not waiting:
                return
            backoff = self.config.backoff_seconds * 2 ** (attempt - 1)
            self.sleep(min(backoff, MAX_BACKOFF_SECONDS))

    def _record(self, final: Sequence[ItemResult]) -> None:
        self.journal.record(final)
        for result in final:
            self.judged += 1
            self.retried += result.attempts > 1
            if result.error is None:
                self.scored += 1
            else:
                self.errors[error_kind(result.error)] += 1
        self.done += len(final)
        self._report()

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)


def _score(judge: LoadedJudge, items: list[JudgeItem]) -> list[JudgeResult]:
    """``judge.score(items)``, an exception turned into a transient error for every item."""
    try:
        results = judge.judge.score(items)
    except Exception as error:  # any failure of a judge call is worth another try
        message = " ".join(str(error).split())[:500]
        transient = JudgeResult(None, f"{TRANSIENT_PREFIX} {type(error).__name__}: {message}")
        return [transient] * len(items)
    check_results(judge.judge_id, results, len(items))
    return list(results)


def check_results(judge_id: str, results: object, expected: int) -> None:
    """Raise JudgeContractError unless `results` are `expected` JudgeResults with finite scores."""
    if not isinstance(results, Sequence) or len(results) != expected:
        found = len(results) if isinstance(results, Sequence) else type(results).__name__
        raise JudgeContractError(
            f"judge {judge_id} returned {found} results for {expected} items (one per item)"
        )
    for position, result in enumerate(results):
        if not isinstance(result, JudgeResult):
            raise JudgeContractError(
                f"judge {judge_id}: result {position} is a {type(result).__name__}, "
                "not a JudgeResult"
            )
        for name, value in (result.scores or {}).items():
            if not (
                isinstance(name, str)
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                raise JudgeContractError(
                    f"judge {judge_id}: result {position} has score {name!r} = {value!r}; "
                    "scores are finite numbers by name"
                )


@contextmanager
def _open_run(config: CollectConfig, judge: LoadedJudge) -> Iterator[tuple[Journal, bool]]:
    """The run's journal, created with a new plan, or checked against `config` and reused."""
    journal = open_journal(config.out, create=True)
    try:
        created = not journal.is_initialized()
        if created:
            catalog = judge_catalog(judge.judge, judge.judge_id)
            prompts = load_prompt_set(config.prompts)
            library = load_library(config, catalog)
            plan = plan_collection(
                config, prompts, library, judge_id=judge.judge_id, catalog=catalog
            )
            journal.initialize(_meta(config, judge.judge_id, plan), plan.workflows, plan.items)
        else:
            _check_resume(journal.meta(), config, judge.judge_id)
        config_file = config.out / CONFIG_FILE
        if not config_file.is_file():
            write_text_atomic(config_file, journal.meta()["config"] + "\n")
        yield journal, created
    finally:
        journal.close()


def _meta(config: CollectConfig, judge_id: str, plan: Plan) -> dict[str, str]:
    return {
        "config": json.dumps(config.to_json(), indent=2, sort_keys=True),
        "judge_id": judge_id,
        "flowforge_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "plan_duplicates": str(plan.duplicates),
    }


def _check_resume(meta: Mapping[str, str], config: CollectConfig, judge_id: str) -> None:
    """CollectError naming every setting that differs from the run's, operational ones aside."""
    current = config.to_json()
    stored = json.loads(meta["config"])
    stored = moved_paths(stored, str(stored.get("out", current["out"])), str(current["out"]))
    differences = [
        f"--{name.replace('_', '-')} was {stored.get(name)!r}, now {current[name]!r}"
        for name in current
        if name not in OPERATIONAL | JUDGE_SETTINGS and stored.get(name) != current[name]
    ]
    if meta["judge_id"] != judge_id:
        differences.insert(0, f"the judge was {meta['judge_id']}, now {judge_id}")
    if differences:
        raise CollectError(
            f"{config.out} was started with other settings: {'; '.join(differences)}. "
            "Resume it with the same settings, or collect into a new --out"
        )
