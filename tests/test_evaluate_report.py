"""The evaluation's numbers on hand-made outcomes, and a whole evaluation on tiny inputs:
a fake judge, a 40-workflow library, untrained tiny policies, a two-member ensemble."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
from collect_inputs import FAKE
from policy_helpers import TINY, tiny_tokenizer
from reward_helpers import FakeEncoder

from flowforge.data.collect import CollectConfig, collect
from flowforge.data.plan import RequestTemplate
from flowforge.data.prompts import load_prompts
from flowforge.evaluate.compare import evaluate, heldout_prompts
from flowforge.evaluate.config import EvalConfig, EvalError, EvalInputs
from flowforge.evaluate.designers import derive_seed
from flowforge.evaluate.judging import CheckedDesign, JudgeSession, check_design, judged_requests
from flowforge.evaluate.metrics import paired_difference, wilson_interval
from flowforge.evaluate.report import DESIGNS, REPORT_JSON, REPORT_MD, intervals
from flowforge.evaluate.summary import (
    LibraryIndex,
    MethodRun,
    Outcome,
    per_prompt,
    summarize,
    win_rates,
)
from flowforge.judge.base import JudgeItem, JudgeResult
from flowforge.judge.loader import LoadedJudge, load_judge
from flowforge.pipeline import layout
from flowforge.policy.model import build_tiny_model, save_policy
from flowforge.reward.config import RewardConfig
from flowforge.reward.train import train_ensemble
from flowforge.workflow.library import build_library, load_seed_library, save_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import to_text

CATALOG = default_catalog()
SEEDS = load_seed_library()


def design(name: str) -> CheckedDesign:
    return check_design(to_text(SEEDS[name], CATALOG)[0], CATALOG)


def outcome(
    name: str, held: float | None, train: float = 0.0, pred: float | None = None
) -> Outcome:
    d = design(name)
    if held is None:
        bad = CheckedDesign("garbage", None, None, "invalid: line 1: nonsense")
        return Outcome("p", bad, (), bad.error)
    return Outcome("p", d, ({"h": held, "t": train},), None, None, pred)


def run(name: str, outcomes: list[Outcome]) -> MethodRun:
    return MethodRun(name, name, tuple(outcomes), len(outcomes), 0, 0.0)


def test_failures_take_the_worst_score_seen_and_lose_every_comparison() -> None:
    a = run("a", [outcome("sdxl_base", 0.5), outcome("sdxl_base", None)])
    b = run("b", [outcome("sdxl_base", 0.2), outcome("sdxl_base", 0.1)])
    c = run("c", [outcome("sdxl_base", None), outcome("sdxl_base", None)])
    held = per_prompt([a, b, c], lambda s: s["h"])
    assert held.floor() == 0.1
    assert held.filled("a") == [0.5, 0.1]
    rates = win_rates(held, ["a", "b", "c"], ["b", "c"])
    # a wins prompt 1 against both; on prompt 2 its failure loses to b and ties with c
    assert rates["a"] == {"b": 0.5, "c": 0.75}
    assert rates["c"]["c"] == 0.5  # a failure ties with a failure


def test_intervals_treat_failures_as_the_win_rates_and_the_means_do() -> None:
    """A failure loses its prompt in the win interval and sits at the floor in the mean
    difference, the conventions of `win_rates` and the means; no method against itself."""
    a = run("a", [outcome("sdxl_base", v) for v in (0.5, 0.6, 0.7)] + [outcome("sdxl_base", None)])
    b = run("b", [outcome("sdxl_base", v) for v in (0.2, 0.6, 0.9, 0.1)])
    held = per_prompt([a, b], lambda s: s["h"])
    found = intervals(held, ["a", "b"], ["b"], 0.95)
    assert set(found) == {"a", "b"} and found["b"] == {}
    one = found["a"]["b"]
    assert one["win"] == list(wilson_interval(1.5, 4))  # wins, a tie, a loss, a failure
    mean, low, high = paired_difference([0.5, 0.6, 0.7, 0.1], [0.2, 0.6, 0.9, 0.1])
    assert one["difference"] == pytest.approx(mean) and mean == pytest.approx(0.1 / 4)
    assert one["difference_interval"] == pytest.approx([low, high]) and low < 0 < high


def test_summary_counts_validity_novelty_gap_and_errors() -> None:
    texts = [to_text(SEEDS[n], CATALOG)[0] for n in ("sdxl_base", "sd15_base")]
    index = LibraryIndex(texts, [check_design(t, CATALOG).key or "" for t in texts])
    outcomes = [
        outcome("sdxl_base", 0.4, train=1.0, pred=1.5),
        outcome("sdxl_turbo", 0.6, train=2.0, pred=1.0),  # not in the library
        outcome("sdxl_turbo", None),
    ]
    method = run("m", outcomes)
    held = per_prompt([method], lambda s: s["h"])
    train = per_prompt([method], lambda s: s["t"])
    s = summarize(method, held, train, None, index, lambda s: s["t"])
    assert s.heldout == pytest.approx((0.4 + 0.6 + 0.4) / 3)
    assert s.valid == pytest.approx(2 / 3) and s.failed == 1
    assert s.errors == {"invalid": 1}
    assert s.distinct == 2 and s.not_in_library == 0.5
    assert s.gap == pytest.approx(((1.5 - 1.0) + (1.0 - 2.0)) / 2)
    assert s.nn_similarity is not None and 0.5 < s.nn_similarity < 1.0
    assert index.similarity(design("sdxl_base")) == 1.0
    assert s.quality is None


def test_library_index_agrees_with_the_plain_nearest_similarity() -> None:
    from flowforge.evaluate.metrics import nearest_similarity

    library = [to_text(SEEDS[n], CATALOG)[0] for n in ("sdxl_base", "sd15_base", "sd15_freeu")]
    index = LibraryIndex(library, [check_design(t, CATALOG).key or "" for t in library])
    for name in ("sdxl_turbo", "sdxl_lora_stack", "sd15_hires_latent"):
        d = design(name)
        assert d.canonical is not None
        assert index.similarity(d) == pytest.approx(nearest_similarity([d.canonical], library))


def test_heldout_prompts_are_a_fixed_sample_of_the_heldout_split() -> None:
    first = heldout_prompts(10)
    assert [p.id for p in first] == [p.id for p in heldout_prompts(10)]
    train = {p.id for p in load_prompts("train")}
    assert not train & {p.id for p in heldout_prompts(None)}
    assert {p.source for p in heldout_prompts(40)} == {"parti", "geneval"}


# A GRPO design (sim world 0, session 30): node 2's text "$NEGATIVE, embedding:negativeXL_D"
# conditions the first pass's negative and the hires pass's positive, so the canonical form
# reads it as a second prompt ($PROMPT, the real prompt $PROMPT_2): filled from a request,
# the canonical text gives both passes the user's prompt, which this design never does.
SWAPPED = "\n".join(
    [
        "1 CheckpointLoaderSimple ckpt_name=albedobaseXL_v13.safetensors",
        '2 CLIPTextEncode clip=@1.1 text="$NEGATIVE, embedding:negativeXL_D"',
        "3 CLIPTextEncode clip=@1.1 text=$PROMPT",
        "4 EmptyLatentImage batch_size=1 height=1024 width=1024",
        "5 KSampler cfg=7.5 denoise=1.0 latent_image=@4.0 model=@1.0 negative=@2.0 "
        "positive=@3.0 sampler_name=euler scheduler=normal seed=$SEED steps=30",
        "6 LatentUpscaleBy samples=@5.0 scale_by=1.5 upscale_method=nearest-exact",
        "7 KSampler cfg=7.5 denoise=0.5 latent_image=@6.0 model=@1.0 negative=@3.0 "
        "positive=@2.0 sampler_name=euler scheduler=normal seed=$SEED steps=20",
        "8 VAEDecode samples=@7.0 vae=@1.2",
        "9 SaveImage filename_prefix=flowforge images=@8.0",
    ]
)
FIXED_TEXT = to_text(SEEDS["sdxl_base"], CATALOG)[0]


class Recording:
    """A judge that records the items it is sent (and scores them all 0.5)."""

    def __init__(self) -> None:
        self.seen: list[JudgeItem] = []

    def object_info(self) -> dict[str, object]:
        return {}

    def score(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        self.seen.extend(items)
        return [JudgeResult({"aesthetic": 0.5}) for _ in items]


def test_a_design_is_judged_as_written_not_as_its_canonical_form() -> None:
    """The judge must render what the policy wrote, which is what `flowforge design` hands
    over and what collection, the refine rounds and the choice judge; the canonical text
    only names the design (its key, novelty, similarity). Judging it instead scored a GRPO
    policy -0.18 in training score on held-out prompts that the judge scores ~2 as written."""
    checked = check_design(SWAPPED, CATALOG)
    assert checked.valid and checked.canonical is not None
    prompt, seed = "a castle at dusk", 7
    written = RequestTemplate(SWAPPED, "").fill(prompt, seed)
    assert RequestTemplate(checked.canonical, "").fill(prompt, seed) != written  # the trap
    judge = Recording()
    session = JudgeSession(LoadedJudge("recording", judge), "", batch=8, max_attempts=1)
    requests = judged_requests(
        [checked, check_design(FIXED_TEXT, CATALOG)], [prompt] * 2, [[seed, 8]] * 2
    )
    assert requests[:2] == [(SWAPPED, prompt, seed), (SWAPPED, prompt, 8)]
    session.judge_designs(requests)
    assert judge.seen[0] == JudgeItem(prompt, written, seed)
    # equal requests are rendered once, however the design was spelled
    spelled = SWAPPED.replace("steps=30", "steps=30 ")
    assert check_design(spelled, CATALOG).text != SWAPPED
    session.judge_designs([(spelled, prompt, seed)])
    assert len(judge.seen) == 4


# --- a whole evaluation on tiny inputs --------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> EvalInputs:
    root = tmp_path_factory.mktemp("eval")
    save_library(build_library(SEEDS, CATALOG, 40, 0), root / "library")
    prompts = root / "prompts.jsonl"
    lines = [json.dumps({"id": p.id, "prompt": p.text}) for p in load_prompts("train")[:12]]
    prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = CollectConfig(
        out=root / "collect",
        judge=FAKE,
        prompts=str(prompts),
        library=root / "library",
        pairs=120,
        seeds=1,
        backoff_seconds=0.0,
    )
    collect(config, load_judge(FAKE))
    reward = RewardConfig(members=2, epochs=1, heldout_scorer="alignment")
    train_ensemble(root / "collect", root / "reward", reward, encoder=FakeEncoder())
    tokenizer = tiny_tokenizer()
    for kind, seed in (("sft", 0), ("comfygen_ft", 1), ("grpo", 2)):
        model = build_tiny_model(tokenizer, TINY, seed=seed)
        record: dict[str, object] = {"kind": kind}
        if kind == "comfygen_ft":  # learned from a grid of its own (`[comfygen_ft] data`)
            record["data"] = {"triplets": 777}
        save_policy(model, tokenizer, root / kind, run_config=record)
    log = [{"step": s, "reward_mean": 0.1 * s, "kl": 0.01 * s} for s in range(1, 4)]
    (root / "grpo" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return EvalInputs(
        library=root / "library",
        triplets=root / "collect",
        reward=root / "reward",
        sft=root / "sft",
        comfygen_ft=root / "comfygen_ft",
        grpo=root / "grpo",
    )


CONFIG = EvalConfig(
    prompts=3,
    seeds=2,
    min_prompts=1,
    retrieval_k=3,
    guidance_weights=(0.5, 1.0),
    best_of_n=2,
    select_prompts=4,
    guard_prompts=4,
    ensemble_pick=True,
    max_new_tokens=96,
    heldout_scorer="alignment",
)


def test_a_whole_evaluation_writes_every_report_file_with_its_sections(
    inputs: EvalInputs, tmp_path: Path
) -> None:
    report = evaluate(CONFIG, inputs, load_judge(FAKE), tmp_path, encoder=FakeEncoder)
    names = [m["name"] for m in report.data["methods"]]
    assert names == [
        "default", "best_fixed", "retrieval", "comfygen_ft", "sft", "grpo",
        "grpo_w0.5", "grpo_w1", "grpo_wsel", "best_of_2", "ensemble_pick", "ensemble_fixed",
        "oracle",
    ]  # fmt: skip
    markdown = (tmp_path / REPORT_MD).read_text(encoding="utf-8")
    for section in ("## Results", "## Win rate", "## Guidance sweep", "## Failures", "## Plots"):
        assert section in markdown
    for plot in ("scores.png", "guidance.png", "grpo.png"):
        assert (tmp_path / plot).stat().st_size > 1000
        assert plot in markdown
    data = json.loads((tmp_path / REPORT_JSON).read_text(encoding="utf-8"))
    assert data["not_run"] == {}
    rows = (tmp_path / DESIGNS).read_text(encoding="utf-8").splitlines()
    assert len(rows) == len(names) * 3
    # each row names its prompt's design seed: `flowforge design PROMPT --seed SEED` with
    # a sampling method's settings writes that method's design (test_evaluate_designers)
    seed_of = {p.text: derive_seed(CONFIG.seed, "design", p.id) for p in heldout_prompts(3)}
    assert all(row["design_seed"] == seed_of[row["prompt"]] for row in map(json.loads, rows))
    by_name = {m["name"]: m for m in data["methods"]}
    for m in data["methods"]:
        assert m["valid"] == 1.0  # constrained decoding: every design validates
        assert m["judge_calls"] >= 3 * 2
        assert 0.0 <= m["heldout"] <= 1.0
    assert by_name["oracle"]["judge_calls"] == 3 * 2 + 3 * 40  # evaluation + its own choice
    assert by_name["default"]["not_in_library"] == 0.0
    assert by_name["grpo"]["not_in_library"] == 1.0  # an untrained model writes new things
    assert by_name["sft"]["data_calls"] == 0 and by_name["grpo"]["data_calls"] == 120
    assert by_name["comfygen_ft"]["data_calls"] == 777  # its own data's, from its record
    assert by_name["grpo_w1"]["heldout"] == by_name["grpo"]["heldout"]  # w=1 is the policy
    choice = data["guidance_choice"]  # judged on 4 validation prompts x 1 seed x 2 weights
    assert choice["prompts"] == 4 and choice["judge_calls"] == 8
    assert choice["weight"] in (0.5, 1.0) and set(choice["train_score_by_weight"]) == {"0.5", "1"}
    chosen = "grpo_w0.5" if choice["weight"] == 0.5 else "grpo_w1"
    assert by_name["grpo_wsel"]["heldout"] == by_name[chosen]["heldout"]
    assert by_name["grpo_wsel"]["data_calls"] == by_name["best_of_2"]["data_calls"] == 128
    assert "Chosen before the evaluation" in markdown
    guard = data["hand_over"]  # design --run's method against the best fixed workflow
    assert guard["method"] == "best_of_2" and guard["prompts"] == 4 and guard["judge_calls"] == 8
    better = guard["policy_score"] >= guard["fixed_score"]
    assert guard["handed"] == ("policy" if better else "best_fixed")
    assert guard["fixed_text"] == next(
        r["text"] for r in map(json.loads, rows) if r["method"] == "best_fixed"
    )
    assert "## What `flowforge design --run` hands over" in markdown
    handed = "best-of-2" if guard["handed"] == "policy" else "the best fixed workflow"
    assert f"`flowforge design --run` hands over {handed}" in markdown
    pick = by_name["ensemble_pick"]  # a library workflow, chosen without a judge call
    assert pick["not_in_library"] == 0.0 and pick["judge_calls"] == 3 * 2
    fixed = by_name["ensemble_fixed"]  # one library workflow for every prompt
    assert fixed["distinct"] == 1 and fixed["not_in_library"] == 0.0
    rates = data["win_rates"]["heldout"]
    assert all(math.isclose(rates[n][n], 0.5) for n in names)
    sure = data["intervals"]  # every method against every baseline but itself
    assert sure["level"] == 0.95 and set(sure["heldout"]) == set(names)
    for name in names:
        assert set(sure["heldout"][name]) == set(data["baselines"]) - {name}
        for other, one in sure["heldout"][name].items():
            low, high = one["win"]
            assert low <= rates[name][other] <= high
            d_low, d_high = one["difference_interval"]
            assert d_low <= one["difference"] <= d_high
    assert "## How sure (95% intervals over prompts)" in markdown
    assert "| best-of-2 by predicted reward" in markdown.split("## How sure")[1]
    assert [p["w"] for p in data["guidance_sweep"]] == [0.0, 0.5, 1.0, 1.0]
    assert report.table().count("\n") == len(names) + 2 and "| failed |" in report.table()


def test_the_run_layout_names_the_report_file_the_evaluation_writes() -> None:
    """`flowforge design --run` reads RUN/evaluate/report.json without importing evaluate."""
    assert layout.REPORT_JSON == REPORT_JSON


def test_missing_policies_are_reported_as_not_run(inputs: EvalInputs, tmp_path: Path) -> None:
    bare = EvalInputs(library=inputs.library, triplets=inputs.triplets)
    config = EvalConfig(
        prompts=2, seeds=1, min_prompts=1, oracle=False, heldout_scorer="alignment",
        ensemble_pick=True,
    )  # fmt: skip
    # an earlier, fuller report in the same directory: its plots must not outlive it
    earlier = ["scores.png", "guidance.png", "grpo.png"]
    (tmp_path / REPORT_JSON).write_text(json.dumps({"plots": earlier}), encoding="utf-8")
    for name in [*earlier, "mine.png"]:  # mine.png: the user's, no report listed it
        (tmp_path / name).write_bytes(b"old")
    report = evaluate(config, bare, load_judge(FAKE), tmp_path, encoder=FakeEncoder)
    assert [m["name"] for m in report.data["methods"]] == ["default", "best_fixed", "retrieval"]
    drawn = set(report.data["plots"])
    assert "grpo.png" not in drawn and "scores.png" in drawn
    assert {p.name for p in tmp_path.glob("*.png")} == drawn | {"mine.png"}
    not_run = report.data["not_run"]
    assert set(not_run) >= {
        "sft", "grpo", "comfygen_ft", "grpo_w1", "grpo_wsel", "best_of_8", "oracle",
        "ensemble_pick", "ensemble_fixed",
    }  # fmt: skip
    assert "## Not run" in (tmp_path / REPORT_MD).read_text(encoding="utf-8")


def test_prompts_seen_in_training_are_refused(inputs: EvalInputs, tmp_path: Path) -> None:
    from flowforge.evaluate import compare

    original = compare.heldout_prompts
    try:
        compare.heldout_prompts = lambda count: load_prompts("train")[:2]  # type: ignore[assignment]
        with pytest.raises(EvalError, match="occur in the training triplets"):
            evaluate(CONFIG, inputs, load_judge(FAKE), tmp_path, encoder=FakeEncoder)
    finally:
        compare.heldout_prompts = original


def _without_times(value: object) -> object:
    """A report's JSON with its times taken out (the only thing processes change)."""
    if isinstance(value, dict):
        return {
            k: _without_times(v) for k, v in value.items() if k not in ("seconds", "created_at")
        }
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def test_two_processes_design_what_one_process_does(inputs: EvalInputs, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    evaluate(CONFIG, inputs, load_judge(FAKE), one, encoder=FakeEncoder)
    said: list[str] = []
    evaluate(
        CONFIG, inputs, load_judge(FAKE), two, encoder=FakeEncoder, processes=2,
        on_progress=said.append,
    )  # fmt: skip
    assert "designing: library oracle (reference) (helper process)" in said  # it starts last
    reports = [json.loads((d / REPORT_JSON).read_text(encoding="utf-8")) for d in (one, two)]
    assert _without_times(reports[0]) == _without_times(reports[1])
    assert (one / DESIGNS).read_bytes() == (two / DESIGNS).read_bytes()
    assert reports[0]["judge_calls_total"] == reports[1]["judge_calls_total"]


def test_a_helper_that_fails_stops_the_evaluation_with_its_error(
    inputs: EvalInputs, tmp_path: Path
) -> None:
    from flowforge.judge.loader import JudgeLoadError

    judge = load_judge("fake_judge:make_only_in_main")
    with pytest.raises(JudgeLoadError, match="cannot be built in a helper process"):
        evaluate(CONFIG, inputs, judge, tmp_path, encoder=FakeEncoder, processes=2)
    assert not (tmp_path / REPORT_JSON).exists()


def test_a_judge_built_in_code_cannot_go_to_a_helper(inputs: EvalInputs, tmp_path: Path) -> None:
    from flowforge.judge.loader import LoadedJudge

    judge = LoadedJudge("in-code", load_judge(FAKE).judge)
    with pytest.raises(EvalError, match="built in code"):
        evaluate(CONFIG, inputs, judge, tmp_path, encoder=FakeEncoder, processes=2)
