"""Meaning tokens: the prompt's sentence embedding, quantised into tokens the policy reads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from policy_helpers import CATALOG, library_texts, train_prompts

from flowforge.judge.sim.embed import PromptEncoder
from flowforge.policy import meaning as meaning_module
from flowforge.policy.meaning import (
    MeaningCodec,
    MeaningError,
    cluster_token,
    fit_meaning,
    meaning_token,
    spherical_kmeans,
)
from flowforge.policy.tokenizer import load_tokenizer, new_tokenizer
from flowforge.policy.vocab import VocabConfig, VocabError, fit_vocab


def _codec(prompts: list[str], dims: int = 3, bins: int = 4) -> MeaningCodec:
    return fit_meaning(prompts, dims, bins, PromptEncoder(disk=False))


def test_bins_are_equally_filled_over_the_prompts_they_were_fitted_on() -> None:
    prompts = train_prompts()[:200]
    codec = _codec(prompts)
    codes = np.array([codec.code(v) for v in PromptEncoder(disk=False).encode(prompts)])
    assert codes.shape == (200, 3) and codes.min() == 0 and codes.max() == 3
    for dim in range(3):
        counts = np.bincount(codes[:, dim], minlength=4)
        assert counts.min() >= 40, counts  # 50 each, give or take ties at an edge


def test_a_paraphrase_shares_most_of_its_code_and_an_unrelated_prompt_does_not() -> None:
    codec = _codec(train_prompts(), dims=8, bins=5)
    encoder = PromptEncoder(disk=False)
    texts = [
        "a photorealistic portrait of an old fisherman, studio lighting",
        "studio-lit photo portrait of an elderly fisherman, realistic",
        "pixel art of a castle on a floating island, 16-bit game sprite",
    ]
    first, paraphrase, other = (codec.code(v) for v in encoder.encode(texts))
    same = sum(a == b for a, b in zip(first, paraphrase, strict=True))
    unlike = sum(a == b for a, b in zip(first, other, strict=True))
    assert same > unlike


def test_a_code_does_not_depend_on_the_prompts_encoded_with_it() -> None:
    prompts = train_prompts()[:100]
    codec = _codec(prompts)
    encoder = PromptEncoder(disk=False)
    together = [codec.code(v) for v in encoder.encode(prompts)]
    alone = [codec.code(encoder.encode([p])[0]) for p in prompts]
    assert together == alone


def test_the_tokenizer_writes_one_meaning_token_per_component_before_the_words(
    tmp_path: Path,
) -> None:
    config = VocabConfig(meaning_dims=4, meaning_bins=3)
    vocab = fit_vocab(library_texts(), train_prompts(), CATALOG, config, PromptEncoder(tmp_path))
    tokenizer = new_tokenizer(vocab)
    segment = tokenizer.prompt_segment("a red cat", score_bin=2)
    ids = tokenizer.hf(segment, add_special_tokens=False)["input_ids"]
    tokens = tokenizer.hf.convert_ids_to_tokens(ids)
    assert tokens[:2] == ["<bos>", "<score_2>"] and tokens[-4:] == [" a", " red", " cat", "<sep>"]
    meaning = tokens[2:6]
    assert [t.split("_")[0] for t in meaning] == ["<m0", "<m1", "<m2", "<m3"]
    assert all(tokenizer.roles(tokenizer.atom_ids[t]) == {"special"} for t in meaning)
    assert tokenizer.encode_segment(segment) == ids  # the backend agrees with the wrapper
    tokenizer.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.vocab == vocab and again.prompt_segment("a red cat", score_bin=2) == segment


def test_without_meaning_the_layout_is_unchanged() -> None:
    vocab = fit_vocab(library_texts(), train_prompts(), CATALOG)
    assert vocab.meaning is None and "meaning" not in vocab.to_json()
    assert new_tokenizer(vocab).prompt_segment("a cat") == "<bos> a cat<sep>"
    assert meaning_token(0, 0) not in vocab.specials


def test_each_train_prompt_reads_the_cluster_whose_centroid_is_nearest() -> None:
    prompts = train_prompts()[:300]
    encoder = PromptEncoder(disk=False)
    codec = fit_meaning(prompts, 0, 5, encoder, clusters=12)
    assert (codec.dims, codec.clusters) == (0, 12)
    vectors = np.asarray(encoder.encode(sorted(set(prompts))), np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    centroids = np.asarray(codec.centroids)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1.0)
    clusters = [codec.cluster(v) for v in vectors]
    assert clusters == (vectors @ centroids.T).argmax(axis=1).tolist()
    assert sorted(set(clusters)) == list(range(12))  # no empty cluster
    # Each centroid is the mean direction of its prompts (k-means converged).
    for k in range(12):
        mean = vectors[np.array(clusters) == k].sum(axis=0)
        assert np.allclose(centroids[k], mean / np.linalg.norm(mean), atol=1e-6)
    # Deterministic: a refit groups the prompts the same way (its floats may differ in the
    # last bit: numpy's sums round with the arrays' memory alignment).
    again = fit_meaning(prompts, 0, 5, encoder, clusters=12)
    assert [again.cluster(v) for v in vectors] == clusters


def test_k_means_reseeds_a_cluster_left_empty() -> None:
    # Four copies of two points: k-means++ must still return 3 centroids, each with points.
    rows = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)
    centroids = spherical_kmeans(rows, 3)
    assigned = (rows @ centroids.T).argmax(axis=1)
    assert centroids.shape == (3, 2) and len(set(assigned.tolist())) >= 2
    assert spherical_kmeans(rows, 0).shape == (0, 2)


def test_k_means_of_identical_rows_seeds_distinct_rows_and_refuses_too_many_clusters() -> None:
    rows = np.ones((5, 3))
    centroids = spherical_kmeans(rows, 4, seed=3)
    assert centroids.shape == (4, 3) and np.allclose(centroids, 1 / np.sqrt(3))
    with pytest.raises(ValueError, match="k <= 5"):
        spherical_kmeans(rows, 6)


def test_prompts_sharing_a_cluster_are_closer_than_prompts_that_do_not() -> None:
    prompts = sorted(set(train_prompts()))
    encoder = PromptEncoder(disk=False)
    codec = fit_meaning(prompts, 0, 5, encoder, clusters=16)
    vectors = np.asarray(encoder.encode(prompts), np.float64)
    clusters = np.array([codec.cluster(v) for v in vectors])
    cosines = vectors @ vectors.T
    same = clusters[:, None] == clusters[None, :]
    off_diagonal = ~np.eye(len(prompts), dtype=bool)
    assert cosines[same & off_diagonal].mean() > cosines[~same].mean() + 0.1


def test_the_tokenizer_writes_the_cluster_token_after_the_component_tokens(
    tmp_path: Path,
) -> None:
    config = VocabConfig(meaning_dims=2, meaning_bins=3, meaning_clusters=6)
    vocab = fit_vocab(library_texts(), train_prompts(), CATALOG, config, PromptEncoder(tmp_path))
    assert vocab.meaning is not None and vocab.meaning.clusters == 6
    assert [cluster_token(k) for k in range(6)] == list(vocab.specials[-6:])
    tokenizer = new_tokenizer(vocab)
    segment = tokenizer.prompt_segment("a red cat")
    tokens = tokenizer.hf.convert_ids_to_tokens(tokenizer.encode_segment(segment))
    assert tokens[0] == "<bos>" and tokens[-4:] == [" a", " red", " cat", "<sep>"]
    assert [t[:3] for t in tokens[1:3]] == ["<m0", "<m1"] and tokens[3].startswith("<c")
    tokenizer.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.vocab == vocab and again.prompt_segment("a red cat") == segment
    only = fit_vocab(
        library_texts(),
        train_prompts(),
        CATALOG,
        VocabConfig(meaning_clusters=4),
        PromptEncoder(tmp_path),
    )
    tokens = new_tokenizer(only).prompt_segment("a red cat")
    assert tokens.startswith("<bos><c") and "<m0" not in tokens


def test_a_codec_with_clusters_round_trips_and_a_bad_one_is_refused() -> None:
    codec = fit_meaning(train_prompts()[:100], 2, 3, PromptEncoder(disk=False), clusters=3)
    assert MeaningCodec.from_json(codec.to_json()) == codec
    broken = {**codec.to_json(), "centroids": [codec.centroids[0][:5]]}
    with pytest.raises(MeaningError, match="shapes"):
        MeaningCodec.from_json(broken)
    without = fit_meaning(train_prompts()[:100], 2, 3, PromptEncoder(disk=False))
    assert "centroids" not in without.to_json()


def test_bad_meaning_settings_are_refused() -> None:
    with pytest.raises(VocabError, match="meaning_dims"):
        VocabConfig(meaning_dims=-1)
    with pytest.raises(VocabError, match="meaning_bins"):
        VocabConfig(meaning_dims=2, meaning_bins=1)
    with pytest.raises(VocabError, match="meaning_clusters"):
        VocabConfig(meaning_clusters=1)
    with pytest.raises(VocabError, match="distinct prompts"):
        fit_vocab(
            library_texts(),
            ["a cat", "a dog", "a cow"],
            CATALOG,
            VocabConfig(meaning_clusters=2),
            PromptEncoder(disk=False),
        )
    with pytest.raises(VocabError, match="distinct prompts"):
        fit_vocab(
            library_texts(),
            ["a cat", "a dog"],
            CATALOG,
            VocabConfig(meaning_dims=4),
            PromptEncoder(disk=False),
        )
    vocab = fit_vocab(library_texts(), train_prompts(), CATALOG)
    codec = _codec(train_prompts()[:50])
    with pytest.raises(VocabError, match="meaning codec"):
        replace(vocab, meaning=codec)


def test_the_shared_encoder_is_loaded_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []

    class Counting(PromptEncoder):
        def __init__(self) -> None:
            made.append(1)
            super().__init__(disk=False)

    monkeypatch.setattr(meaning_module, "_ENCODER", [])
    monkeypatch.setattr("flowforge.reward.backbone.default_encoder", Counting)
    first, second = meaning_module.shared_encoder(), meaning_module.shared_encoder()
    assert first is second and made == [1]


def test_runs_made_before_meaning_tokens_keep_their_identity() -> None:
    from flowforge.settings import to_json

    assert "meaning_dims" not in to_json(VocabConfig(), identity=True)
    assert "meaning_clusters" not in to_json(VocabConfig(), identity=True)
    assert to_json(VocabConfig(meaning_dims=8), identity=True)["meaning_dims"] == 8


def test_an_sft_run_with_meaning_tokens_trains_saves_and_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[sft.train.vocab] meaning_dims` reaches a new SFT run: the saved tokenizer carries the
    codec, a loaded policy reads a prompt with its tokens, and it samples through them
    (a letter-count encoder stands in for MiniLM, for speed)."""
    from policy_helpers import TINY

    from flowforge.policy.config import SFTRunConfig, TrainSettings
    from flowforge.policy.model import load_policy
    from flowforge.policy.sample import sample_workflows
    from flowforge.policy.sft import run_sft

    class Letters:
        def encode(self, texts: list[str]) -> np.ndarray:
            rows = np.zeros((len(texts), 26), np.float32)
            for i, text in enumerate(texts):
                for char in text.lower():
                    if "a" <= char <= "z":
                        rows[i, ord(char) - ord("a")] += 1
            return rows

    monkeypatch.setattr(meaning_module, "_ENCODER", [Letters()])
    vocab = VocabConfig(meaning_dims=3, meaning_bins=4)
    train = TrainSettings(model=TINY, vocab=vocab, batch_size=8, save_steps=3, seed=0)
    config = SFTRunConfig(out_dir=str(tmp_path / "p"), pairs=16, library_size=40, train=train)
    run_sft(config, progress=False)
    model, tokenizer = load_policy(config.out_dir)
    assert tokenizer.vocab.meaning is not None and tokenizer.vocab.meaning.dims == 3
    ids = tokenizer.encode_segment(tokenizer.prompt_segment("a red cat"))
    meaning_ids = {tokenizer.atom_ids[t] for t in tokenizer.vocab.meaning.tokens()}
    assert len([i for i in ids if i in meaning_ids]) == 3 and ids[0] == tokenizer.bos_id
    samples = sample_workflows(model, tokenizer, ["a red cat"], n=2, seed=0, max_new_tokens=48)
    assert len(samples) == 2
