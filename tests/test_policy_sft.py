"""SFT runs (TRL): config saved, training moves the model, resume, and the ComfyGen-FT data."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
import torch
from policy_helpers import TINY, library_texts, tiny_tokenizer

from flowforge.policy.config import ComfyGenFTConfig, SFTError, SFTRunConfig, TrainSettings
from flowforge.policy.design import load_designer
from flowforge.policy.examples import (
    Example,
    ExampleError,
    ScoreBins,
    library_pairs,
    scored_examples,
    seed_means,
    tokenize_examples,
    training_score,
)
from flowforge.policy.model import build_tiny_model, load_policy, read_run_config
from flowforge.policy.sft import run_comfygen_ft, run_sft

TRAIN = TrainSettings(
    model=TINY, batch_size=8, learning_rate=5e-3, save_steps=3, logging_steps=3, seed=0
)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> SFTRunConfig:
    out = tmp_path_factory.mktemp("sft") / "policy"
    config = SFTRunConfig(out_dir=str(out), pairs=48, library_size=60, train=TRAIN)
    result = run_sft(config, progress=False)
    assert result.steps == 6 and not result.resumed
    return config


def _mean_loss(model: torch.nn.Module, config: SFTRunConfig) -> float:
    _, tokenizer = load_policy(config.out_dir)
    examples = [Example("a cat", text) for text in library_texts(60)[:8]]
    data = tokenize_examples(tokenizer, examples, 384)
    losses = []
    with torch.no_grad():
        for ids, mask in zip(data.input_ids, data.completion_mask, strict=True):
            labels = torch.tensor([i if m else -100 for i, m in zip(ids, mask, strict=True)])
            losses.append(float(model(input_ids=torch.tensor([ids]), labels=labels[None]).loss))
    return sum(losses) / len(losses)


def test_sft_run_saves_its_resolved_config(sft_run: SFTRunConfig) -> None:
    record = read_run_config(sft_run.out_dir)
    assert record is not None and record["kind"] == "sft" and record["finished"]
    assert SFTRunConfig.from_json(record["config"]) == sft_run
    assert record["data"]["examples"] == 48 and record["data"]["library_workflows"] == 60
    assert "trl" in record["versions"] and record["result"]["steps"] == 6
    assert (Path(sft_run.out_dir) / "model.safetensors").is_file()


def test_sft_changes_the_parameters_and_lowers_the_loss(sft_run: SFTRunConfig) -> None:
    trained, tokenizer = load_policy(sft_run.out_dir)
    initial = build_tiny_model(tokenizer, TINY, seed=TRAIN.seed).eval()
    moved = [
        not torch.equal(a, b)
        for a, b in zip(trained.parameters(), initial.parameters(), strict=True)
    ]
    assert all(moved)
    assert _mean_loss(trained, sft_run) < _mean_loss(initial, sft_run)


def test_finished_run_is_returned_and_other_settings_are_refused(sft_run: SFTRunConfig) -> None:
    again = run_sft(sft_run, progress=False)
    assert again.resumed and again.steps == 6
    with pytest.raises(SFTError, match="pairs"):
        run_sft(replace(sft_run, pairs=64), progress=False)


def test_killed_run_resumes_from_its_last_checkpoint(sft_run: SFTRunConfig, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(sft_run.out_dir, copy)
    (copy / "model.safetensors").unlink()  # as if killed after checkpoint-3
    shutil.rmtree(copy / "checkpoints" / "checkpoint-6")
    record = json.loads((copy / "flowforge_run.json").read_text())
    (copy / "flowforge_run.json").write_text(json.dumps({**record, "finished": False}))
    result = run_sft(replace(sft_run, out_dir=str(copy)), progress=False)
    assert result.resumed and result.steps == 6
    assert (copy / "model.safetensors").is_file()


def test_foreign_directory_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SFTError, match="exists and is not a sft run; choose an empty --out"):
        run_sft(SFTRunConfig(out_dir=str(tmp_path), pairs=8, library_size=40, train=TRAIN))


def test_a_mistyped_input_leaves_nothing_that_refuses_the_corrected_run(
    sft_run: SFTRunConfig, tmp_path: Path
) -> None:
    """A missing library or start policy fails before the run's record is written, so the
    same --out takes the corrected command (it was refused as "other settings")."""
    out = tmp_path / "policy"
    typo = replace(sft_run, out_dir=str(out), library_dir=str(tmp_path / "typo"))
    with pytest.raises(ValueError, match="not a directory"):
        run_sft(typo, progress=False)
    ft = ComfyGenFTConfig(
        out_dir=str(out),
        triplets=str(_triplets(tmp_path / "triplets.parquet")),
        score_names=("aesthetic", "alignment"),
        train=TRAIN,
        init_from=str(tmp_path / "typo"),
    )
    with pytest.raises(SFTError, match="no policy to start from"):
        run_comfygen_ft(ft, progress=False)
    assert not out.exists()
    result = run_comfygen_ft(replace(ft, init_from=sft_run.out_dir), progress=False)
    assert result.policy_dir == out and not result.resumed


def test_pairing_visits_every_workflow_before_repeating_one() -> None:
    texts = [f"w{k}" for k in range(10)]
    pairs = library_pairs(texts, ["p1", "p2"], 25, seed=0)
    counts = {text: sum(p.workflow_text == text for p in pairs) for text in texts}
    assert set(counts.values()) <= {2, 3} and sum(counts.values()) == 25
    assert {p.prompt for p in pairs} == {"p1", "p2"}


# --- ComfyGen-FT ------------------------------------------------------------------------------
def _triplets(path: Path, count: int = 40, texts: list[str] | None = None) -> Path:
    texts = texts or library_texts(60)
    rows = []
    for k in range(count):
        scores = {"aesthetic": k / count, "alignment": 0.5, "heldout_preference": 1 - k / count}
        rows.append(
            {
                "item": k,
                "prompt_id": f"p{k % 4}",
                "prompt": f"a photo of thing {k % 4}",
                "negative": "",
                "workflow_hash": f"h{k}",
                "workflow_api": "{}",
                "workflow_text": texts[k % len(texts)],
                "seed": k,
                "judge_id": "synthetic",
                **{f"score_{name}": value for name, value in scores.items()},
                "error": None,
                "attempts": 1,
                "judged_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            }
        )
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_score_bins_are_quantiles_and_the_top_bin_holds_the_best() -> None:
    bins = ScoreBins.fit([k / 100 for k in range(100)], 10)
    assert bins.bins == 10
    assert bins.bin_of(0.0) == 0 and bins.bin_of(0.99) == 9 and bins.bin_of(0.55) == 5
    with pytest.raises(ExampleError, match="cannot fill"):
        ScoreBins.fit([0.1, 0.2], 10)


def test_training_score_never_guesses_a_missing_name() -> None:
    assert training_score({"a": 0.2, "b": 0.4}, ["a", "b"]) == pytest.approx(0.3)
    with pytest.raises(ExampleError, match="no score 'preference'"):
        training_score({"a": 0.2}, ["a", "preference"])


def test_comfygen_ft_examples_carry_the_score_token() -> None:
    rows = [("a cat", library_texts()[k], {"s": k / 20}) for k in range(20)]
    examples, bins = scored_examples(rows, ["s"], 10)
    assert [e.score_bin for e in examples[:4]] == [0, 0, 1, 1] and examples[-1].score_bin == 9
    tokenizer = tiny_tokenizer()
    data = tokenize_examples(tokenizer, examples[-1:], 384)
    tokens = tokenizer.hf.convert_ids_to_tokens(data.input_ids[0][:3])
    assert tokens == ["<bos>", "<score_9>", " a"]
    assert bins.edges == tuple(sorted(bins.edges))


def test_comfygen_ft_trains_on_triplets_and_asks_for_the_top_bin(tmp_path: Path) -> None:
    table = _triplets(tmp_path / "triplets.parquet")
    config = ComfyGenFTConfig(
        out_dir=str(tmp_path / "ft"),
        triplets=str(table),
        score_names=("aesthetic", "alignment"),
        train=replace(TRAIN, save_steps=100),
    )
    result = run_comfygen_ft(config, progress=False)
    record = read_run_config(result.policy_dir)
    assert record is not None and record["kind"] == "comfygen_ft"
    assert len(record["data"]["score_bin_edges"]) == 9 and result.examples == 40
    assert ComfyGenFTConfig.from_json(record["config"]) == config
    assert load_designer(result.policy_dir).score_bin == 9
    with pytest.raises(SFTError, match="score_names"):
        ComfyGenFTConfig(out_dir="x", triplets="y", score_names=())


def test_seed_means_make_one_example_of_a_pairs_seeds() -> None:
    rows = [
        ("a cat", "w1", {"s": 0.2, "t": 1.0}),
        ("a dog", "w1", {"s": 0.9}),
        ("a cat", "w1", {"s": 0.4, "t": 3.0}),
        ("a cat", "w2", {"s": 0.7}),
    ]
    assert seed_means(rows) == [
        ("a cat", "w1", {"s": pytest.approx(0.3), "t": pytest.approx(2.0)}),
        ("a dog", "w1", {"s": 0.9}),
        ("a cat", "w2", {"s": 0.7}),
    ]


def test_comfygen_ft_fine_tunes_the_policy_it_is_given(
    sft_run: SFTRunConfig, tmp_path: Path
) -> None:
    """With `init_from` the baseline starts from that policy's weights and tokenizer: at
    a vanishing learning rate it ends where it started (a new model would not)."""
    config = ComfyGenFTConfig(
        out_dir=str(tmp_path / "ft"),
        triplets=str(_triplets(tmp_path / "triplets.parquet")),
        score_names=("aesthetic", "alignment"),
        train=replace(TRAIN, learning_rate=1e-12, weight_decay=0.0, save_steps=100),
        init_from=sft_run.out_dir,
    )
    result = run_comfygen_ft(config, progress=False)
    start, start_tokenizer = load_policy(sft_run.out_dir)
    tuned, tuned_tokenizer = load_policy(result.policy_dir)
    assert tuned_tokenizer.vocab == start_tokenizer.vocab
    for (name, a), (_, b) in zip(
        start.state_dict().items(), tuned.state_dict().items(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-8), name
    assert ComfyGenFTConfig.from_json(read_run_config(result.policy_dir)["config"]) == config
    with pytest.raises(SFTError, match=r"init_from and train\.base_model"):
        replace(config, train=replace(TRAIN, base_model="somewhere"))


def test_comfygen_ft_refuses_a_start_whose_vocabulary_cannot_write_the_data(
    sft_run: SFTRunConfig, tmp_path: Path
) -> None:
    text = library_texts(60)[0]
    unseen = text.replace("filename_prefix=flowforge", "filename_prefix=never_seen_value")
    assert unseen != text
    config = ComfyGenFTConfig(
        out_dir=str(tmp_path / "ft"),
        triplets=str(_triplets(tmp_path / "t.parquet", texts=[unseen, *library_texts(60)[1:]])),
        score_names=("aesthetic", "alignment"),
        train=TRAIN,
        init_from=sft_run.out_dir,
    )
    with pytest.raises(SFTError, match="vocabulary cannot write a training workflow"):
        run_comfygen_ft(config, progress=False)
    # refused before the run's record: the same --out takes a corrected command
    out = tmp_path / "ft"
    assert not out.exists() or not any(out.iterdir())
