"""The evaluation's designers and baselines on tiny, hand-made inputs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray
from policy_helpers import TINY, tiny_tokenizer, train_prompts

from flowforge.evaluate.baselines import RetrievalTable, ScoredRow, best_fixed, scored_rows
from flowforge.evaluate.config import EvalConfig, EvalError
from flowforge.evaluate.designers import (
    BestOfNDesigner,
    EnsembleFixedDesigner,
    EnsemblePickDesigner,
    FixedDesigner,
    LoadedPolicy,
    OracleDesigner,
    PolicyDesigner,
    RetrievalDesigner,
    SamplingSettings,
    SelectedWeightDesigner,
    derive_seed,
)
from flowforge.evaluate.judging import check_design
from flowforge.evaluate.methods import default_text
from flowforge.judge.base import JudgeItem, JudgeResult
from flowforge.policy.design import TransformersSampler
from flowforge.policy.model import build_tiny_model
from flowforge.policy.numpy_sampler import sample_candidates
from flowforge.policy.sample import DEFAULT_MAX_NEW_TOKENS, Sample
from flowforge.workflow.library import load_seed_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import to_text

CATALOG = default_catalog()


def rows(*entries: tuple[str, str, float]) -> list[ScoredRow]:
    return [ScoredRow(prompt, text, score) for prompt, text, score in entries]


def test_fixed_designer_gives_every_prompt_the_same_text() -> None:
    designer = FixedDesigner("W")
    assert designer.design(["a", "b", "c"], [1, 2, 3]) == ["W", "W", "W"]
    assert designer.judge_calls == 0


def test_best_fixed_takes_the_best_mean_among_workflows_seen_on_enough_prompts() -> None:
    data = rows(
        ("p1", "lucky", 9.0),  # one prompt only: does not qualify with min_prompts=2
        ("p1", "good", 2.0),
        ("p2", "good", 1.0),
        ("p1", "fair", 1.0),
        ("p2", "fair", 1.0),
        ("p3", "fair", 1.0),
    )
    choice = best_fixed(data, min_prompts=2)
    assert (choice.text, choice.mean_score, choice.prompts, choice.candidates) == (
        "good",
        1.5,
        2,
        2,
    )
    assert best_fixed(data, min_prompts=1).text == "lucky"


def test_best_fixed_breaks_ties_by_text_and_names_the_problem_when_none_qualifies() -> None:
    assert best_fixed(rows(("p", "b", 1.0), ("p", "a", 1.0)), 1).text == "a"
    with pytest.raises(EvalError, match="min_prompts"):
        best_fixed(rows(("p", "a", 1.0)), min_prompts=2)


class AxisEncoder:
    """Texts -> unit vectors along a named axis: prompts about cats / dogs / cars."""

    AXES = ("cat", "dog", "car")

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), 3), np.float32)
        for i, text in enumerate(texts):
            out[i, [axis in text for axis in self.AXES].index(True)] = 1.0
        return out


def test_retrieval_pools_the_k_most_similar_train_prompts() -> None:
    table = RetrievalTable(
        rows(
            ("a cat", "A", 1.0),
            ("a cat", "B", 0.0),
            ("two cats", "B", 3.0),  # pooled over both cat prompts: B = 1.5 > A = 1.0
            ("a dog", "C", 5.0),
            ("a car", "D", 9.0),
        )
    )
    one = RetrievalDesigner(table, AxisEncoder(), k=1)
    two = RetrievalDesigner(table, AxisEncoder(), k=2)
    assert two.design(["cat on a mat"], [0]) == ["B"]
    assert one.design(["cat on a mat", "dog in snow", "a car at night"], [0, 1, 2]) == [
        "A",
        "C",
        "D",
    ]


def test_oracle_picks_the_best_library_workflow_by_the_judge_and_counts_its_calls() -> None:
    seen: list[JudgeItem] = []

    def score_items(items: Sequence[JudgeItem]) -> list[JudgeResult]:
        seen.extend(items)
        return [JudgeResult({"q": float(item.workflow["w"])}) for item in items]

    def fill(text: str, prompt: str, seed: int) -> JudgeItem:
        return JudgeItem(prompt, {"w": len(text)}, seed)

    oracle = OracleDesigner(["x", "xxx", "xx"], score_items, fill, lambda s: s["q"], seeds=2)
    assert oracle.design(["p1", "p2"], [5, 6]) == ["xxx", "xxx"]
    assert oracle.judge_calls == len(seen) == 2 * 3 * 2
    assert {item.seed for item in seen}.isdisjoint({5, 6})  # its own seeds


class FakeSampler:
    """Stands in for a PolicyDesigner: fixed samples per prompt."""

    def __init__(self, groups: list[list[tuple[str, bool]]]) -> None:
        self.groups = groups

    def sample(self, prompts: Sequence[str], seeds: Sequence[int], n: int) -> list[Sample]:
        return [
            Sample(prompt, text, None, None if ok else "bad", ok, True, ())
            for prompt, group in zip(prompts, self.groups, strict=True)
            for text, ok in group[:n]
        ]


class LengthReward:
    def predict(self, prompts: list[str], workflows: list[str]) -> list[float]:
        return [float(len(w)) for w in workflows]


def test_best_of_n_keeps_the_valid_sample_with_the_best_predicted_reward() -> None:
    sampler = FakeSampler(
        [[("aa", True), ("aaaaaa", False), ("aaaa", True)], [("z", False), ("zz", False)]]
    )
    designer = BestOfNDesigner(sampler, LengthReward(), n=3)  # type: ignore[arg-type]
    assert designer.design(["p", "q"], [0, 1]) == ["aaaa", "z"]


class WeightDesigner:
    """Stands in for a guided PolicyDesigner: every prompt gets the text `text`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.judge_calls = 0
        self.asked: list[Sequence[str]] = []

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        self.asked.append(prompts)
        return [self.text for _ in prompts]

    def sample(self, prompts: Sequence[str], seeds: Sequence[int], n: int) -> list[Sample]:
        return [Sample(p, self.text, None, None, True, True, ()) for p in prompts for _ in range(n)]


def test_weight_selection_picks_the_best_training_score_on_train_prompts_only() -> None:
    judged: list[JudgeItem] = []

    def score_items(items: Sequence[JudgeItem]) -> list[JudgeResult]:
        judged.extend(items)
        scores = {"ok": 1.0, "best": 2.0, "hacked": 0.0}
        return [  # "broken" cannot be judged: it counts as the worst score seen
            JudgeResult(None, error="unjudgeable")
            if item.workflow["t"] == "broken"
            else JudgeResult(
                {"train": scores[item.workflow["t"]], "heldout": -scores[item.workflow["t"]]}
            )
            for item in items
        ]

    def fill(text: str, prompt: str, seed: int) -> JudgeItem:
        return JudgeItem(prompt, {"t": text}, seed)

    candidates = {
        1.0: WeightDesigner("ok"),
        1.5: WeightDesigner("best"),
        3.0: WeightDesigner("hacked"),
        2.0: WeightDesigner("broken"),
    }
    train = ["t1", "t2", "t3"]
    designer = SelectedWeightDesigner.judged(
        candidates,
        train,
        2,
        score_items,
        fill,
        lambda s: s["train"],  # type: ignore[arg-type]
    )
    choice = designer.choice
    assert choice.weight == 1.5 and choice.prompts == 3
    assert choice.scores == {1.0: 1.0, 1.5: 2.0, 3.0: 0.0, 2.0: 0.0}
    assert choice.judge_calls == len(judged) == 4 * 3 * 2 and designer.judge_calls == 0
    assert {item.prompt for item in judged} == set(train)
    assert all(c.asked == [train] for c in candidates.values())
    assert designer.design(["held-out"], [9]) == ["best"]
    assert [s.text for s in designer.sample(["held-out"], [9], 2)] == ["best", "best"]


def test_weight_selection_breaks_ties_towards_grpo_itself() -> None:
    def score_items(items: Sequence[JudgeItem]) -> list[JudgeResult]:
        return [JudgeResult({"train": 1.0}) for _ in items]

    def fill(text: str, prompt: str, seed: int) -> JudgeItem:
        return JudgeItem(prompt, {"t": text}, seed)

    candidates = {w: WeightDesigner(f"w{w}") for w in (0.5, 1.0, 2.0)}
    designer = SelectedWeightDesigner.judged(
        candidates,
        ["t"],
        1,
        score_items,
        fill,
        lambda s: s["train"],  # type: ignore[arg-type]
    )
    assert designer.choice.weight == 1.0


def test_ensemble_pick_takes_the_library_workflow_predicted_best_per_prompt() -> None:
    class PromptLength:  # prefers the workflow as long as the prompt
        def predict(self, prompts: list[str], workflows: list[str]) -> list[float]:
            return [-abs(len(p) - len(w)) for p, w in zip(prompts, workflows, strict=True)]

    designer = EnsemblePickDesigner(["x", "xxx", "xx"], PromptLength())
    assert designer.design(["abc", "a", "ab"], [0, 1, 2]) == ["xxx", "x", "xx"]
    assert designer.judge_calls == 0


def test_ensemble_fixed_takes_the_workflow_predicted_best_on_average_over_train_prompts() -> None:
    class SquaredLength:  # prefers the workflow as long as the prompt, squared distance
        def predict(self, prompts: list[str], workflows: list[str]) -> list[float]:
            return [-((len(p) - len(w)) ** 2) for p, w in zip(prompts, workflows, strict=True)]

    # "a" prefers "x" and "abc" prefers "xxx"; on average "xx" wins (-2 against -4 each).
    designer = EnsembleFixedDesigner(["x", "xxx", "xx"], SquaredLength(), ["a", "abc"])
    assert designer.choice == "xx"
    assert designer.design(["p", "q"], [0, 1]) == ["xx", "xx"] and designer.judge_calls == 0
    with pytest.raises(ValueError, match="needs a library and train prompts"):
        EnsembleFixedDesigner(["x"], SquaredLength(), [])


def test_derived_seeds_are_stable_distinct_and_in_range() -> None:
    seeds = {derive_seed(0, "render", f"p{i}", 0) for i in range(200)}
    assert len(seeds) == 200 and all(0 <= s < 2**31 for s in seeds)
    assert derive_seed(1, "x") == derive_seed(1, "x") != derive_seed(2, "x")


def test_check_design_reports_an_unparsable_and_an_invalid_text_without_repairing() -> None:
    good = to_text(load_seed_library()["sdxl_base"], CATALOG)[0]
    checked = check_design(good, CATALOG)
    assert checked.valid and checked.canonical == good and checked.key is not None
    assert checked.judgeable
    garbage = check_design("1 NoSuchNode x=1", CATALOG)
    assert not garbage.valid and not garbage.judgeable and garbage.error is not None
    assert garbage.error.startswith("invalid:")
    broken = check_design(good.replace("steps=30", "steps=0"), CATALOG)
    assert broken.key is not None and broken.error is not None and not broken.judgeable
    assert "steps" in broken.error


def test_default_workflow_is_a_shipped_seed_and_an_unknown_one_is_named() -> None:
    assert "sd_xl_base_1.0" in default_text("sdxl_base", CATALOG)
    with pytest.raises(EvalError, match="not a shipped seed"):
        default_text("no_such_seed", CATALOG)


def test_eval_config_checks_its_settings() -> None:
    with pytest.raises(EvalError, match="best_of_n"):
        EvalConfig(best_of_n=1)
    with pytest.raises(EvalError, match="repeat"):
        EvalConfig(guidance_weights=(1.0, 1.0))


def test_scored_rows_skip_failed_judgements() -> None:
    from reward_helpers import triplets

    data = triplets(prompts=2, per_prompt=3)
    failed = [data[0].__class__(**{**data[0].__dict__, "scores": None, "error": "render: x"})]
    out = scored_rows([*failed, *data], lambda s: s["aesthetic"])
    assert len(out) == len(data)


def test_policy_designer_samples_with_numpy_and_guidance_at_one_is_the_policy_itself() -> None:
    """The numpy runtime serves the evaluation, the refine rounds and the choice (what
    `flowforge design` uses); w = 1 must stay GRPO exactly (the report shows them equal)."""
    tokenizer = tiny_tokenizer()
    policy = LoadedPolicy(build_tiny_model(tokenizer, TINY, seed=0), tokenizer, None, "grpo")
    reference = build_tiny_model(tokenizer, TINY, seed=1)
    settings = SamplingSettings(
        temperature=0.7, constrained=True, max_new_tokens=96, batch_size=8, negative=""
    )
    prompts, seeds = list(train_prompts()[:5]), [3, 4, 5, 6, 7]
    plain = PolicyDesigner(policy, CATALOG, settings)
    assert plain.numpy_model is not None
    samples = plain.sample(prompts, seeds, 3)
    assert [s.prompt for s in samples] == [p for p in prompts for _ in range(3)]
    assert all(s.valid for s in samples) and len({s.text for s in samples}) > 1
    at_one = PolicyDesigner(policy, CATALOG, settings, reference=reference, weight=1.0)
    assert at_one.numpy_model is not None and at_one.numpy_model.members == 2
    assert [s.text for s in at_one.sample(prompts, seeds, 3)] == [s.text for s in samples]
    at_two = PolicyDesigner(policy, CATALOG, settings, reference=reference, weight=2.0)
    assert all(s.valid for s in at_two.sample(prompts, seeds, 3))
    slow = PolicyDesigner(policy, CATALOG, settings, runtime="transformers")
    assert slow.numpy_model is None
    assert all(s.valid for s in slow.sample(prompts, seeds, 3))


def test_a_prompts_samples_depend_on_its_own_seed_not_on_what_it_was_batched_with() -> None:
    """Each prompt draws from a generator of its own seed (numpy runtime): adding, removing
    or reordering other prompts leaves its designs alone, so an evaluation on another prompt
    sample redraws only the prompts that changed, and `flowforge design PROMPT --seed SEED`
    with the same settings writes exactly what the evaluation wrote for that prompt."""
    tokenizer = tiny_tokenizer()
    policy = LoadedPolicy(build_tiny_model(tokenizer, TINY, seed=0), tokenizer, None, "grpo")
    settings = SamplingSettings(
        temperature=1.0, constrained=True, max_new_tokens=96, batch_size=8, negative="n"
    )
    designer = PolicyDesigner(policy, CATALOG, settings)
    assert designer.numpy_model is not None
    prompts = list(train_prompts()[:6])
    seeds = [11, 12, 13, 14, 15, 16]
    together = designer.sample(prompts, seeds, 3)  # batches of 2 prompts x 3 rows
    texts = [s.text for s in together]
    assert len(set(texts)) > 3  # temperature 1.0 on a random model: the rows differ
    alone = designer.sample(prompts[4:5], seeds[4:5], 3)
    assert alone == together[12:15]
    shuffled = designer.sample(prompts[::-1], seeds[::-1], 3)
    assert [s.text for s in shuffled] == [
        t for k in range(5, -1, -1) for t in texts[3 * k : 3 * k + 3]
    ]
    other_seed = designer.sample(prompts[4:5], [99], 3)
    assert [s.text for s in other_seed] != texts[12:15]
    candidates = sample_candidates(
        designer.numpy_model,
        tokenizer,
        prompts[4],
        3,
        temperature=1.0,
        seed=15,
        max_new_tokens=96,
        catalog=CATALOG,
        grammar=designer.grammar,
        negative="n",
    )
    assert candidates == together[12:15]
    with pytest.raises(ValueError, match="one seed per prompt"):
        designer.sample(prompts, seeds[:2], 1)


def test_the_transformers_runtime_also_draws_each_prompt_from_its_own_seed() -> None:
    """A pretrained policy the numpy runtime cannot run samples on transformers: there too a
    prompt's designs do not depend on its batch-mates, and `flowforge design`'s sampler
    (`TransformersSampler`) with the prompt's seed writes the evaluation's designs."""
    tokenizer = tiny_tokenizer()
    policy = LoadedPolicy(build_tiny_model(tokenizer, TINY, seed=0), tokenizer, None, "grpo")
    settings = SamplingSettings(
        temperature=1.0, constrained=True, max_new_tokens=DEFAULT_MAX_NEW_TOKENS, batch_size=8,
        negative="n",
    )  # fmt: skip
    designer = PolicyDesigner(policy, CATALOG, settings, runtime="transformers")
    assert designer.numpy_model is None
    prompts, seeds = list(train_prompts()[:4]), [21, 22, 23, 24]
    together = designer.sample(prompts, seeds, 3)  # batches of 2 prompts x 3 rows
    assert len({s.text for s in together}) > 3 and all(s.valid for s in together)
    assert designer.sample(prompts[3:], seeds[3:], 3) == together[9:]
    assert designer.sample(prompts[::-1], seeds[::-1], 3)[:3] == together[9:]
    sampler = TransformersSampler(policy.model, tokenizer, CATALOG, None, (), designer.grammar)
    assert sampler(prompts[2], n=3, temperature=1.0, seed=23, negative="n") == together[6:9]
