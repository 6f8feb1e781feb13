"""Collection through the ComfyUI judge: two real (fake-rendering) servers, one dies mid-run.

flowforge's own `collect` drives `--judge flowforge.judge.comfyui:make_comfyui_judge` (the
door ``--judge comfyui`` opens) with every scorer kind on tiny random models, so the whole
real path runs: plan, HTTP, websocket, PNG, scorers, journal.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_comfyui import FakeServer
from tiny_scorers import write_scorers_file

from flowforge.data.collect import CollectConfig, collect
from flowforge.data.journal import open_journal
from flowforge.judge.comfyui.factory import comfyui_judge_id
from flowforge.judge.loader import load_judge

SAMPLE = Path(__file__).parent / "data" / "library_sample"
SPEC = "flowforge.judge.comfyui:make_comfyui_judge"
FAST = {"request_timeout": "2", "poll_seconds": "0.05", "backoff_seconds": "0.05",
        "down_seconds": "30", "render_timeout": "20", "max_in_flight": "2"}  # fmt: skip
PROMPTS = ["a lighthouse at dusk", "a red fox in snow", "a bowl of ramen", "a cyberpunk alley"]


@pytest.fixture(scope="module")
def scorers_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scorers_file(tmp_path_factory.mktemp("scorers"))


def run(
    out: Path, prompts: Path, options: dict[str, str]
) -> dict[tuple[str, str, int], dict[str, float]]:
    """Collect 24 items into `out`; the results by (prompt id, workflow, seed)."""
    config = CollectConfig(out=out, judge=SPEC, judge_opt=tuple(sorted(options.items())),
                           prompts=str(prompts), library=SAMPLE, pairs=12, seeds=2,
                           batch_size=8, backoff_seconds=0.1)  # fmt: skip
    summary = collect(config, load_judge(SPEC, options), sleep=lambda s: None)
    assert summary.total == 24 and summary.scored == 24, summary
    with open_journal(out) as journal:
        rows = list(journal.rows())
    assert len(rows) == 24 and all(r.error is None and r.attempts == 1 for r in rows)
    return {(r.item.prompt_id, r.item.workflow_hash, r.item.seed): r.scores or {} for r in rows}


def assert_same_scores(
    a: dict[tuple[str, str, int], dict[str, float]], b: dict[tuple[str, str, int], dict[str, float]]
) -> None:
    """Equal up to float noise (scores batched differently differ in the last bits)."""
    assert a.keys() == b.keys()
    for key, scores in a.items():
        assert scores == pytest.approx(b[key], rel=1e-5, abs=1e-5), key


def test_collection_over_two_servers_one_killed_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, scorers_file: Path
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    steady = FakeServer(tmp_path / "steady")
    dying = FakeServer(tmp_path / "dying", "--die-after", "4")  # dies holding its 4th prompt
    try:
        options = {
            **FAST,
            "servers": f"{dying.url},{steady.url}",
            "scorers_file": str(scorers_file),
            "image_dir": str(tmp_path / "images"),
        }
        results = run(tmp_path / "run", prompts, options)
        assert dying.process.wait(timeout=5) == 1  # it did die, mid-run
        # Every item was rendered once on the survivor, or on the dying server before it
        # died; one image per item, whichever server made it.
        assert len(list((tmp_path / "images").glob("*.png"))) == 24
        # The same plan judged on the steady server alone gives the same scores: items moved
        # off the dead server were judged exactly as they would have been.
        alone = {**options, "servers": steady.url, "image_dir": str(tmp_path / "images2")}
        assert_same_scores(run(tmp_path / "alone", prompts, alone), results)
    finally:
        steady.kill()
        dying.kill()


def test_judge_id_ignores_servers_and_executor_but_not_scorers(scorers_file: Path) -> None:
    base = {"servers": "http://a:1", "scorers_file": str(scorers_file)}
    same = {"servers": "http://b:2,http://c:3", "executor": "ray", "max_in_flight": "4"}
    assert comfyui_judge_id(base) == comfyui_judge_id({**base, **same})
    other = json.loads(scorers_file.read_text())
    other["scorers"][0]["mean"] = 0.2
    changed = scorers_file.with_name("other.json")
    changed.write_text(json.dumps(other))
    assert comfyui_judge_id(base) != comfyui_judge_id({**base, "scorers_file": str(changed)})
