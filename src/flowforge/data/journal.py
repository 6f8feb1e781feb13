"""The collection journal: one SQLite file (WAL) per run, the only record of what was judged.

Collection must survive being killed at any moment (SIGKILL included) and finish the same
plan when run again, with no item lost, none duplicated and no partial row. SQLite gives
that directly: every write here is one transaction (creating the run, or one batch of
results), a transaction is all-or-nothing, and every table has a primary key, so writing
the same result twice leaves one row. WAL mode with ``synchronous=NORMAL`` keeps commits
cheap; a killed process loses nothing committed (the OS holds the log), and a power cut can
lose only the last commits, whose items are simply judged again on resume.

Tables (docs/collection.md has the full schema):
- ``meta``: key -> value (the resolved run config as JSON, the judge id, versions);
- ``workflows``: canonical hash -> canonical API JSON and text form;
- ``plan``: the items chosen up front, ``item`` index -> (prompt id, prompt, workflow hash,
  seed, judge id), that 4-tuple unique;
- ``results``: the same 4-tuple as primary key -> scores (JSON) or error, attempts, times.

A result is final, except one whose error starts with ``transient:`` (TRANSIENT_PREFIX):
such a result may be replaced by a later attempt (``retry_transient``), never a scored one.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOURNAL_FILE = "journal.sqlite"
LOCK_FILE = "writer.lock"
SCHEMA_VERSION = "1"
#: Errors that start with this are worth retrying (a busy or unreachable server).
TRANSIENT_PREFIX = "transient:"

_KEY = "prompt_id, workflow_hash, seed, judge_id"
_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE workflows (
    hash TEXT PRIMARY KEY,
    api_json TEXT NOT NULL,
    text TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE plan (
    item INTEGER PRIMARY KEY,
    prompt_id TEXT NOT NULL,
    prompt TEXT NOT NULL,
    workflow_hash TEXT NOT NULL REFERENCES workflows (hash),
    seed INTEGER NOT NULL,
    judge_id TEXT NOT NULL,
    UNIQUE ({_KEY})
);
CREATE TABLE results (
    prompt_id TEXT NOT NULL,
    workflow_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    judge_id TEXT NOT NULL,
    scores TEXT,
    error TEXT,
    attempts INTEGER NOT NULL CHECK (attempts >= 1),
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    PRIMARY KEY ({_KEY}),
    FOREIGN KEY ({_KEY}) REFERENCES plan ({_KEY}),
    CHECK ((scores IS NULL) <> (error IS NULL))
) WITHOUT ROWID;
"""


def _transient_sql(column: str) -> str:
    """SQL that is true when `column` holds a transient error (exact, case-sensitive prefix)."""
    return f"substr({column}, 1, {len(TRANSIENT_PREFIX)}) = '{TRANSIENT_PREFIX}'"


class JournalError(ValueError):
    """A run directory whose journal cannot be used. One line."""


@dataclass(frozen=True)
class StoredWorkflow:
    """A library workflow as the journal keeps it: hash, canonical API JSON, text form."""

    hash: str
    api_json: str
    text: str


@dataclass(frozen=True)
class PlanItem:
    """One (prompt, workflow, seed) to judge; `key()` is its identity in the journal."""

    item: int
    prompt_id: str
    prompt: str
    workflow_hash: str
    seed: int
    judge_id: str

    def key(self) -> tuple[str, str, int, str]:
        return (self.prompt_id, self.workflow_hash, self.seed, self.judge_id)


@dataclass(frozen=True)
class ItemResult:
    """The final outcome of one plan item: scores or an error, after `attempts` tries."""

    item: PlanItem
    scores: Mapping[str, float] | None
    error: str | None
    attempts: int
    started_at: float
    finished_at: float


@dataclass(frozen=True)
class JournalRow:
    """A plan item joined with its workflow and result, as export reads them."""

    item: PlanItem
    workflow: StoredWorkflow
    scores: dict[str, float] | None
    error: str | None
    attempts: int
    finished_at: float


def is_transient(error: str | None) -> bool:
    """Whether an error follows the transient convention (worth trying again later)."""
    return error is not None and error.startswith(TRANSIENT_PREFIX)


def error_kind(error: str) -> str:
    """The kind of an error, for summaries: its text before the first ``:`` (``transient``)."""
    head = error.split(":", 1)[0].strip()
    return head[:40] or "error"


class Journal:
    """An open run journal. Use `open_journal`; close it (or use ``with``) when done."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self._db = connection

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def is_initialized(self) -> bool:
        """False for a journal whose creating transaction never committed (a killed start)."""
        row = self._db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        return bool(row[0])

    def initialize(
        self,
        meta: Mapping[str, str],
        workflows: Iterable[StoredWorkflow],
        items: Iterable[PlanItem],
    ) -> None:
        """Create the tables and store meta, workflows and plan: one transaction."""
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.executemany(
                "INSERT INTO meta VALUES (?, ?)",
                [*meta.items(), ("schema_version", SCHEMA_VERSION)],
            )
            self._db.executemany(
                "INSERT INTO workflows VALUES (?, ?, ?)",
                ((w.hash, w.api_json, w.text) for w in workflows),
            )
            self._db.executemany(
                "INSERT INTO plan VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (i.item, i.prompt_id, i.prompt, i.workflow_hash, i.seed, i.judge_id)
                    for i in items
                ),
            )

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def plan_size(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM plan").fetchone()[0])

    def result_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM results").fetchone()[0])

    def workflow_texts(self) -> dict[str, str]:
        """Workflow hash -> text form, for writing prompts into workflows while judging."""
        return dict(self._db.execute("SELECT hash, text FROM workflows").fetchall())

    def pending(self, retry_transient: bool = False) -> list[PlanItem]:
        """Plan items without a final result, in plan order (with transient errors if asked)."""
        extra = f" OR {_transient_sql('r.error')}" if retry_transient else ""
        rows = self._db.execute(
            "SELECT p.item, p.prompt_id, p.prompt, p.workflow_hash, p.seed, p.judge_id "
            f"FROM plan p LEFT JOIN results r USING ({_KEY}) "
            f"WHERE r.prompt_id IS NULL{extra} ORDER BY p.item"
        )
        return [PlanItem(*row) for row in rows]

    def record(self, results: Sequence[ItemResult]) -> None:
        """Store final results in one transaction; a scored result is never overwritten.

        Writing a result again is a no-op, except over a transient error, which it
        replaces (attempts add up), so resuming never duplicates or loses a row.
        """
        rows = [
            (
                *r.item.key(),
                None if r.scores is None else json.dumps(dict(r.scores), allow_nan=False),
                r.error,
                r.attempts,
                r.started_at,
                r.finished_at,
            )
            for r in results
        ]
        with self._transaction():
            self._db.executemany(
                f"INSERT INTO results ({_KEY}, scores, error, attempts, started_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                f"ON CONFLICT ({_KEY}) DO UPDATE SET scores = excluded.scores, "
                "error = excluded.error, attempts = results.attempts + excluded.attempts, "
                "finished_at = excluded.finished_at "
                f"WHERE {_transient_sql('results.error')}",
                rows,
            )

    def error_counts(self) -> dict[str, int]:
        """Recorded errors by kind (see `error_kind`) over the whole run."""
        counts: dict[str, int] = {}
        for (error,) in self._db.execute("SELECT error FROM results WHERE error IS NOT NULL"):
            kind = error_kind(error)
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def rows(self) -> Iterator[JournalRow]:
        """Every plan item that has a result, with its workflow, in plan order."""
        query = (
            "SELECT p.item, p.prompt_id, p.prompt, p.workflow_hash, p.seed, p.judge_id, "
            "w.api_json, w.text, r.scores, r.error, r.attempts, r.finished_at "
            f"FROM plan p JOIN results r USING ({_KEY}) "
            "JOIN workflows w ON w.hash = p.workflow_hash ORDER BY p.item"
        )
        for row in self._db.execute(query):
            item = PlanItem(*row[:6])
            yield JournalRow(
                item=item,
                workflow=StoredWorkflow(item.workflow_hash, row[6], row[7]),
                scores=None if row[8] is None else json.loads(row[8]),
                error=row[9],
                attempts=row[10],
                finished_at=row[11],
            )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def open_journal(run_dir: Path, create: bool = False) -> Journal:
    """Open RUN/journal.sqlite in WAL mode (creating the file only if `create`)."""
    path = run_dir / JOURNAL_FILE
    if not create and not path.is_file():
        raise JournalError(f"{run_dir}: not a collection run (no {JOURNAL_FILE})")
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as error:
        raise JournalError(f"{path}: not a usable SQLite journal ({error})") from None
    journal = Journal(path, db)
    if not create and not journal.is_initialized():
        journal.close()
        raise JournalError(f"{run_dir}: the run was never started (its journal is empty)")
    return journal


@contextmanager
def writer_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN's writer lock, so two processes never judge into one run at once.

    An advisory ``flock`` the OS releases when the process dies, even by SIGKILL, so a
    killed run never leaves a stale lock behind. Raises JournalError if another holds it.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise JournalError(f"{run_dir} exists and is not a directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_FILE, "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise JournalError(f"{run_dir} is being collected by {holder}; wait for it") from None
        lock.truncate(0)
        lock.write(f"process {os.getpid()}")
        lock.flush()
        yield
