"""GRPO: the maths against hand-computed values, a step that moves the model, learning a
reward, exact resume after a kill, the saved config, and train prompts only."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from policy_helpers import CATALOG, TINY, library_texts, tiny_tokenizer

from flowforge.data.export import Triplet
from flowforge.data.prompts import load_prompts, split_of
from flowforge.evaluate.methods import audit_calls
from flowforge.policy.audit import AUDIT_FILE
from flowforge.policy.constraint import schema_constraint
from flowforge.policy.grammar import TextFormGrammar
from flowforge.policy.grpo import (
    QUICK,
    GRPOError,
    GRPORunConfig,
    completion_logps,
    elsewhere_rewards,
    ensemble_reward,
    group_advantages,
    grpo_token_loss,
    k3_kl,
    step_prompts,
    token_logps,
    train_grpo,
    usable,
)
from flowforge.policy.model import build_tiny_model, load_policy, read_run_config, save_policy
from flowforge.policy.numpy_llama import Runtime
from flowforge.policy.rollout import sample_groups
from flowforge.policy.sample import sample_workflows
from flowforge.policy.vocab import split_pieces
from flowforge.reward.config import RewardConfig
from flowforge.reward.ensemble import RewardPrediction, load_ensemble
from flowforge.reward.train import train_ensemble
from flowforge.workflow.api import to_api
from flowforge.workflow.graph import Workflow
from flowforge.workflow.library import (
    LibraryEntry,
    build_library,
    load_seed_library,
    save_library,
)
from flowforge.workflow.textform import Bindings, design_hash, from_text, to_text
from flowforge.workflow.validate import validate

TARGET = "ckpt_name=dreamshaper_8.safetensors"
LENGTH = 128  # max_completion_length of the test runs (the fixture's texts have <= 110)


# --- the maths ---------------------------------------------------------------------------
def test_ensemble_reward_is_mean_minus_kappa_std_and_the_floor_when_invalid() -> None:
    members = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5], [np.nan, np.nan, np.nan]])
    valid = np.array([True, True, False])
    reward = ensemble_reward(members, valid, kappa=0.5, floor=-2.0)
    # row 0: mean 2, population std sqrt(2/3) = 0.816497; 2 - 0.5 * 0.816497
    assert reward == pytest.approx([1.5917517, 0.5, -2.0])
    assert ensemble_reward(members, valid, kappa=0.0, floor=-1.0) == pytest.approx([2, 0.5, -1])


def test_group_advantages_normalise_within_each_group() -> None:
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])
    # group 1: mean 2.5, population std sqrt(1.25) = 1.118034 (+ 1e-4); group 2: all equal
    expected = [-1.3415, -0.4472, 0.4472, 1.3415, 0.0, 0.0, 0.0, 0.0]
    assert group_advantages(rewards, 4) == pytest.approx(expected, abs=1e-4)
    assert group_advantages(rewards, 2) == pytest.approx([-1, 1, -1, 1, 0, 0, 0, 0], abs=1e-3)


def test_k3_kl_estimate_by_hand() -> None:
    logp = torch.log(torch.tensor([0.5, 0.5, 0.2]))
    ref = torch.log(torch.tensor([0.25, 0.5, 0.4]))
    # ref/p - log(ref/p) - 1: 0.5 + 0.693147 - 1, 0, 2 - 0.693147 - 1
    assert k3_kl(logp, ref).tolist() == pytest.approx([0.193147, 0.0, 0.306853], abs=1e-6)


def test_grpo_token_loss_clips_the_ratio_on_the_side_of_the_advantage() -> None:
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 1.0]))  # ratios 1.5, 1.5, 0.5, 1
    advantages = torch.tensor([1.0, -1.0, -2.0, 3.0])
    loss = grpo_token_loss(logp, old, logp, advantages, epsilon=0.2, beta=0.1)
    # min(1.5, 1.2) = 1.2; min(-1.5, -1.2) = -1.5; min(-1, -1.6) = -1.6; 3 (KL 0: ref = logp)
    assert loss.tolist() == pytest.approx([-1.2, 1.5, 1.6, -3.0])
    with_kl = grpo_token_loss(old, old, torch.log(torch.tensor([0.5] * 4)), advantages, 0.2, 0.1)
    assert with_kl.tolist() == pytest.approx((-advantages + 0.1 * 0.193147).tolist(), abs=1e-6)


def test_completion_logps_are_of_the_allowed_tokens_at_the_temperature() -> None:
    logits = torch.log(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    tokens = torch.tensor([1, 1])
    allowed = torch.tensor([[True, True, False], [True, True, True]])
    assert completion_logps(logits, tokens, allowed, 1.0).tolist() == pytest.approx(
        [math.log(2 / 3), math.log(2 / 6)]
    )
    # temperature 2: probabilities proportional to sqrt(1), sqrt(2) over the allowed two
    hot = completion_logps(logits, tokens, allowed, 2.0)[0]
    assert float(hot) == pytest.approx(math.log(2**0.5 / (1 + 2**0.5)))


class PromptFitReward:
    """Members that value ``fits-P`` at 1 on prompt P and 0 elsewhere, ``generic`` at 1.2
    everywhere and anything else as invalid; records what it is asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def predict_detail(self, prompts: Sequence[str], workflows: Sequence[str]) -> RewardPrediction:
        self.asked.extend(zip(prompts, workflows, strict=True))
        value = [
            1.2 if w == "generic" else float(w == f"fits-{p}") if w.startswith("fits-") else np.nan
            for p, w in zip(prompts, workflows, strict=True)
        ]
        members = np.array(value)[:, None] + np.array([[-0.1, 0.0, 0.1]])
        errors = tuple(None if np.isfinite(v) else "invalid" for v in value)
        mean, std = members.mean(axis=1), members.std(axis=1)
        return RewardPrediction(members, mean, std, mean - std, errors)


def test_the_prompt_contrast_is_a_designs_reward_on_the_steps_other_prompts() -> None:
    scorer = PromptFitReward()
    prompts = ["a", "a", "b", "b"]
    texts = ["fits-a", "generic", "generic", "fits-a"]
    scored = np.array([True, True, True, False])
    elsewhere = elsewhere_rewards(scorer, ["a", "b", "c"], prompts, texts, scored, kappa=0.0)
    # fits-a on b and c: 0; generic on the two prompts it was not sampled for: 1.2; unscored: 0
    np.testing.assert_allclose(elsewhere, [0.0, 1.2, 1.2, 0.0])
    assert scorer.asked == [  # each scored design on the step's prompts but its own
        ("b", "fits-a"),
        ("c", "fits-a"),
        ("b", "generic"),
        ("c", "generic"),
        ("a", "generic"),
        ("c", "generic"),
    ]
    own = ensemble_reward(np.array([[0.9, 1.0, 1.1], [1.1, 1.2, 1.3]]), np.ones(2, bool), 0, -2)
    # on prompt a the generic design wins without the contrast and loses with half of it
    assert own[1] > own[0] and own[1] - 0.5 * elsewhere[1] < own[0] - 0.5 * elsewhere[0]
    # kappa applies on the other prompts too; a design invalid everywhere else gets 0
    with_kappa = elsewhere_rewards(scorer, ["a", "b"], ["a"], ["generic"], np.ones(1, bool), 1.0)
    np.testing.assert_allclose(with_kappa, [1.2 - np.std([-0.1, 0.0, 0.1])])
    nothing = elsewhere_rewards(scorer, ["a", "b"], ["a"], ["other"], np.ones(1, bool), 0.0)
    np.testing.assert_allclose(nothing, [0.0])


def test_prompt_order_covers_every_prompt_once_per_epoch() -> None:
    steps = [step_prompts(10, 4, seed=3, step=s) for s in range(1, 6)]  # 20 = two epochs
    flat = [i for step in steps for i in step]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]
    assert step_prompts(10, 4, seed=3, step=2) == steps[1]
    assert step_prompts(10, 4, seed=4, step=2) != steps[1]


def test_config_checks_name_the_setting(tmp_path: Path) -> None:
    base = {"sft_dir": "a", "reward_dir": "b", "out": str(tmp_path / "o")}
    for change, word in [
        ({"group_size": 1}, "group_size"),
        ({"beta": -1.0}, "beta"),
        ({"temperature": 0.0}, "temperature"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"out": "a"}, "out must not be sft_dir"),
        ({"prompt_contrast": -0.5}, "prompt_contrast must be >= 0"),
        ({"prompt_contrast": 0.5, "prompts_per_step": 1}, "prompt_contrast needs prompts_per"),
    ]:
        with pytest.raises(GRPOError, match=word):
            GRPORunConfig(**{**base, **change})
    config = GRPORunConfig(**base, **QUICK)
    assert GRPORunConfig.from_json(json.loads(json.dumps(asdict(config)))) == config
    with pytest.raises(GRPOError, match="unknown GRPO settings: lr"):
        GRPORunConfig.from_json({**base, "lr": 1.0})


def test_a_usable_design_is_a_text_to_image_graph_that_writes_the_prompt() -> None:
    def read(text: str) -> Workflow:
        return from_text(text, Bindings.request("<the user's prompt>", "", 0))

    text = next(t for t in library_texts(150) if "text=$PROMPT" in t)
    assert usable(read(text))
    # the positive encoder given the negative prompt: valid, but it ignores the user's prompt
    ignored = text.replace("text=$PROMPT", "text=$NEGATIVE")
    assert validate(read(ignored), CATALOG).ok and not usable(read(ignored))
    no_sampler = "1 EmptyLatentImage batch_size=1 height=512 width=512"
    assert not usable(read(no_sampler))


# --- a tiny SFT policy and rewards ----------------------------------------------------------
class CheckpointReward:
    """Three members that agree a workflow is worth 1 with `TARGET`, else 0 (spread 0.08);
    records every prompt it is asked about."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def predict_detail(self, prompts: Sequence[str], workflows: Sequence[str]) -> RewardPrediction:
        self.prompts.extend(prompts)
        hit = np.array([float(TARGET in text) for text in workflows])
        members = hit[:, None] + np.array([[-0.1, 0.0, 0.1]])
        mean, std = members.mean(axis=1), members.std(axis=1)
        return RewardPrediction(members, mean, std, mean - std, (None,) * len(workflows))


class LineReward(CheckpointReward):
    """Members that agree a workflow is worth a tenth of its line count (no two groups alike)."""

    def predict_detail(self, prompts: Sequence[str], workflows: Sequence[str]) -> RewardPrediction:
        self.prompts.extend(prompts)
        lines = np.array([text.count("\n") / 10 for text in workflows])
        members = lines[:, None] + np.array([[-0.1, 0.0, 0.1]])
        mean, std = members.mean(axis=1), members.std(axis=1)
        return RewardPrediction(members, mean, std, mean - std, (None,) * len(workflows))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread while this module runs: on a shared 2-core machine, OpenMP threads
    spin-waiting for each other made a step 20x slower (train_grpo runs with `threads`=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy trained a little on library texts (so it writes library-like workflows),
    saved with the record of an SFT run that built a 150-workflow library (seed 0)."""
    root = tmp_path_factory.mktemp("grpo")
    tokenizer = tiny_tokenizer()
    model = build_tiny_model(tokenizer, TINY, seed=0)
    # The first 16 PartiPrompts not held out: the train split's first 16 before validation
    # prompts were carved from it. Trained on today's first 16 instead, this 30-step policy
    # wrote no usable design for the first GRPO step's prompts (every reward the floor, so
    # no advantage): the runs below need a policy that sometimes writes one.
    prompts = [p.text for p in load_prompts("all", "parti") if split_of(p) != "heldout"][:16]
    texts = [t for t in library_texts(150) if len(split_pieces(t)) <= 110][:32]  # 6 use TARGET
    rows = [
        [
            *tokenizer.hf(tokenizer.prompt_segment(prompt), add_special_tokens=False)["input_ids"],
            *tokenizer.encode_workflow(text),
            tokenizer.eos_id,
        ]
        for prompt, text in zip(prompts * 2, texts, strict=True)
    ]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[tokenizer.pad_id] * (width - len(r)) + r for r in rows])
    labels = ids.masked_fill(ids == tokenizer.pad_id, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        loss = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_id), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    record = {
        "kind": "sft",
        "config": {"library_dir": None, "library_size": 150, "library_seed": 0},
    }
    save_policy(model.eval(), tokenizer, root / "sft", run_config=record)
    return root / "sft"


def expected_of(entries: Sequence[LibraryEntry]) -> list[str]:
    return sorted({design_hash(entry.workflow, CATALOG) for entry in entries})


def config_for(sft_dir: Path, out: Path, **changes: object) -> GRPORunConfig:
    base = GRPORunConfig(
        sft_dir=str(sft_dir),
        reward_dir=str(out.parent / "no-reward"),  # the scorer is passed in
        out=str(out),
        steps=2,
        group_size=4,
        prompts_per_step=2,
        save_every=2,
        max_completion_length=LENGTH,
        learning_rate=3e-3,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def target_share(policy_dir: Path | str) -> float:
    """Share of 64 constrained samples (16 train prompts x 4, fixed seed) that use TARGET."""
    model, tokenizer = load_policy(policy_dir)
    prompts = [p.text for p in load_prompts("train")[100:116]]
    constraint = schema_constraint(tokenizer, CATALOG, LENGTH)
    samples = sample_workflows(
        model, tokenizer, prompts, n=4, seed=11, logits_processors=[constraint],
        max_new_tokens=LENGTH, catalog=CATALOG,
    )  # fmt: skip
    assert all(s.valid for s in samples)
    return sum(TARGET in s.text for s in samples) / len(samples)


def parameters(policy_dir: Path | str) -> list[torch.Tensor]:
    return [p.detach() for p in load_policy(policy_dir)[0].parameters()]


# --- the sampler ---------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", ["numpy", "transformers"])
def test_the_update_scores_the_distribution_the_samples_came_from(
    sft_dir: Path, runtime: Runtime
) -> None:
    model, tokenizer = load_policy(sft_dir)
    prompts = [p.text for p in load_prompts("train")[:3]]
    for grammar in (TextFormGrammar(tokenizer, CATALOG), None):
        rollout = sample_groups(
            model, tokenizer, prompts, 4, max_new_tokens=LENGTH, temperature=0.8, seed=5,
            grammar=grammar, runtime=runtime,
        )  # fmt: skip
        mask, real = rollout.attention_mask, rollout.completion_mask.bool()
        width = real.shape[1]
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = model(input_ids=rollout.input_ids, attention_mask=mask, position_ids=positions)
        before = logits.logits[:, -width - 1 : -1]  # the logits before each completion token
        allowed = None if rollout.allowed is None else rollout.allowed[real]
        tokens = rollout.input_ids[:, -width:][real]
        full = completion_logps(before[real], tokens, allowed, temperature=0.8)
        assert torch.allclose(full, rollout.logps[real], atol=1e-4)
        with torch.no_grad():  # the update's own computation (the head on chosen positions)
            rows = torch.arange(len(rollout.texts))
            assert torch.allclose(token_logps(model, rollout, rows, 0.8), full, atol=1e-5)
        if grammar is not None:  # constrained: every sample finishes and validates
            assert all(rollout.finished) and rollout.allowed is not None
            assert all(_valid(text) for text in rollout.texts)
            assert (rollout.allowed[real].sum(dim=1) == 1).any()  # forced positions exist
    again = sample_groups(
        model, tokenizer, prompts, 4, max_new_tokens=LENGTH, temperature=0.8, seed=5,
        grammar=None, runtime=runtime,
    )  # fmt: skip
    assert again.texts == rollout.texts


def _valid(text: str) -> bool:
    return validate(from_text(text, Bindings.request("p", "", 0)), CATALOG).ok


# --- runs --------------------------------------------------------------------------------
def test_one_step_moves_the_parameters_and_logs_finite_metrics(
    sft_dir: Path, tmp_path: Path
) -> None:
    config = config_for(sft_dir, tmp_path / "run", steps=1)
    lines: list[dict[str, float]] = []
    policy = train_grpo(config, lines.append, scorer=LineReward())
    assert policy == tmp_path / "run"
    assert lines[0]["reward_spread"] > 0  # else every advantage is 0 and nothing moves
    before, after = parameters(sft_dir), parameters(policy)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert len(lines) == 1
    logged = json.loads((policy / "log.jsonl").read_text(encoding="utf-8"))
    assert logged == lines[0]
    keys = ("reward_mean", "reward_spread", "kl", "valid_share", "usable_share", "novel_share")
    for key in (*keys, "distinct", "ensemble_std", "loss", "clip_share", "completion_tokens"):
        assert math.isfinite(logged[key]), key
    assert logged["valid_share"] == 1.0  # constrained: every sample validates
    assert logged["step"] == 1 and logged["wall_seconds"] > 0 and logged["grad_norm"] > 0
    assert logged["contrast_mean"] == 0.0  # prompt_contrast off


def test_the_prompt_contrast_takes_each_designs_reward_elsewhere(
    sft_dir: Path, tmp_path: Path
) -> None:
    config = config_for(sft_dir, tmp_path / "run", steps=1, prompt_contrast=0.5)
    lines: list[dict[str, float]] = []
    train_grpo(config, lines.append, scorer=LineReward())
    # LineReward ignores the prompt: elsewhere equals here, so half of it is taken off
    logged = lines[0]
    assert logged["contrast_mean"] > 0
    assert logged["reward_mean"] == pytest.approx(
        logged["ensemble_reward_mean"] - logged["contrast_mean"] * logged["usable_share"]
    )


def test_the_config_is_saved_with_the_run_and_every_checkpoint(
    sft_dir: Path, tmp_path: Path
) -> None:
    config = config_for(sft_dir, tmp_path / "run", steps=2, save_every=1)
    policy = train_grpo(config, scorer=CheckpointReward())
    record = read_run_config(policy)
    assert record is not None and record["kind"] == "grpo" and record["finished"]
    assert GRPORunConfig.from_json(record["config"]) == config
    assert record["result"]["steps"] == 2 and "torch" in record["versions"]
    checkpoints = sorted((policy / "checkpoints").iterdir())
    assert [p.name for p in checkpoints] == ["step-000001", "step-000002"]
    for checkpoint in checkpoints:
        saved = read_run_config(checkpoint)
        assert saved is not None and GRPORunConfig.from_json(saved["config"]) == config
    tokenizer, sft_tokenizer = load_policy(policy)[1], load_policy(sft_dir)[1]
    assert tokenizer.vocab == sft_tokenizer.vocab  # loadable like the SFT policy, same ids
    assert tokenizer.hf.get_vocab() == sft_tokenizer.hf.get_vocab()
    # a finished run is returned as it is; other settings are refused
    assert train_grpo(config, scorer=CheckpointReward()) == policy
    with pytest.raises(GRPOError, match="beta"):
        train_grpo(replace(config, beta=0.5), scorer=CheckpointReward())
    # a run recorded before prompt_contrast existed is the same run as one at its default (0)
    path = policy / "flowforge_run.json"
    old = json.loads(path.read_text(encoding="utf-8"))
    del old["config"]["prompt_contrast"]
    path.write_text(json.dumps(old), encoding="utf-8")
    assert train_grpo(config, scorer=CheckpointReward()) == policy
    with pytest.raises(GRPOError, match="prompt_contrast"):
        train_grpo(replace(config, prompt_contrast=0.5), scorer=CheckpointReward())


def test_a_mistyped_input_leaves_nothing_that_refuses_the_corrected_run(
    sft_dir: Path, tmp_path: Path
) -> None:
    """A wrong SFT or reward directory fails before the run's record is written: before,
    `flowforge grpo --sft TYPO --out OUT` left OUT holding a run of those settings, and the
    corrected command was refused as "a grpo run with other settings (sft_dir)"."""
    out = tmp_path / "run"
    with pytest.raises(GRPOError, match="no run record"):
        train_grpo(config_for(tmp_path / "typo", out, steps=1), scorer=CheckpointReward())
    with pytest.raises(ValueError, match="no such reward model directory"):
        train_grpo(config_for(sft_dir, out, steps=1))  # its reward_dir does not exist
    assert not out.exists()
    policy = train_grpo(config_for(sft_dir, out, steps=1), scorer=CheckpointReward())
    record = read_run_config(policy)
    assert record is not None and record["finished"]
    assert (policy / "library_designs.json").is_file()


def test_only_train_prompts_are_sampled(sft_dir: Path, tmp_path: Path) -> None:
    scorer = CheckpointReward()
    config = config_for(sft_dir, tmp_path / "run", steps=2, prompts_per_step=3)
    train_grpo(config, scorer=scorer)
    train = {p.text for p in load_prompts("train")}
    assert len(scorer.prompts) == 2 * 3 * 4 and set(scorer.prompts) <= train


def test_novelty_is_measured_against_the_sft_library(sft_dir: Path, tmp_path: Path) -> None:
    entries = build_library(load_seed_library(), CATALOG, 150, 0)
    expected = expected_of(entries)
    save_library(entries[:40], tmp_path / "library")
    for name, library_dir, designs in [
        ("rebuilt", None, expected),  # as the SFT run record says it was built
        ("given", str(tmp_path / "library"), expected_of(entries[:40])),
    ]:
        config = config_for(sft_dir, tmp_path / name, steps=1, library_dir=library_dir)
        train_grpo(config, scorer=CheckpointReward())
        saved = (tmp_path / name / "library_designs.json").read_text(encoding="utf-8")
        assert json.loads(saved) == designs


def test_a_reward_for_one_checkpoint_is_learned(sft_dir: Path, tmp_path: Path) -> None:
    # measured (seeds 0-3): the share went from 0.31 to 0.75-1.0 in 10 steps
    config = config_for(
        sft_dir, tmp_path / "run", steps=10, save_every=10, beta=0.0, usable_only=False
    )
    lines: list[dict[str, float]] = []
    policy = train_grpo(config, lines.append, scorer=CheckpointReward())
    before, after = target_share(sft_dir), target_share(policy)
    first = np.mean([line["reward_mean"] for line in lines[:3]])
    last = np.mean([line["reward_mean"] for line in lines[-3:]])
    print(f"target share {before:.3f} -> {after:.3f}; reward {first:.3f} -> {last:.3f}")
    assert after >= before + 0.3
    assert last > first


def test_a_killed_run_resumes_exactly(sft_dir: Path, tmp_path: Path) -> None:
    changes = {"steps": 4, "save_every": 2, "beta": 0.1, "updates_per_batch": 2}
    whole = train_grpo(
        config_for(sft_dir, tmp_path / "whole", **changes), scorer=CheckpointReward()
    )

    class Killed(Exception):
        pass

    def kill_at_3(line: dict[str, float]) -> None:
        if line["step"] == 3:
            raise Killed  # after step 3 is logged, before its next checkpoint

    config = config_for(sft_dir, tmp_path / "cut", **changes)
    with pytest.raises(Killed):
        train_grpo(config, kill_at_3, scorer=CheckpointReward())
    record = read_run_config(tmp_path / "cut")
    assert record is not None and not record["finished"]
    resumed: list[dict[str, float]] = []
    cut = train_grpo(config, resumed.append, scorer=CheckpointReward())
    assert [line["step"] for line in resumed] == [3, 4]  # from the step-2 checkpoint
    for a, b in zip(parameters(whole), parameters(cut), strict=True):
        assert torch.equal(a, b)

    def timeless(path: Path) -> list[dict[str, float]]:
        lines = [json.loads(x) for x in (path / "log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in x.items() if not k.endswith("seconds")} for x in lines]

    assert timeless(cut) == timeless(whole) and len(timeless(cut)) == 4


# --- with the package's own reward ensemble -------------------------------------------------
class HashEncoder:
    """A stand-in for MiniLM: a fixed random vector per prompt text."""

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=384) for t in texts]
        return np.asarray(rows, np.float32).reshape(len(texts), 384)


def test_a_step_against_a_trained_ensemble_uses_its_reward(sft_dir: Path, tmp_path: Path) -> None:
    prompts = [p for p in load_prompts("train")[:20]]
    triplets = []
    for i, entry in enumerate(build_library(load_seed_library(), CATALOG, 60, 1)):
        text = to_text(entry.workflow, CATALOG)[0]
        for prompt in prompts[i % 5 :: 5]:
            score = float(TARGET in text) + 0.01 * len(text) % 1
            triplets.append(
                Triplet(
                    prompt.id, prompt.text, "", entry.hash, text,
                    json.dumps(to_api(entry.workflow)), 0, "test",
                    {"quality": score, "style": -score}, None,
                )
            )  # fmt: skip
    config = RewardConfig(members=3, epochs=2, dim=8, hidden=16, holdout_workflows=0.0)
    train_ensemble(triplets, tmp_path / "reward", config, catalog=CATALOG, encoder=HashEncoder())
    ensemble = load_ensemble(tmp_path / "reward", catalog=CATALOG, encoder=HashEncoder())
    texts = [*library_texts(150)[:6], "1 NotAClass"]
    detail = ensemble.with_scoring(kappa=0.7, floor=-3.0).predict_detail(["a cat"] * 7, texts)
    ours = ensemble_reward(detail.members, detail.valid, kappa=0.7, floor=-3.0)
    assert ours == pytest.approx(detail.reward) and ours[-1] == -3.0
    run = config_for(sft_dir, tmp_path / "run", steps=1, kappa=0.7)
    lines: list[dict[str, float]] = []
    train_grpo(run, lines.append, scorer=ensemble)
    assert math.isfinite(lines[0]["reward_mean"]) and lines[0]["ensemble_std"] > 0


def test_unconstrained_sampling_reports_the_valid_share(sft_dir: Path, tmp_path: Path) -> None:
    config = config_for(sft_dir, tmp_path / "run", steps=1, constrained=False)
    lines: list[dict[str, float]] = []
    train_grpo(config, lines.append, scorer=CheckpointReward())
    assert 0.0 <= lines[0]["valid_share"] <= 1.0 and math.isfinite(lines[0]["loss"])


# --- judged audits (policy/audit.py) --------------------------------------------------------
class HalfLineJudge:
    """An auditor that judges a workflow half of what `LineReward` predicts (so the gap grows
    with its length); records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def judge(
        self, prompts: Sequence[str], texts: Sequence[str], seeds: Sequence[int]
    ) -> list[float | None]:
        self.calls += list(zip(prompts, texts, seeds, strict=True))
        return [text.count("\n") / 20 for text in texts]


def test_audits_need_a_judge(sft_dir: Path, tmp_path: Path) -> None:
    config = config_for(sft_dir, tmp_path / "run", audit_every=1)
    with pytest.raises(GRPOError, match="audit_every = 1 needs a judge"):
        train_grpo(config, scorer=LineReward())
    with pytest.raises(GRPOError, match="audit_samples"):
        config_for(sft_dir, tmp_path / "run", audit_samples=0)


def test_audits_judge_the_batch_correct_the_reward_and_resume_exactly(
    sft_dir: Path, tmp_path: Path
) -> None:
    changes = {
        "steps": 4,
        "save_every": 2,
        "audit_every": 2,
        "audit_samples": 3,
        "usable_only": False,
    }
    judge = HalfLineJudge()
    lines: list[dict[str, float]] = []
    whole = train_grpo(
        config_for(sft_dir, tmp_path / "whole", **changes),
        lines.append,
        scorer=LineReward(),
        auditor=judge,
    )
    assert [line["audit_calls"] for line in lines] == [0, 3, 3, 6]
    assert "audit_gap" in lines[1] and "audit_gap" not in lines[0]
    assert lines[0]["correction_mean"] == 0.0 and lines[2]["correction_mean"] > 0.0
    assert all(line["correction_mean"] >= 0 for line in lines)  # only overrating is corrected
    train_prompts = {p.text for p in load_prompts("train")}
    assert len(judge.calls) == 6 and all(prompt in train_prompts for prompt, _, _ in judge.calls)
    assert audit_calls(whole) == 6 and (whole / AUDIT_FILE).is_file()

    class Killed(Exception):
        pass

    def kill_at_3(line: dict[str, float]) -> None:
        if line["step"] == 3:
            raise Killed

    config = config_for(sft_dir, tmp_path / "cut", **changes)
    with pytest.raises(Killed):
        train_grpo(config, kill_at_3, scorer=LineReward(), auditor=HalfLineJudge())
    resumed = HalfLineJudge()
    cut = train_grpo(config, scorer=LineReward(), auditor=resumed)
    assert len(resumed.calls) == 3  # step 4's audit only: step 2's came back from the checkpoint
    for a, b in zip(parameters(whole), parameters(cut), strict=True):
        assert torch.equal(a, b)
    logs = [
        [
            {k: v for k, v in json.loads(x).items() if not k.endswith("seconds")}
            for x in (path / "log.jsonl").read_text().splitlines()
        ]
        for path in (whole, cut)
    ]
    assert logs[0] == logs[1]
