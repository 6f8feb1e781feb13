"""Export a collection run as a dataset of triplets, and read triplets back.

One row per judged plan item (items not judged yet are counted, not exported), in plan
order, in Parquet (a ``.parquet`` file) or as a Hugging Face ``datasets`` dataset saved to
disk (a directory, ``Dataset.save_to_disk``). Columns (docs/collection.md):

    item, prompt_id, prompt, negative, workflow_hash, workflow_api, workflow_text, seed,
    judge_id, score_<name> (one per score name, float, null when absent), error, attempts,
    judged_at

``workflow_api`` is the exact API JSON the judge received (the design with the prompt,
negative and seed written in), ``workflow_text`` the design's text form with placeholders
(what reward models and the policy read). Score columns carry a ``score_`` prefix so a
scorer named like a fixed column (``seed``, ``error``) cannot collide with it.

`load_triplets` reads any of the three (a run directory, a Parquet file, a saved dataset)
into `Triplet` records, which is how later stages get their data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ..files import remove
from .collect import CollectConfig
from .journal import JOURNAL_FILE, open_journal
from .plan import RequestTemplate

ExportFormat = Literal["parquet", "hf"]
SCORE_PREFIX = "score_"
_FIXED: dict[str, Any] = {
    "item": pa.int64(),
    "prompt_id": pa.string(),
    "prompt": pa.string(),
    "negative": pa.string(),
    "workflow_hash": pa.string(),
    "workflow_api": pa.string(),
    "workflow_text": pa.string(),
    "seed": pa.int64(),
    "judge_id": pa.string(),
}
_TAIL: dict[str, Any] = {
    "error": pa.string(),
    "attempts": pa.int64(),
    "judged_at": pa.timestamp("us", tz="UTC"),
}


class ExportError(ValueError):
    """An export that cannot be written or a file that is not a triplet dataset. One line."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what it holds."""

    path: Path
    format: ExportFormat
    rows: int  # judged items exported
    pending: int  # plan items without a result yet (not exported)
    score_names: tuple[str, ...]


@dataclass(frozen=True)
class Triplet:
    """One judged (prompt, workflow, seed): scores by name, or the judge's error."""

    prompt_id: str
    prompt: str
    negative: str
    workflow_hash: str
    workflow_text: str
    workflow_api: str  # JSON text, exactly as judged
    seed: int
    judge_id: str
    scores: Mapping[str, float] | None
    error: str | None


def export_format(out: Path, format: ExportFormat | None = None) -> ExportFormat:
    """`format` if given, else from `out`: ``.parquet`` -> parquet, no suffix -> hf."""
    if format is not None:
        return format
    if out.suffix == ".parquet":
        return "parquet"
    if out.suffix == "":
        return "hf"
    raise ExportError(
        f"-o {out}: cannot tell the format from {out.suffix!r}; write FILE.parquet for "
        "Parquet or a directory name (no suffix) for a Hugging Face dataset"
    )


def run_table(run_dir: Path) -> tuple[Any, int]:
    """The run's judged items as a pyarrow Table (columns above) and the count not judged."""
    with open_journal(run_dir) as journal:
        negative = CollectConfig.from_json(json.loads(journal.meta()["config"])).negative
        pending = journal.plan_size() - journal.result_count()
        rows = list(journal.rows())
    names = sorted({name for row in rows for name in (row.scores or {})})
    columns: dict[str, list[Any]] = {name: [] for name in [*_FIXED, *_TAIL]}
    scores: dict[str, list[float | None]] = {name: [] for name in names}
    templates: dict[str, RequestTemplate] = {}
    for row in rows:
        item = row.item
        if item.workflow_hash not in templates:
            templates[item.workflow_hash] = RequestTemplate(row.workflow.text, negative)
        api = templates[item.workflow_hash].fill(item.prompt, item.seed)
        values = {
            "item": item.item,
            "prompt_id": item.prompt_id,
            "prompt": item.prompt,
            "negative": negative,
            "workflow_hash": item.workflow_hash,
            "workflow_api": json.dumps(api, separators=(",", ":"), ensure_ascii=False),
            "workflow_text": row.workflow.text,
            "seed": item.seed,
            "judge_id": item.judge_id,
            "error": row.error,
            "attempts": row.attempts,
            "judged_at": int(row.finished_at * 1e6),
        }
        for name, value in values.items():
            columns[name].append(value)
        for name in names:
            scores[name].append(None if row.scores is None else row.scores.get(name))
    schema = pa.schema(
        [
            *_FIXED.items(),
            *((SCORE_PREFIX + name, pa.float64()) for name in names),
            *_TAIL.items(),
        ]
    )
    data = {**columns, **{SCORE_PREFIX + name: values for name, values in scores.items()}}
    return pa.table({name: data[name] for name in schema.names}, schema=schema), pending


def export_run(
    run_dir: Path, out: Path, format: ExportFormat | None = None, overwrite: bool = False
) -> ExportResult:
    """Write the run's triplets to `out` (Parquet file or HF dataset directory).

    The file or directory appears complete or not at all (written aside, then renamed).
    """
    kind = export_format(out, format)
    if out.exists() and not overwrite:
        raise ExportError(f"-o {out} already exists; remove it or pass --overwrite")
    table, pending = run_table(run_dir)
    partial = out.with_name(out.name + ".partial")
    remove(partial)
    if kind == "parquet":
        pq.write_table(table, partial)
    else:
        from datasets import Dataset  # type: ignore[import-untyped]
        from datasets.table import InMemoryTable  # type: ignore[import-untyped]
        from datasets.utils import logging  # type: ignore[import-untyped]

        bars = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()  # the caller reports; a bar per shard is stderr noise
        try:
            Dataset(InMemoryTable(table)).save_to_disk(str(partial))
        finally:
            if bars:
                logging.enable_progress_bar()
    remove(out)
    os.replace(partial, out)
    names = tuple(n.removeprefix(SCORE_PREFIX) for n in table.column_names if _is_score(n))
    return ExportResult(out, kind, table.num_rows, pending, names)


def load_triplets(path: Path) -> list[Triplet]:
    """Triplets from a run directory, a Parquet export or a saved HF dataset, in plan order."""
    if (path / JOURNAL_FILE).is_file():
        table, _ = run_table(path)
    elif path.is_file() and path.suffix == ".parquet":
        table = pq.read_table(path)
    elif path.is_dir():
        from datasets import load_from_disk

        table = load_from_disk(str(path)).data.table
    else:
        raise ExportError(f"{path}: not a run directory, .parquet file or saved dataset")
    missing = [name for name in [*_FIXED, *_TAIL] if name not in table.column_names]
    if missing:
        raise ExportError(f"{path}: not a flowforge triplet dataset (no {', '.join(missing)})")
    names = [n for n in table.column_names if _is_score(n)]
    return [_triplet(row, names) for row in table.to_pylist()]


def _triplet(row: Mapping[str, Any], score_columns: list[str]) -> Triplet:
    scores = {
        name.removeprefix(SCORE_PREFIX): float(row[name])
        for name in score_columns
        if row[name] is not None
    }
    return Triplet(
        prompt_id=row["prompt_id"],
        prompt=row["prompt"],
        negative=row["negative"],
        workflow_hash=row["workflow_hash"],
        workflow_text=row["workflow_text"],
        workflow_api=row["workflow_api"],
        seed=int(row["seed"]),
        judge_id=row["judge_id"],
        scores=None if row["error"] is not None else scores,
        error=row["error"],
    )


def _is_score(column: str) -> bool:
    return column.startswith(SCORE_PREFIX)
