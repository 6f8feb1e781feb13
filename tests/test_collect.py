"""Collection: the stored plan, judging with retries, resuming, and surviving SIGKILL.

Every test judges with `fake_judge` (tests/fake_judge.py), loaded through the
``module:factory`` door like any outside judge, so nothing here depends on the simulator.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from collect_inputs import FAKE, PROMPTS, config_for, judge_for, write_prompts
from fake_judge import expected_scores

from flowforge.data.collect import (
    CollectConfig,
    CollectError,
    JudgeContractError,
    collect,
    judge_catalog,
    load_library,
    load_prompt_set,
    plan_collection,
)
from flowforge.data.journal import JOURNAL_FILE, JournalError, JournalRow, open_journal, writer_lock
from flowforge.data.plan import PlanError, RequestTemplate, fill_workflow
from flowforge.judge import JudgeResult
from flowforge.judge.loader import LoadedJudge, load_judge
from flowforge.workflow.api import from_api, to_api
from flowforge.workflow.library import load_seed_library

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    return write_prompts(tmp_path)


def journal_rows(run: Path) -> list[JournalRow]:
    with open_journal(run) as journal:
        return list(journal.rows())


def judged_workflow(row: JournalRow, negative: str = "") -> dict[str, object]:
    return fill_workflow(row.workflow.text, row.item.prompt, negative, row.item.seed)


def plan_of(config: CollectConfig) -> list[tuple[object, ...]]:
    judge = judge_for(config)
    catalog = judge_catalog(judge.judge, judge.judge_id)
    plan = plan_collection(
        config,
        load_prompt_set(config.prompts),
        load_library(config, catalog),
        judge_id=judge.judge_id,
        catalog=catalog,
    )
    return [(i.item, *i.key(), i.prompt) for i in plan.items]


# --- the plan ---------------------------------------------------------------------------


def test_grid_plan_has_every_prompt_workflow_and_seed_once(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(tmp_path, prompts_file, pairs=None, grid=True, seeds=3, library_size=5)
    items = plan_of(config)
    assert len(items) == len(PROMPTS) * 5 * 3
    assert len({item[1:5] for item in items}) == len(items)
    assert [item[0] for item in items] == list(range(len(items)))


def test_subset_plan_spreads_pairs_evenly_and_depends_only_on_the_seed(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(tmp_path, prompts_file, pairs=25, seeds=2)
    items = plan_of(config)
    assert len(items) == 25 * 2
    per_prompt = Counter(prompt for prompt, _ in {(item[1], item[2]) for item in items})
    assert sorted(per_prompt.values()) == [2] * 5 + [3] * 5  # 25 pairs over 10 prompts
    for prompt_id in per_prompt:  # a prompt's seeds are shared by all its workflows
        assert len({item[3] for item in items if item[1] == prompt_id}) == 2
    assert plan_of(config) == items
    assert plan_of(config_for(tmp_path, prompts_file, pairs=25, seeds=2, seed=1)) != items


def test_a_library_sample_grid_judges_those_workflows_on_every_prompt(
    tmp_path: Path, prompts_file: Path
) -> None:
    # ComfyGen's data shape: a few workflows, each on every prompt with the prompt's seeds
    config = config_for(tmp_path, prompts_file, pairs=None, grid=True, library_sample=4)
    items = plan_of(config)
    assert len(items) == len(PROMPTS) * 4 * 2
    workflows = {item[2] for item in items}
    assert len(workflows) == 4
    for workflow in workflows:
        assert len({item[1] for item in items if item[2] == workflow}) == len(PROMPTS)
    assert plan_of(config) == items  # the sample is the plan's seed's
    other = {item[2] for item in plan_of(replace(config, seed=3))}
    assert other != workflows and len(other) == 4
    everything = {item[2] for item in plan_of(replace(config, library_sample=None))}
    assert workflows < everything and len(everything) == 12


def test_a_library_sample_larger_than_the_library_is_refused(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(tmp_path, prompts_file, pairs=None, grid=True, library_sample=13)
    with pytest.raises(PlanError, match=r"--library-sample 13: the library has 12 distinct"):
        plan_of(config)


def test_plan_refuses_more_pairs_than_there_are(tmp_path: Path, prompts_file: Path) -> None:
    config = config_for(tmp_path, prompts_file, pairs=10 * 12 + 1)
    with pytest.raises(PlanError, match=r"--pairs 121 is more than the 10 x 12 = 120"):
        plan_of(config)


def test_workflows_differing_only_in_request_values_are_one_design(
    tmp_path: Path, prompts_file: Path
) -> None:
    seeds = load_seed_library()
    other = to_api(seeds["sd15_base"])
    for node in other.values():
        if node["class_type"] == "KSampler":
            node["inputs"]["seed"] = node["inputs"]["seed"] + 1000  # another hash, same text
    judge = load_judge(FAKE)
    catalog = judge_catalog(judge.judge, judge.judge_id)
    library = {"a": seeds["sd15_base"], "b": from_api(other), "c": seeds["sdxl_base"]}
    config = config_for(tmp_path, prompts_file, pairs=None, grid=True, seeds=1)
    plan = plan_collection(
        config, load_prompt_set(str(prompts_file)), library, judge_id="j", catalog=catalog
    )
    assert plan.duplicates == 1
    assert len(plan.workflows) == 2
    assert len(plan.items) == len(PROMPTS) * 2


def test_a_workflow_without_a_prompt_input_is_refused_by_name(
    tmp_path: Path, prompts_file: Path
) -> None:
    workflow = to_api(load_seed_library()["sd15_base"])
    for node in workflow.values():
        if node["class_type"] == "CLIPTextEncode":
            node["inputs"]["text"] = ["1", 0]  # not a literal text any more
    judge = load_judge(FAKE)
    catalog = judge_catalog(judge.judge, judge.judge_id)
    config = config_for(tmp_path, prompts_file)
    with pytest.raises(PlanError, match="library workflow odd has no prompt text input"):
        plan_collection(
            config, load_prompt_set(str(prompts_file)), {"odd": from_api(workflow)},
            judge_id="j", catalog=catalog,
        )  # fmt: skip


def test_request_template_equals_filling_the_text_form() -> None:
    judge = load_judge(FAKE)
    catalog = judge_catalog(judge.judge, judge.judge_id)
    from flowforge.workflow.textform import to_text

    for workflow in load_seed_library().values():
        text, _ = to_text(workflow, catalog)
        for negative in ("", "blurry, lowres", 'a "quoted" \\ one'):
            template = RequestTemplate(text, negative)
            for prompt in [*PROMPTS, "10000000000000000000000000000000000000271828", "é$$"]:
                for seed in (0, 7, 2**31 - 1):
                    assert template.fill(prompt, seed) == fill_workflow(
                        text, prompt, negative, seed
                    )


# --- judging ----------------------------------------------------------------------------


def test_collect_scores_every_item_with_the_request_written_in(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(tmp_path, prompts_file, negative="lowres")
    progress: list[tuple[int, int]] = []
    summary = collect(config, judge_for(config), lambda done, total: progress.append((done, total)))
    assert (summary.total, summary.judged, summary.scored, summary.skipped_done) == (60, 60, 60, 0)
    assert summary.created and summary.errors_by_kind == {}
    assert progress[0] == (0, 60) and progress[-1] == (60, 60)
    rows = journal_rows(config.out)
    assert len(rows) == 60
    for row in rows:
        workflow = judged_workflow(row, "lowres")
        texts = [str(n["inputs"].get("text")) for n in workflow.values()]  # type: ignore[index]
        assert row.item.prompt in texts  # the negative may carry the design's embeddings:
        assert any(text.startswith("lowres") for text in texts)
        assert row.scores == expected_scores(row.item.prompt, workflow, row.item.seed)
        assert row.attempts == 1
    saved = json.loads((config.out / "config.json").read_text(encoding="utf-8"))
    assert CollectConfig.from_json(saved) == config


def test_transient_results_are_retried_with_backoff_until_scored(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(
        tmp_path, prompts_file, judge_opt={"transient": "2"}, batch_size=100, backoff_seconds=0.5
    )
    sleeps: list[float] = []
    summary = collect(config, judge_for(config), sleep=sleeps.append)
    assert sleeps == [0.5, 1.0]
    assert summary.scored == 60 and summary.retried == 60
    assert {row.attempts for row in journal_rows(config.out)} == {3}


def test_exceptions_from_score_are_retried_as_transient(tmp_path: Path, prompts_file: Path) -> None:
    config = config_for(tmp_path, prompts_file, judge_opt={"raises": "2"}, batch_size=100)
    summary = collect(config, judge_for(config))
    assert summary.scored == 60 and summary.errors_by_kind == {}


def test_transient_errors_past_max_attempts_are_recorded_and_retried_on_request(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(tmp_path, prompts_file, judge_opt={"raises": "999"}, max_attempts=3)
    summary = collect(config, judge_for(config))
    assert summary.errors_by_kind == {"transient": 60}
    rows = journal_rows(config.out)
    last_calls = range(3, 25, 3)  # 8 batches of 3 calls each; the last call's error is kept
    assert {row.error for row in rows} == {
        f"transient: ConnectionError: server unreachable (call {n})" for n in last_calls
    }
    assert {row.attempts for row in rows} == {3}
    assert collect(config, judge_for(config)).judged == 0  # errors are final by default
    retry = CollectConfig.from_json({**config.to_json(), "retry_transient": True})
    recovered = LoadedJudge(judge_for(config).judge_id, load_judge(FAKE).judge)  # server back
    summary = collect(retry, recovered)
    assert summary.judged == 60 and summary.scored == 60
    rows = journal_rows(config.out)
    assert len(rows) == 60 and all(row.scores for row in rows)
    assert {row.attempts for row in rows} == {4}


def test_permanent_errors_are_recorded_once_without_retry(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(tmp_path, prompts_file, judge_opt={"broken": "broken"})
    summary = collect(config, judge_for(config))
    broken = [row for row in journal_rows(config.out) if "broken" in row.item.prompt]
    assert summary.errors_by_kind == {"invalid": len(broken)} and len(broken) == 6
    assert all(row.attempts == 1 and row.scores is None for row in broken)
    assert all(row.error == "invalid: prompt contains 'broken'" for row in broken)
    resumed = collect(config, judge_for(config))
    assert resumed.errors_by_kind == {} and resumed.run_errors_by_kind == {"invalid": 6}


def test_resuming_with_other_settings_names_each_difference(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(tmp_path, prompts_file)
    collect(config, judge_for(config))
    changed = config_for(tmp_path, prompts_file, pairs=31, negative="x")
    with pytest.raises(CollectError, match=r"--pairs was 30, now 31; --negative was '', now 'x'"):
        collect(changed, judge_for(changed))
    other_judge = config_for(tmp_path, prompts_file, judge_opt={"delay": "0"})
    with pytest.raises(CollectError, match=r"the judge was fake_judge:make_judge, now fake_"):
        collect(other_judge, judge_for(other_judge))
    operational = config_for(tmp_path, prompts_file, batch_size=3, max_attempts=1)
    assert collect(operational, judge_for(operational)).skipped_done == 60


def test_a_run_moved_with_its_inputs_resumes_at_its_new_place(tmp_path: Path) -> None:
    """A collection copied elsewhere with the run directory around it (its prompt file
    inside) is the same run there, not one with other settings."""
    old, new = tmp_path / "a" / "run", tmp_path / "b" / "copy"
    old.mkdir(parents=True)
    config = config_for(old, write_prompts(old), out=old / "collect")
    collect(config, judge_for(config))
    new.parent.mkdir()
    old.rename(new)
    moved = config_for(new, new / "prompts.txt", out=new / "collect")
    assert collect(moved, judge_for(moved)).skipped_done == 60


def test_a_judge_breaking_the_contract_stops_the_run(tmp_path: Path, prompts_file: Path) -> None:
    class ShortJudge:
        def object_info(self) -> dict[str, object]:
            return load_judge(FAKE).judge.object_info()

        def score(self, items: object) -> list[JudgeResult]:
            return [JudgeResult({"q": 1.0})]

    config = config_for(tmp_path, prompts_file)
    with pytest.raises(JudgeContractError, match="returned 1 results for 8 items"):
        collect(config, LoadedJudge("short", ShortJudge()))


def test_a_second_collector_on_the_same_run_is_refused(tmp_path: Path, prompts_file: Path) -> None:
    config = config_for(tmp_path, prompts_file)
    with writer_lock(config.out), pytest.raises(JournalError, match="being collected by process"):
        collect(config, judge_for(config))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"grid": True}, r"give exactly one of --grid .* or --pairs N"),
        ({"pairs": None}, r"give exactly one of --grid"),
        ({"seeds": 0}, r"--seeds must be at least 1, not 0"),
        ({"batch_size": 0}, r"--batch-size must be at least 1"),
        ({"library_sample": 0}, r"--library-sample must be at least 1"),
        ({"backoff_seconds": 61.0}, r"--backoff-seconds must be in \[0, 60\]"),
        ({"judge_opt": (("a", "1"), ("a", "2"))}, r"a --judge-opt key is given twice"),
    ],
)
def test_impossible_settings_say_what_to_change(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {"out": tmp_path, "pairs": 5, **changes}
    with pytest.raises(CollectError, match=message):
        CollectConfig(**values)  # type: ignore[arg-type]


def test_a_start_killed_before_the_plan_committed_is_started_afresh(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(tmp_path, prompts_file)
    open_journal(config.out, create=True).close()  # the file exists, its tables never did
    summary = collect(config, judge_for(config))
    assert summary.created and summary.judged == 60


# --- SIGKILL and resume -----------------------------------------------------------------


def _results_so_far(journal: Path) -> int:
    if not journal.exists():
        return 0
    with sqlite3.connect(journal, timeout=5) as db:
        try:
            return int(db.execute("SELECT count(*) FROM results").fetchone()[0])
        except sqlite3.OperationalError:  # the plan's transaction has not committed yet
            return 0


def test_sigkill_at_random_moments_then_resume_finishes_the_plan_exactly(
    tmp_path: Path, prompts_file: Path
) -> None:
    config = config_for(
        tmp_path,
        prompts_file,
        judge_opt={"delay": "0.02", "broken": "broken", "transient": "1"},
        pairs=60,
        seeds=3,
        batch_size=4,
    )
    total = 180
    # Exactly what a user runs, again and again after each kill: the `flowforge collect` CLI.
    command = [
        sys.executable, "-m", "flowforge", "collect", "--out", str(config.out),
        "--judge", config.judge, "--prompts", config.prompts,
        "--library-size", str(config.library_size), "--pairs", str(config.pairs),
        "--seeds", str(config.seeds), "--batch-size", str(config.batch_size),
        "--backoff-seconds", str(config.backoff_seconds),
    ]  # fmt: skip
    for key, value in config.judge_opt:
        command += ["--judge-opt", f"{key}={value}"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    journal = config.out / JOURNAL_FILE
    rng = random.Random(20240531)
    counts_at_kills = []
    for kill in range(6):
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        before = _results_so_far(journal)
        if kill == 0:  # around the transaction that creates the journal and stores the plan
            while not journal.exists() and process.poll() is None:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.01))
        elif kill == 1:  # a random moment of start-up (imports, planning) or just after
            time.sleep(rng.uniform(0.0, 0.4))
        else:  # a random moment while judging: after some more results have been written
            target = rng.randint(before + 1, total - 10)
            deadline = time.monotonic() + 30
            while _results_so_far(journal) < target and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.02))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, process.stderr.read()  # type: ignore[union-attr]
        counts_at_kills.append(_results_so_far(journal))
    assert sum(0 < count < total for count in counts_at_kills) >= 4, counts_at_kills
    print("results at each kill:", counts_at_kills)
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    summary = re.search(r"judged ([\d,]+) .* of ([\d,]+), ([\d,]+) already done", finished.stdout)
    assert summary is not None, finished.stdout
    judged, planned, done = (int(group.replace(",", "")) for group in summary.groups())
    assert planned == total and judged + done == total

    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        plan = db.execute(
            "SELECT item, prompt_id, workflow_hash, seed, judge_id, prompt FROM plan ORDER BY item"
        ).fetchall()
        keys = db.execute("SELECT prompt_id, workflow_hash, seed, judge_id FROM results")
        assert Counter(keys.fetchall()).most_common(1)[0][1] == 1  # nothing duplicated
    assert [tuple(row) for row in plan] == plan_of(config)  # the stored plan is the planned one
    rows = journal_rows(config.out)
    assert len(rows) == total  # nothing lost
    for row in rows:  # no partial row: every stored result is the judge's whole answer
        if "broken" in row.item.prompt:
            assert (row.scores, row.attempts) == (None, 1)
        else:
            expected = expected_scores(row.item.prompt, judged_workflow(row), row.item.seed)
            assert row.scores == expected and row.error is None
