"""The reward ensemble: training, the model directory, scoring rules, evaluation.

MiniLM-path tests use a fake sentence encoder (`reward_helpers.FakeEncoder`) and synthetic
scores, so a whole ensemble trains in about a second.
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from reward_helpers import CATALOG, FakeEncoder, design_texts, tiny_hf_backbone, triplets
from threadpoolctl import threadpool_info

from flowforge.policy.design import RewardScorer
from flowforge.reward.backbone import MiniLMBackbone
from flowforge.reward.config import RewardConfig, RewardConfigError, parse_score_weights
from flowforge.reward.ensemble import RewardEnsemble, load_ensemble
from flowforge.reward.evaluate import RewardEvalError, build_units, evaluate_triplets, split_of
from flowforge.reward.features import fit_vocab, read_design, workflow_tokens
from flowforge.reward.model import cpu_threads
from flowforge.reward.store import RewardModelError, design_id
from flowforge.reward.train import (
    RewardTrainError,
    TrainResult,
    build_backbone,
    fit_member,
    is_heldout_design,
    train_ensemble,
    training_step,
)
from flowforge.workflow.graph import Workflow

SMALL = RewardConfig(members=3, epochs=6, batch_size=32, dim=16, hidden=32, holdout_workflows=0.2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("reward") / "model"
    return train_ensemble(triplets(), out, SMALL, encoder=FakeEncoder())


def _workflows(texts: tuple[str, ...]) -> dict[str, Workflow]:
    read = {text: read_design(text, CATALOG) for text in texts}
    return {text: wf for text, wf in read.items() if isinstance(wf, Workflow)}


def test_a_training_step_changes_parameters_and_lowers_the_loss() -> None:
    texts = design_texts()
    backbone = build_backbone(SMALL, _workflows(texts), FakeEncoder())
    rows = triplets(prompts=6, per_prompt=10)
    designs = [backbone.design(r.workflow_text, CATALOG) for r in rows]
    targets = np.array([r.scores["preference"] * 10 for r in rows if r.scores is not None])
    torch.manual_seed(0)
    member = backbone.new_member(pretrained=True)
    before = [p.detach().clone() for p in member.parameters()]
    optimizer = torch.optim.AdamW(member.parameters(), lr=1e-2)
    tensors = backbone.tensors([r.prompt for r in rows], designs)
    y = torch.tensor(targets, dtype=torch.float32)
    losses = [training_step(member, optimizer, tensors, y) for _ in range(30)]
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.5 * losses[0]
    changed = [not torch.equal(a, b) for a, b in zip(before, member.parameters(), strict=True)]
    assert all(changed)


def test_fit_member_lowers_the_epoch_loss() -> None:
    backbone = build_backbone(SMALL, _workflows(design_texts()), FakeEncoder())
    rows = triplets(prompts=8, per_prompt=12)
    designs = [backbone.design(r.workflow_text, CATALOG) for r in rows]
    targets = np.array([r.scores["aesthetic"] for r in rows if r.scores is not None])
    targets = (targets - targets.mean()) / targets.std()
    _, losses = fit_member(backbone, [r.prompt for r in rows], designs, targets, SMALL, seed=1)
    assert len(losses) == SMALL.epochs and losses[-1] < losses[0]


def test_save_load_round_trip_gives_identical_predictions(trained: TrainResult) -> None:
    texts = list(design_texts())
    prompts = ["an unseen prompt about a lighthouse"] * len(texts)
    before = trained.ensemble.predict_detail(prompts, texts)
    loaded = load_ensemble(trained.model_dir, encoder=FakeEncoder())
    after = loaded.predict_detail(prompts, texts)
    assert np.array_equal(before.members, after.members, equal_nan=True)
    assert np.array_equal(before.reward, after.reward)
    assert loaded.config == trained.ensemble.config
    assert loaded.training_score == trained.ensemble.training_score


def test_members_trained_at_once_in_workers_are_the_members_trained_in_turn(
    trained: TrainResult, tmp_path: Path
) -> None:
    heard: list[tuple[int, int, float]] = []
    at_once = train_ensemble(
        triplets(),
        tmp_path / "model",
        SMALL,
        encoder=FakeEncoder(),
        processes=2,
        on_progress=lambda k, epoch, loss: heard.append((k, epoch, loss)),
    )
    texts = list(design_texts())
    prompts = ["an unseen prompt about a lighthouse"] * len(texts)
    before = trained.ensemble.predict_detail(prompts, texts)
    after = at_once.ensemble.predict_detail(prompts, texts)
    assert np.array_equal(before.members, after.members, equal_nan=True)
    assert at_once.losses == trained.losses
    assert [(k, epoch) for k, epoch, _ in heard] == [
        (k, e) for k in range(SMALL.members) for e in range(SMALL.epochs)
    ]


def _break(model: Path, damage: str) -> None:
    config = model / "config.json"
    if damage == "no config":
        config.unlink()
    elif damage == "bad json":
        config.write_text("{not json", encoding="utf-8")
    elif damage == "other format":
        config.write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    elif damage == "unknown setting":
        data = json.loads(config.read_text(encoding="utf-8"))
        data["config"]["colour"] = "blue"
        config.write_text(json.dumps(data), encoding="utf-8")
    elif damage == "no weights":
        (model / "members.safetensors").unlink()
    elif damage == "garbage weights":
        (model / "members.safetensors").write_bytes(b"\x00" * 100)
    elif damage == "no vocab":
        (model / "vocab.json").unlink()
    elif damage == "vocab changed":
        vocab = json.loads((model / "vocab.json").read_text(encoding="utf-8"))
        vocab["tokens"] = vocab["tokens"][:-5]  # the embedding table no longer fits
        (model / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    elif damage == "fewer members":
        data = json.loads(config.read_text(encoding="utf-8"))
        data["config"]["members"] = 2
        config.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize(
    "damage",
    [
        "no config",
        "bad json",
        "other format",
        "unknown setting",
        "no weights",
        "garbage weights",
        "no vocab",
        "vocab changed",
        "fewer members",
    ],
)
def test_a_malformed_model_directory_is_one_clear_line(
    trained: TrainResult, tmp_path: Path, damage: str
) -> None:
    model = tmp_path / "model"
    shutil.copytree(trained.model_dir, model)
    _break(model, damage)
    with pytest.raises(RewardModelError) as caught:
        load_ensemble(model, encoder=FakeEncoder())
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert str(model) in message and "\n" not in message


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RewardModelError, match="no such reward model directory"):
        load_ensemble(tmp_path / "nowhere")


def test_invalid_workflows_get_the_floor_and_valid_ones_mean_minus_kappa_std(
    trained: TrainResult,
) -> None:
    valid = design_texts()[0]
    unknown_model = valid.replace("ckpt_name=", "ckpt_name=not_installed_", 1)
    texts = [valid, "1 KSampler cfg=", unknown_model, valid]
    prompts = ["a cat", "a cat", "a cat", "a dog"]
    for kappa in (0.0, 1.0, 2.5):
        ensemble = trained.ensemble.with_scoring(kappa=kappa, floor=-7.0)
        got = ensemble.predict_detail(prompts, texts)
        assert got.valid.tolist() == [True, False, False, True]
        assert got.errors[1] is not None and got.errors[1].startswith("does not parse")
        assert got.errors[2] is not None and got.errors[2].startswith("does not validate")
        for i in (0, 3):
            assert got.mean[i] == pytest.approx(got.members[i].mean())
            assert got.std[i] == pytest.approx(got.members[i].std())
            assert got.reward[i] == pytest.approx(got.mean[i] - kappa * got.std[i])
        assert got.reward[1] == got.reward[2] == -7.0
        assert np.isnan(got.members[1]).all()
        assert ensemble.predict(prompts, texts) == pytest.approx(got.reward.tolist())


def test_a_table_of_prompts_by_workflows_is_predict_on_every_pair(trained: TrainResult) -> None:
    """`predict_table` (ensemble pairing's grid, each member's prompt and workflow vectors
    computed once) is `predict` on each (prompt, workflow) pair, invalid texts the floor,
    in any block size, and its progress callback counts every prompt once."""
    valid = list(design_texts()[:7])
    texts = [valid[0], "1 KSampler cfg=", *valid[1:], valid[2]]  # an invalid one, a repeat
    prompts = ["a cat", "a dog", "a quiet harbour at dawn", "a cat"]
    ensemble = trained.ensemble.with_scoring(kappa=1.5, floor=-7.0)
    seen: list[int] = []
    table = ensemble.predict_table(prompts, texts, block=5, progress=seen.append)
    assert table.shape == (4, 9) and sum(seen) == 4 and max(seen) < 4
    for row, prompt in zip(table, prompts, strict=True):
        expected = ensemble.predict([prompt] * len(texts), texts)
        assert row.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert (table[:, 1] == -7.0).all() and (table[0] == table[3]).all()
    assert (table[:, 3] == table[:, 8]).all() and len(set(table[:3, 0])) == 3
    assert np.allclose(table, ensemble.predict_table(prompts, texts), rtol=0, atol=1e-6)
    assert ensemble.predict_table([], texts).shape == (0, 9)
    assert ensemble.predict_table(prompts, []).shape == (4, 0)


def test_scoring_settings_are_checked() -> None:
    with pytest.raises(RewardConfigError, match="kappa"):
        RewardConfig(kappa=-1.0)
    with pytest.raises(RewardConfigError, match="floor"):
        RewardConfig(floor=math.inf)


def test_the_ensemble_is_the_policys_reward_scorer(trained: TrainResult) -> None:
    def rank(scorer: RewardScorer, prompts: list[str], texts: list[str]) -> list[float]:
        return scorer.predict(prompts, texts)  # what policy/design.py calls

    protocol = inspect.signature(RewardScorer.predict)
    ours = inspect.signature(RewardEnsemble.predict)
    assert list(protocol.parameters) == list(ours.parameters)
    texts = list(design_texts()[:5])
    rewards = rank(trained.ensemble, ["a cat"] * 5, texts)
    assert len(rewards) == 5 and all(isinstance(r, float) for r in rewards)


def test_members_differ(trained: TrainResult) -> None:
    texts = list(design_texts())
    got = trained.ensemble.predict_detail(["a quiet harbour at dawn"] * len(texts), texts)
    assert (got.std > 1e-4).mean() > 0.9
    first, second = (m.state_dict() for m in trained.ensemble.members[:2])
    assert not torch.equal(first["head.3.weight"], second["head.3.weight"])


def test_heldout_designs_are_never_trained_on(trained: TrainResult) -> None:
    seen = trained.ensemble.training_set.designs
    heldout = [t for t in design_texts() if is_heldout_design(t, SMALL.holdout_workflows)]
    assert heldout, "the tiny library should have held-out designs at a 20% share"
    assert all(design_id(t) not in seen for t in heldout)
    assert trained.heldout_designs == len({t for t in heldout if t in _used_texts()})
    assert not is_heldout_design(design_texts()[0], 0.0)


def _used_texts() -> set[str]:
    return {t.workflow_text for t in triplets()}


def test_training_skips_judge_errors_and_reports_them(tmp_path: Path) -> None:
    data = triplets(prompts=6, per_prompt=10)
    data[0] = replace(data[0], scores=None, error="render: out of memory")
    config = replace(SMALL, members=1, epochs=1, holdout_workflows=0.0)
    result = train_ensemble(data, tmp_path / "m", config, encoder=FakeEncoder())
    assert result.skipped["judge_error"] == 1 and result.rows == len(data) - 1


def test_heldout_scorer_is_never_part_of_the_training_score(trained: TrainResult) -> None:
    assert trained.ensemble.training_score.names == ("aesthetic", "alignment", "preference")
    with pytest.raises(RewardConfigError, match="held-out scorer"):
        RewardConfig(score_weights=(("aesthetic", 1.0), ("heldout_preference", 1.0)))


def test_workflow_tokens_name_roles_links_numbers_and_crosses() -> None:
    text = next(t for t in design_texts() if "LatentUpscaleBy" in t)
    workflow = read_design(text, CATALOG)
    assert isinstance(workflow, Workflow)
    tokens = dict(workflow_tokens(workflow))
    assert "KSampler#2" in tokens  # the hires pass is a second sampler, by role
    assert any(t.startswith("KSampler#2.latent_image<-LatentUpscaleBy#1.0") for t in tokens)
    assert isinstance(tokens["KSampler#1.steps#"], float)
    assert any("&" in t and "sampler_name=" in t and "scheduler=" in t for t in tokens)
    plain = dict(workflow_tokens(workflow, crosses=False))
    assert not any("&" in t for t in plain)


def test_unseen_tokens_are_hashed_and_unseen_scalars_dropped() -> None:
    workflow = read_design(design_texts()[0], CATALOG)
    assert isinstance(workflow, Workflow)
    tokens = workflow_tokens(workflow)
    vocab = fit_vocab([tokens], min_count=1, hash_buckets=8)
    rows, weights = vocab.encode([("never-seen", None), ("Unknown#1.x#", 3.0)])
    assert rows.tolist() and rows[0] > len(vocab.tokens) and len(rows) == 1
    assert weights.tolist() == [1.0]
    own, _ = vocab.encode(tokens)
    assert (own <= len(vocab.tokens)).all()


def test_the_prompt_encoder_is_called_once_per_batch(trained: TrainResult) -> None:
    encoder = FakeEncoder()
    backbone = trained.ensemble.backbone
    assert isinstance(backbone, MiniLMBackbone)
    ensemble = RewardEnsemble(
        trained.ensemble.config,
        MiniLMBackbone(backbone.config, backbone.vocab, encoder),
        trained.ensemble.members,
        trained.ensemble.training_score,
        trained.ensemble.training_set,
    )
    texts = list(design_texts()[:16])
    ensemble.predict(["a cat"] * 8 + ["a dog"] * 8, texts)
    assert encoder.calls == 1


def test_eval_reports_every_split_and_writes_json_and_plots(
    trained: TrainResult, tmp_path: Path
) -> None:
    data = triplets() + [
        replace(t, prompt="an unseen prompt " + t.prompt, prompt_id="x") for t in triplets()
    ]
    result = evaluate_triplets(trained.ensemble, data, tmp_path / "eval")
    splits = result.report["splits"]
    assert set(splits) == {"train", "heldout_prompts", "heldout_workflows", "heldout_both"}
    assert result.report["reference"] == "heldout:heldout_preference"
    for metrics in splits.values():
        assert -1.0 <= metrics["ensemble"]["spearman"] <= 1.0
        assert len(metrics["members"]) == SMALL.members
        assert sum(b["count"] for b in metrics["error_by_spread"]) == metrics["units"]
    assert splits["train"]["ensemble"]["spearman"] > 0.5
    names = sorted(path.name for path in result.files)
    assert names == ["error_vs_spread.png", "eval.json", "pred_vs_actual.png"]
    assert (
        json.loads((tmp_path / "eval" / "eval.json").read_text())["units"] == result.report["units"]
    )


def test_split_names() -> None:
    assert split_of(True, True) == "train"
    assert split_of(False, True) == "heldout_prompts"
    assert split_of(True, False) == "heldout_workflows"
    assert split_of(False, False) == "heldout_both"


def test_hf_backbone_trains_saves_and_loads_without_pickle(tmp_path: Path) -> None:
    data = triplets(prompts=4, per_prompt=8)
    texts = [t.prompt for t in data] + list(design_texts())
    backbone_dir = tiny_hf_backbone(tmp_path / "tiny-bert", texts)
    config = replace(
        SMALL,
        backbone=f"hf:{backbone_dir}",
        members=2,
        epochs=1,
        batch_size=16,
        holdout_workflows=0,
    )
    result = train_ensemble(data, tmp_path / "model", config)
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "backbone",
        "config.json",
        "members.safetensors",
        "training_set.json",
    ]
    prompts, workflows = [t.prompt for t in data[:6]], [t.workflow_text for t in data[:6]]
    before = result.ensemble.predict_detail(prompts, workflows)
    loaded = load_ensemble(tmp_path / "model")
    after = loaded.predict_detail(prompts, workflows)
    assert np.allclose(before.members, after.members, atol=1e-6)
    assert (before.std > 0).all()
    assert loaded.predict(["a cat"], ["not a workflow"]) == [config.floor]
    table = loaded.predict_table(prompts[:2], [*workflows[:3], "not a workflow"])
    for row, prompt in zip(table, prompts[:2], strict=True):
        expected = loaded.predict([prompt] * 4, [*workflows[:3], "not a workflow"])
        assert row.tolist() == pytest.approx(expected, abs=1e-6)


def test_training_refuses_to_write_over_what_is_not_its_own(
    trained: TrainResult, tmp_path: Path
) -> None:
    data = triplets(prompts=4, per_prompt=8)
    config = replace(SMALL, members=1, epochs=1, holdout_workflows=0.0)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(RewardTrainError, match="already exists"):
        train_ensemble(data, other, config, encoder=FakeEncoder())
    with pytest.raises(RewardTrainError, match="not a reward model"):
        train_ensemble(data, other, config, encoder=FakeEncoder(), overwrite=True)
    assert (other / "keep.txt").read_text(encoding="utf-8") == "mine"
    model = tmp_path / "model"
    shutil.copytree(trained.model_dir, model)
    train_ensemble(data, model, config, encoder=FakeEncoder(), overwrite=True)
    assert load_ensemble(model, encoder=FakeEncoder()).config.members == 1


def test_score_weight_flags() -> None:
    assert parse_score_weights([]) is None
    assert parse_score_weights(["aesthetic=1.5", "preference=1"]) == (
        ("aesthetic", 1.5),
        ("preference", 1.0),
    )
    for bad in ("aesthetic", "=1", "aesthetic=lots", "aesthetic=nan"):
        with pytest.raises(RewardConfigError, match="NAME=WEIGHT"):
            parse_score_weights([bad])


def test_eval_on_sim_data_uses_the_noise_free_quality(trained: TrainResult) -> None:
    from flowforge.data.plan import fill_workflow
    from flowforge.judge.base import JudgeItem
    from flowforge.judge.sim import SimJudge

    judge = SimJudge(3)  # the default embedding cache, as `reward eval` uses it
    data, items = [], []
    for prompt in ("a red fox in the snow", "a neon city street at night"):
        for text in design_texts()[:6]:
            item = JudgeItem(prompt, fill_workflow(text, prompt, "", 11), 11)
            result = judge.score([item])[0]
            items.append(item)
            data.append(
                replace(
                    triplets(prompts=1, per_prompt=1)[0],
                    prompt=prompt,
                    workflow_text=text,
                    workflow_api=json.dumps(item.workflow),
                    seed=11,
                    judge_id="sim:3",
                    scores=result.scores,
                    error=result.error,
                )
            )
    units = build_units(trained.ensemble, data, "auto")
    assert units.reference == "true_quality"
    expected = [q for q in judge.true_quality(items) if q is not None]
    assert sorted(units.actual.tolist()) == pytest.approx(sorted(expected))
    with pytest.raises(RewardEvalError, match="sim"):
        build_units(trained.ensemble, triplets(prompts=2, per_prompt=3), "true_quality")


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_cpu_threads_sets_torch_and_numpy_blas_threads_and_restores_both() -> None:
    """Every stage runs inside it; the numpy Llama's BLAS threads must obey it too (a
    spinning OpenBLAS worker made sampling 2.6x slower beside another stage)."""
    torch_before, blas_before = torch.get_num_threads(), _blas_threads()
    assert blas_before, "numpy's BLAS is not visible to threadpoolctl"
    with cpu_threads(1):
        assert torch.get_num_threads() == 1 and set(_blas_threads()) == {1}
    assert torch.get_num_threads() == torch_before and _blas_threads() == blas_before
