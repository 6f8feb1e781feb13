"""Exporting a run to Parquet and to a Hugging Face dataset, and reading triplets back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from collect_inputs import config_for, judge_for, write_prompts
from fake_judge import FakeJudge, expected_scores

from flowforge.data.collect import collect
from flowforge.data.export import ExportError, export_run, load_triplets
from flowforge.judge import JudgeItem, JudgeResult
from flowforge.judge.loader import LoadedJudge

COLUMNS = [
    "item",
    "prompt_id",
    "prompt",
    "negative",
    "workflow_hash",
    "workflow_api",
    "workflow_text",
    "seed",
    "judge_id",
    "score_quality",
    "score_alignment",
    "error",
    "attempts",
    "judged_at",
]


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    return write_prompts(tmp_path)


@pytest.fixture
def finished_run(tmp_path: Path, prompts_file: Path) -> Path:
    config = config_for(tmp_path, prompts_file, judge_opt={"broken": "broken"}, negative="ugly")
    collect(config, judge_for(config))
    return config.out


@pytest.mark.parametrize("name", ["triplets.parquet", "triplets_hf"])
def test_export_round_trips_every_row_and_column(
    finished_run: Path, tmp_path: Path, name: str
) -> None:
    result = export_run(finished_run, tmp_path / name)
    assert result.format == ("parquet" if name.endswith(".parquet") else "hf")
    assert (result.rows, result.pending) == (60, 0)
    assert set(result.score_names) == {"quality", "alignment"}
    triplets = load_triplets(tmp_path / name)
    assert triplets == load_triplets(finished_run)
    assert len(triplets) == 60
    errors = [t for t in triplets if t.error is not None]
    assert len(errors) == 6 and all(t.scores is None for t in errors)
    for triplet in triplets:
        assert triplet.negative == "ugly"
        if triplet.error is None:  # the exported API JSON is exactly what was judged
            workflow = json.loads(triplet.workflow_api)
            assert triplet.scores == expected_scores(triplet.prompt, workflow, triplet.seed)
            assert "$PROMPT" in triplet.workflow_text


def test_parquet_columns_are_the_documented_ones(finished_run: Path, tmp_path: Path) -> None:
    export_run(finished_run, tmp_path / "t.parquet")
    table = pq.read_table(tmp_path / "t.parquet")
    assert sorted(table.column_names) == sorted(COLUMNS)
    assert table.column_names[-3:] == ["error", "attempts", "judged_at"]
    rows = table.to_pylist()
    assert [row["item"] for row in rows] == sorted(row["item"] for row in rows)
    broken = [row for row in rows if "broken" in row["prompt"]]
    assert all(row["score_quality"] is None and row["error"] for row in broken)


class _Stop(BaseException):
    """Ends a collection abruptly, as Ctrl-C would."""


class _StoppingJudge(FakeJudge):
    def score(self, items: Any) -> list[JudgeResult]:
        if self.calls == 3:
            raise _Stop
        results: list[JudgeResult] = super().score(items)
        return results


def test_an_unfinished_run_exports_what_is_judged_and_counts_the_rest(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(tmp_path, prompts_file)
    judge = LoadedJudge(judge_for(config).judge_id, _StoppingJudge(0, 0, 0.0, ""))
    with pytest.raises(_Stop):
        collect(config, judge)
    result = export_run(config.out, tmp_path / "part.parquet")
    assert (result.rows, result.pending) == (24, 36)  # three batches of 8 were recorded


def test_export_refuses_to_overwrite_and_unknown_suffixes(
    finished_run: Path, tmp_path: Path
) -> None:
    export_run(finished_run, tmp_path / "t.parquet")
    with pytest.raises(ExportError, match="already exists; remove it or pass --overwrite"):
        export_run(finished_run, tmp_path / "t.parquet")
    assert export_run(finished_run, tmp_path / "t.parquet", overwrite=True).rows == 60
    with pytest.raises(ExportError, match=r"cannot tell the format from '\.csv'"):
        export_run(finished_run, tmp_path / "t.csv")
    with pytest.raises(ExportError, match=r"not a run directory, \.parquet file or saved dataset"):
        load_triplets(tmp_path / "missing.parquet")


def test_judge_items_are_independent_dicts(tmp_path: Path, prompts_file: Path) -> None:
    """A judge may keep or edit the workflows it is given without touching other items."""
    seen: list[JudgeItem] = []

    class Keeping(FakeJudge):
        def score(self, items: Any) -> list[JudgeResult]:
            seen.extend(items)
            for item in items:
                item.workflow["mutated"] = True
            return [JudgeResult({"q": 1.0}) for _ in items]

    config = config_for(tmp_path, prompts_file)
    collect(config, LoadedJudge("keeping", Keeping(0, 0, 0.0, "")))
    assert len({id(item.workflow) for item in seen}) == 60
