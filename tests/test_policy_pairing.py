"""Ensemble pairing for phase-1 SFT: the sampling contract, the settings, and the wiring
from a reward ensemble through `run_sft` and the pipeline to the evaluation's data calls."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from policy_helpers import TINY, library_texts
from reward_helpers import FakeEncoder, triplets

from flowforge.evaluate.methods import ensemble_paired
from flowforge.pipeline.config import RunConfigError, SFTStageConfig
from flowforge.policy.config import SFTError, SFTRunConfig, TrainSettings
from flowforge.policy.examples import (
    ExampleError,
    capped_pairs,
    effective_choices,
    preferred_pairs,
)
from flowforge.policy.model import read_run_config
from flowforge.policy.sft import ensemble_rewards, judged_designs, run_sft, sft_examples
from flowforge.reward.config import RewardConfig
from flowforge.reward.ensemble import load_ensemble
from flowforge.reward.train import train_ensemble
from flowforge.workflow.schema import load_catalog

TEXTS = [f"workflow {i}" for i in range(6)]
PROMPTS = ["a cat", "a dog", "a city at night", "a bowl of fruit"]
TINY_TRAIN = TrainSettings(model=TINY, batch_size=8, learning_rate=1e-3, save_steps=3, seed=0)


def _ensemble_paired(tmp_path: Path, designs: tuple[str, ...] = ()) -> SFTRunConfig:
    """A tiny SFT run paired by the ensemble in ``tmp_path/reward`` (its scoring swapped for
    a table by the tests)."""
    return SFTRunConfig(
        out_dir=str(tmp_path / "p"),
        pairs=16,
        library_size=40,
        train=TINY_TRAIN,
        pairing="ensemble",
        reward_dir=str(tmp_path / "reward"),
        designs=designs,
    )


def _favourites(prompts: int, workflows: int, margin: float) -> NDArray[np.float64]:
    """Prompt i prefers workflow i % workflows by `margin`; the rest are equal."""
    table = np.zeros((prompts, workflows))
    table[np.arange(prompts), np.arange(prompts) % workflows] = margin
    return table


class FavouringEnsemble:
    """Stands in for `ensemble_rewards`: every prompt prefers the candidate at `column` by
    far; records the candidates it was offered and the ensemble directory asked for."""

    def __init__(self, column: int) -> None:
        self.column = column
        self.offered: list[str] = []
        self.reward_dirs: list[str] = []

    def __call__(
        self,
        reward_dir: str,
        catalog: object,
        texts: Sequence[str],
        prompts: Sequence[str],
        _: bool,
    ) -> NDArray[np.float64]:
        self.reward_dirs.append(reward_dir)
        self.offered.extend(texts)
        table = np.zeros((len(prompts), len(texts)))
        table[:, self.column] = 100.0
        return table


def test_each_prompt_is_paired_equally_often_in_rounds() -> None:
    examples = preferred_pairs(TEXTS, PROMPTS, np.zeros((4, 6)), 10, 1.0, seed=0)
    counts = Counter(e.prompt for e in examples)
    assert len(examples) == 10 and sorted(counts.values()) == [2, 2, 3, 3]


def test_a_cold_pairing_gives_each_prompt_its_favourite() -> None:
    examples = preferred_pairs(TEXTS, PROMPTS, _favourites(4, 6, 5.0), 40, 0.05, seed=1)
    assert all(e.workflow_text == TEXTS[PROMPTS.index(e.prompt)] for e in examples)


def test_a_hot_pairing_reaches_every_workflow_and_still_leans_to_the_favourite() -> None:
    examples = preferred_pairs(TEXTS, PROMPTS, _favourites(4, 6, 1.0), 4000, 1.0, seed=2)
    assert {e.workflow_text for e in examples} == set(TEXTS)
    of_cat = Counter(e.workflow_text for e in examples if e.prompt == "a cat")
    # favourite weight e / (e + 5) = 0.35 of the cat's 1000 examples; the others ~0.13 each
    assert 300 < of_cat[TEXTS[0]] < 400 and max(of_cat[t] for t in TEXTS[1:]) < 170


def test_the_same_seed_pairs_the_same_way() -> None:
    rewards = np.random.default_rng(0).normal(size=(4, 6))
    first = preferred_pairs(TEXTS, PROMPTS, rewards, 30, 0.3, seed=7)
    assert first == preferred_pairs(TEXTS, PROMPTS, rewards, 30, 0.3, seed=7)
    assert first != preferred_pairs(TEXTS, PROMPTS, rewards, 30, 0.3, seed=8)


def test_top_k_pairs_a_prompt_only_with_its_k_best_predicted_workflows() -> None:
    rewards = np.tile(np.arange(6.0), (4, 1))  # every prompt: workflow 5 best, then 4, ...
    examples = preferred_pairs(TEXTS, PROMPTS, rewards, 400, 100.0, seed=3, top_k=2)
    assert {e.workflow_text for e in examples} == {TEXTS[4], TEXTS[5]}  # hot, yet only two
    assert effective_choices(rewards, 100.0, top_k=2) == pytest.approx([2, 2, 2, 2], rel=1e-3)
    ties = preferred_pairs(TEXTS, PROMPTS, np.zeros((4, 6)), 400, 1.0, seed=3, top_k=2)
    assert {e.workflow_text for e in ties} == set(TEXTS)  # a tie with the k-th is kept
    assert preferred_pairs(TEXTS, PROMPTS, rewards, 30, 0.3, seed=7, top_k=6) == (
        preferred_pairs(TEXTS, PROMPTS, rewards, 30, 0.3, seed=7)
    )
    with pytest.raises(ExampleError, match="top_k must be >= 0"):
        preferred_pairs(TEXTS, PROMPTS, rewards, 8, 1.0, seed=0, top_k=-1)


def test_capped_pairs_keep_at_most_the_share_and_draw_the_excess_again() -> None:
    """Pairs of the capped workflows beyond ``floor(share * pairs)``, chosen by the seed,
    take the fallback's pair at their place; the others, and a share already met, stay."""
    rewards = np.tile(np.arange(6.0), (4, 1))  # workflows 4 and 5 best for every prompt
    pairs = preferred_pairs(TEXTS, PROMPTS, rewards, 40, 0.5, seed=1, top_k=2)
    fallback = preferred_pairs(TEXTS[:4], PROMPTS, rewards[:, :4], 40, 0.5, seed=1, top_k=2)
    capped = {TEXTS[4], TEXTS[5]}
    assert all(e.workflow_text in capped for e in pairs)  # uncapped: only those two
    kept = capped_pairs(pairs, fallback, capped, 0.29, seed=0)  # floor(11.6) = 11
    assert sum(e.workflow_text in capped for e in kept) == 11
    assert [e.prompt for e in kept] == [e.prompt for e in pairs]
    assert all(a in (b, c) for a, b, c in zip(kept, pairs, fallback, strict=True))
    other = capped_pairs(pairs, fallback, capped, 0.29, seed=1)
    assert other != kept and sum(e.workflow_text in capped for e in other) == 11
    assert capped_pairs(pairs, fallback, capped, 0.0, seed=0) == fallback
    assert capped_pairs(pairs, fallback, capped, 1.0, seed=0) == pairs
    assert capped_pairs(pairs, fallback, set(), 0.0, seed=0) == pairs  # nothing to cap


def test_capped_pairs_refuse_a_fallback_that_does_not_fit() -> None:
    rewards = np.zeros((4, 6))
    pairs = preferred_pairs(TEXTS, PROMPTS, rewards, 8, 1.0, seed=0)
    with pytest.raises(ExampleError, match="fallback must match pairs"):
        capped_pairs(pairs, pairs[:4], set(TEXTS), 0.5, seed=0)
    with pytest.raises(ExampleError, match="same prompts"):
        capped_pairs(pairs, preferred_pairs(TEXTS, PROMPTS, rewards, 8, 1.0, 9), set(), 0.5, 0)
    with pytest.raises(ExampleError, match="other workflows than the capped"):
        capped_pairs(pairs, pairs, set(TEXTS), 0.5, seed=0)
    with pytest.raises(ExampleError, match=r"share must be in \[0, 1\]"):
        capped_pairs(pairs, pairs, set(TEXTS), -0.1, seed=0)


@pytest.mark.parametrize(
    ("rewards", "pairs", "temperature", "message"),
    [
        (np.zeros((4, 5)), 8, 1.0, "rewards must be"),
        (np.full((4, 6), np.nan), 8, 1.0, "finite"),
        (np.zeros((4, 6)), 0, 1.0, "pairs"),
        (np.zeros((4, 6)), 8, 0.0, "temperature"),
    ],
)
def test_bad_pairing_input_is_refused(
    rewards: NDArray[np.float64], pairs: int, temperature: float, message: str
) -> None:
    with pytest.raises(ExampleError, match=message):
        preferred_pairs(TEXTS, PROMPTS, rewards, pairs, temperature, seed=0)


def test_effective_choices_count_the_workflows_a_prompt_is_paired_with() -> None:
    assert effective_choices(np.zeros((2, 6)), 0.5) == pytest.approx([6, 6])
    assert effective_choices(_favourites(2, 6, 50.0), 1.0) == pytest.approx([1, 1])
    uneven = effective_choices(_favourites(1, 6, 1.0), 1.0)[0]
    assert 1 < uneven < 6


def test_settings_name_what_is_wrong(tmp_path: Path) -> None:
    out = str(tmp_path / "p")
    with pytest.raises(SFTError, match="pairing must be one of random, ensemble"):
        SFTRunConfig(out_dir=out, pairing="best")
    with pytest.raises(SFTError, match="needs reward_dir"):
        SFTRunConfig(out_dir=out, pairing="ensemble")
    with pytest.raises(SFTError, match="pairing_temperature"):
        SFTRunConfig(out_dir=out, pairing_temperature=0.0)
    with pytest.raises(SFTError, match="pairing_top_k must be >= 0"):
        SFTRunConfig(out_dir=out, pairing_top_k=-1)
    with pytest.raises(RunConfigError, match=r"sft\.pairing"):
        SFTStageConfig(pairing="ensembles")


def test_ensemble_rewards_are_the_ensembles_reward_per_prompt(tmp_path: Path) -> None:
    catalog = load_catalog()
    config = RewardConfig(members=2, epochs=1, dim=8, hidden=16, holdout_workflows=0.0)
    train_ensemble(triplets(), tmp_path / "reward", config, catalog=catalog, encoder=FakeEncoder())
    texts = [*library_texts(150)[:5], "1 NotAClass"]
    table = ensemble_rewards(
        tmp_path / "reward", catalog, texts, PROMPTS[:3], progress=False, encoder=FakeEncoder()
    )
    ensemble = load_ensemble(tmp_path / "reward", catalog=catalog, encoder=FakeEncoder())
    assert table.shape == (3, 6)
    for row, prompt in zip(table, PROMPTS[:3], strict=True):
        assert row == pytest.approx(ensemble.predict([prompt] * len(texts), texts))
    assert (table[:, -1] == ensemble.floor).all() and len(set(table[:, 0])) == 3


def test_sft_pairs_by_the_ensemble_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table `ensemble_rewards` returns decides the pairs `run_sft` trains on (the
    scoring is swapped for a table in which every prompt prefers one workflow)."""
    one_favourite = FavouringEnsemble(3)
    monkeypatch.setattr("flowforge.policy.sft.ensemble_rewards", one_favourite)
    config = _ensemble_paired(tmp_path)
    run_sft(config, progress=False)
    record = read_run_config(config.out_dir)
    assert record is not None and one_favourite.reward_dirs == [str(tmp_path / "reward")]
    assert record["data"]["paired_workflows"] == 1
    assert record["data"]["library_pair_share"] == 1.0  # every pair: library workflow 3
    assert record["data"]["effective_workflows_per_prompt"]["p50"] == pytest.approx(1.0)
    assert record["config"]["pairing"] == "ensemble" and ensemble_paired(Path(config.out_dir))


def _judged_table(path: Path, rows: Sequence[tuple[str, str | None]]) -> Path:
    """A Parquet table with the columns `judged_designs` reads (text, error per row)."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    texts, errors = zip(*rows, strict=True)
    table = pa.table({"workflow_text": list(texts), "error": pa.array(errors, pa.string())})
    pq.write_table(table, path)
    return path


def test_judged_designs_are_the_distinct_designs_judged_without_error(tmp_path: Path) -> None:
    first = _judged_table(
        tmp_path / "1.parquet", [("a", None), ("b", "render failed"), ("a", None)]
    )
    second = _judged_table(tmp_path / "2.parquet", [("c", None), ("a", None), ("b", None)])
    assert judged_designs([str(first)]) == ["a"]
    assert judged_designs([str(first), str(second)]) == ["a", "c", "b"]
    with pytest.raises(SFTError, match="is not a file"):
        judged_designs([str(tmp_path / "missing.parquet")])


def test_judged_designs_join_the_candidates_the_ensemble_pairs_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A judged design (not in the library) that the ensemble prefers for every prompt is
    what every pair teaches; one judged with an error is no candidate."""
    library = library_texts(40)
    design = library[0].replace("steps=", "steps=1", 1)  # a new design: 10x the steps
    assert design not in library and "steps=1" in design
    broken = library[1].replace("cfg=", "cfg=1", 1)
    judged = _judged_table(tmp_path / "judged.parquet", [(design, None), (broken, "failed")])
    prefers_the_last = FavouringEnsemble(-1)
    candidates = prefers_the_last.offered
    monkeypatch.setattr("flowforge.policy.sft.ensemble_rewards", prefers_the_last)
    config = _ensemble_paired(tmp_path, (str(judged),))
    run_sft(config, progress=False)
    record = read_run_config(config.out_dir)
    assert record is not None
    assert candidates[-1] == design and broken not in candidates
    assert record["data"]["judged_designs"] == 1 and record["data"]["paired_workflows"] == 1
    assert record["data"]["library_pair_share"] == 0.0  # every pair: the judged design
    assert record["data"]["library_workflows"] == len(set(library))
    assert SFTRunConfig.from_json(record["config"]) == config


def test_library_share_zero_pairs_only_new_judged_designs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`library_share = 0` leaves the judged designs that are not library
    workflows: a library workflow judged by a probe is no candidate either, whatever the
    ensemble thinks of it."""
    library = library_texts(40)
    design = library[0].replace("steps=", "steps=1", 1)
    judged = _judged_table(tmp_path / "judged.parquet", [(library[2], None), (design, None)])
    prefers_the_first = FavouringEnsemble(0)
    offered = prefers_the_first.offered
    monkeypatch.setattr("flowforge.policy.sft.ensemble_rewards", prefers_the_first)
    config = replace(_ensemble_paired(tmp_path, (str(judged),)), library_share=0.0)
    texts, examples, stats = sft_examples(config, load_catalog())
    assert texts == offered == [design]
    assert {e.workflow_text for e in examples} == {design}
    assert stats["library_pair_share"] == 0.0 and stats["judged_designs"] == 1
    with_library = sft_examples(replace(config, library_share=1.0), load_catalog())
    assert {e.workflow_text for e in with_library[1]} == {library[0]}  # the first candidate
    assert with_library[2]["library_pair_share"] == 1.0
    only_library = _judged_table(tmp_path / "old.parquet", [(library[3], None)])
    with pytest.raises(SFTError, match="no workflow to pair with"):
        sft_examples(replace(config, designs=(str(only_library),)), load_catalog())
    with pytest.raises(SFTError, match="library_share < 1 needs designs"):
        replace(config, designs=())
    with pytest.raises(SFTError, match="library_share < 1 needs designs and ensemble"):
        replace(config, pairing="random")
    with pytest.raises(SFTError, match=r"library_share must be in \[0, 1\]"):
        replace(config, library_share=1.5)


def test_a_library_share_caps_the_library_pairs_the_rest_go_to_new_designs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every prompt preferring a library workflow, `library_share = 0.25` keeps a
    quarter of the pairs on it and draws the rest again for the same prompts among the
    judged designs; the candidates and the prompts' order are those of the uncapped run."""
    library = library_texts(40)
    design = library[0].replace("steps=", "steps=1", 1)
    judged = _judged_table(tmp_path / "judged.parquet", [(design, None)])
    monkeypatch.setattr("flowforge.policy.sft.ensemble_rewards", FavouringEnsemble(0))
    uncapped = _ensemble_paired(tmp_path, (str(judged),))
    texts, examples, stats = sft_examples(replace(uncapped, library_share=0.25), load_catalog())
    plain_texts, plain, plain_stats = sft_examples(uncapped, load_catalog())
    assert texts == plain_texts and texts[-1] == design
    assert [e.prompt for e in examples] == [e.prompt for e in plain]
    assert Counter(e.workflow_text for e in examples) == {library[0]: 4, design: 12}
    assert stats["library_pair_share"] == 0.25 and plain_stats["library_pair_share"] == 1.0
    assert stats["library_share"] == 0.25 and stats["judged_designs"] == 1


def test_a_record_from_before_judged_designs_resumes(tmp_path: Path) -> None:
    """A finished SFT run recorded before `designs` existed is the same run as one with
    none (`flowforge.settings.added_setting`), not a run with other settings."""
    config = SFTRunConfig(out_dir=str(tmp_path / "p"), pairs=16, library_size=40, train=TINY_TRAIN)
    first = run_sft(config, progress=False)
    path = tmp_path / "p" / "flowforge_run.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    del record["config"]["designs"]
    path.write_text(json.dumps(record), encoding="utf-8")
    again = run_sft(config, progress=False)
    assert again.resumed and again.steps == first.steps
    with pytest.raises(SFTError, match="designs"):
        run_sft(replace(config, designs=(str(tmp_path / "judged.parquet"),)), progress=False)


def test_a_record_of_the_retired_library_candidates_setting_resumes(tmp_path: Path) -> None:
    """Session 36's SFT records hold ``library_candidates`` (session 37's `library_share`):
    ``true`` is the default's run (resumed, read back by `from_json`); ``false`` paired
    otherwise, so it is refused by name (`flowforge.settings.RETIRED`)."""
    config = SFTRunConfig(out_dir=str(tmp_path / "p"), pairs=16, library_size=40, train=TINY_TRAIN)
    first = run_sft(config, progress=False)
    path = tmp_path / "p" / "flowforge_run.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    del record["config"]["library_share"]
    record["config"]["library_candidates"] = True
    path.write_text(json.dumps(record), encoding="utf-8")
    again = run_sft(config, progress=False)
    assert again.resumed and again.steps == first.steps
    assert SFTRunConfig.from_json(record["config"]) == config
    record["config"]["library_candidates"] = False
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(SFTError, match=r"other settings \(library_candidates\)"):
        run_sft(config, progress=False)


def test_a_moved_sft_run_is_the_same_run(tmp_path: Path) -> None:
    """An SFT run moved with the run around it (its judged designs too) is found finished
    at its new place instead of refused for other settings."""
    library = library_texts(40)
    old, new = tmp_path / "a" / "run", tmp_path / "b" / "copy"
    old.mkdir(parents=True)
    _judged_table(old / "judged.parquet", [(library[0].replace("steps=", "steps=1", 1), None)])

    def config(root: Path) -> SFTRunConfig:
        designs = (str(root / "judged.parquet"),)
        return SFTRunConfig(str(root / "p"), 16, 40, train=TINY_TRAIN, designs=designs)

    first = run_sft(config(old), progress=False)
    new.parent.mkdir()
    old.rename(new)
    again = run_sft(config(new), progress=False)
    assert again.resumed and again.steps == first.steps


def test_a_randomly_paired_policy_owes_no_judged_data(tmp_path: Path) -> None:
    (tmp_path / "flowforge_run.json").write_text(
        json.dumps({"kind": "sft", "config": {"pairing": "random"}}), encoding="utf-8"
    )
    assert not ensemble_paired(tmp_path)
    assert not ensemble_paired(tmp_path / "missing")
