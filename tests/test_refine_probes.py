"""Library probes of the refine rounds (`pipeline.probes`): which pairs, and how judged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from collect_inputs import config_for, judge_for, write_prompts
from fake_judge import expected_scores

import flowforge.pipeline.refine as refine_module
from flowforge.data.collect import collect
from flowforge.data.export import run_table
from flowforge.pipeline.config import RefineStageConfig, RunConfigError
from flowforge.pipeline.draws import RoundTools, train_prompts
from flowforge.pipeline.probes import Probe, probe_pairs
from flowforge.pipeline.refine import judge_probes
from flowforge.workflow.schema import load_catalog


def test_probes_are_each_prompts_best_unjudged_texts_in_reward_order() -> None:
    prompts = [("p1", "a cat"), ("p2", "a dog")]
    texts = ["A", "B", "C", "D"]
    rewards = np.array([[0.1, 0.9, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0]])
    judged = {("p1", "B"), ("p2", "A"), ("p1", "A")}
    found = probe_pairs(prompts, texts, rewards, judged, 2)
    # p1: B is judged, D ties it and is next; then C. p2: A is judged: B, C.
    assert found == [
        Probe("p1", "a cat", "D"),
        Probe("p1", "a cat", "C"),
        Probe("p2", "a dog", "B"),
        Probe("p2", "a dog", "C"),
    ]
    # fewer than asked when fewer are left; none asked, none given
    assert [p.text for p in probe_pairs(prompts[:1], texts, rewards[:1], judged, 9)] == [
        "D",
        "C",
    ]
    assert probe_pairs(prompts, texts, rewards, judged, 0) == []
    assert Probe("p", "x", "A").design_hash == hashlib.sha256(b"A").hexdigest()[:32]


def test_probe_pairs_refuse_a_table_of_another_shape() -> None:
    with pytest.raises(ValueError, match=r"expected \(1, 2\)"):
        probe_pairs([("p", "x")], ["A", "B"], np.zeros((2, 2)), set(), 1)
    with pytest.raises(ValueError, match="per_prompt"):
        probe_pairs([("p", "x")], ["A", "B"], np.zeros((1, 2)), set(), -1)


def test_refine_config_refuses_negative_probes() -> None:
    with pytest.raises(RunConfigError, match="probes must be >= 0"):
        RefineStageConfig(probes=-1)


@pytest.fixture
def collected(tmp_path: Path) -> tuple[Any, Any]:
    """A small collection (fake judge): its table and the judge."""
    config = config_for(tmp_path, write_prompts(tmp_path), negative="ugly")
    judge = judge_for(config)
    collect(config, judge)
    table, _ = run_table(config.out)
    return table, judge


def test_judge_probes_judges_the_ensembles_best_unjudged_pairs(
    collected: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, judge = collected
    library = sorted(set(data.column("workflow_text").to_pylist()))
    prompts = sorted(train_prompts(data).items())
    # The ensemble's table: a made-up preference that differs per prompt (the one part of the
    # round not run for real here; `ensemble_rewards` is `predict_table` of the round's reward).
    rng = np.random.default_rng(7)
    table = rng.normal(size=(len(prompts), len(library)))
    asked: list[Any] = []

    def fake_table(
        reward_dir: Path, catalog: Any, workflows: list[str], texts: list[str], progress: bool
    ) -> Any:
        asked.append((reward_dir, texts, workflows))
        return table

    monkeypatch.setattr(refine_module, "ensemble_rewards", fake_table)
    config = RefineStageConfig(probes=2, seeds=2, seed=3)
    tools = RoundTools(judge, load_catalog(), "ugly", 256, say=lambda line: None)
    judged = judge_probes(Path("r"), library, data, config, tools, round_number=2)

    assert asked == [(Path("r"), [p for _, p in prompts], library)]
    ids, texts = data.column("prompt_id").to_pylist(), data.column("workflow_text").to_pylist()
    before = set(zip(ids, texts, strict=True))
    expected = probe_pairs(prompts, library, table, before, 2)
    rows = judged.to_pylist()
    assert len(rows) == 2 * len(expected) == 2 * 2 * len(prompts)
    assert [(r["prompt_id"], r["workflow_text"]) for r in rows] == [
        (p.prompt_id, p.text) for p in expected for _ in range(2)
    ]
    assert not {(r["prompt_id"], r["workflow_text"]) for r in rows} & before
    assert judged.schema == data.schema
    first = max(data.column("item").to_pylist()) + 1
    assert [r["item"] for r in rows] == list(range(first, first + len(rows)))
    for row in rows:  # judged as the collection judges: the filled request, the judge's scores
        api = json.loads(row["workflow_api"])
        scores = expected_scores(row["prompt"], api, row["seed"])
        assert row["score_quality"] == scores["quality"] and row["error"] is None
        assert (
            row["workflow_hash"] == hashlib.sha256(row["workflow_text"].encode()).hexdigest()[:32]
        )
    # the render seeds follow the round's seed, and not the designs' stream
    again = judge_probes(Path("r"), library, data, config, tools, round_number=2)
    assert again.column("seed").to_pylist() == judged.column("seed").to_pylist()
    other = judge_probes(Path("r"), library, data, config, tools, round_number=3)
    assert other.column("seed").to_pylist() != judged.column("seed").to_pylist()
