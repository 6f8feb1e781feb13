"""Prompt-word embeddings from a sentence encoder: scale, geometry, which rows change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from policy_helpers import TINY, tiny_tokenizer

from flowforge.judge.sim.embed import PromptEncoder
from flowforge.policy.config import SFTRunConfig, TrainSettings
from flowforge.policy.model import PolicyModelConfig, build_tiny_model, load_policy, read_run_config
from flowforge.policy.sft import run_sft
from flowforge.policy.word_init import init_prompt_word_embeddings, word_vectors

TOKENIZER = tiny_tokenizer()


class LetterEncoder:
    """A deterministic stand-in encoder: counts of each letter a-z (26-d)."""

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        rows = np.zeros((len(texts), 26), np.float32)
        for i, text in enumerate(texts):
            for char in text:
                if "a" <= char <= "z":
                    rows[i, ord(char) - ord("a")] += 1
        return rows


def test_word_vectors_have_the_width_and_scale_asked_for() -> None:
    words = [" cat", " cats", " dog", " bird", " red", " blue", " tree"]
    wide = word_vectors(words, LetterEncoder(), 32, 0.02)  # wider than the encoder: padded
    assert wide.shape == (7, 32) and wide.dtype == np.float32
    assert wide.std() == pytest.approx(0.02, rel=1e-5)
    assert np.all(wide[:, 26:] == 0)
    narrow = word_vectors(words, LetterEncoder(), 4, 0.1)
    assert narrow.shape == (7, 4) and narrow.std() == pytest.approx(0.1, rel=1e-5)
    assert word_vectors([], LetterEncoder(), 8, 0.02).shape == (0, 8)


def test_pca_keeps_the_encoder_geometry_when_it_fits() -> None:
    words = [" cat", " cats", " dog", " bird", " red", " blue", " tree"]
    encoded = LetterEncoder().encode(words).astype(np.float64)
    vectors = word_vectors(words, LetterEncoder(), 32, 0.02).astype(np.float64)

    def distances(rows: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.linalg.norm(rows[:, None] - rows[None], axis=-1)

    ratio = distances(vectors) / np.where(distances(encoded) == 0, 1, distances(encoded))
    off_diagonal = ratio[~np.eye(len(words), dtype=bool)]
    assert np.allclose(off_diagonal, off_diagonal[0], rtol=1e-4)  # one scale for all pairs


def test_only_prompt_word_rows_change() -> None:
    before = build_tiny_model(TOKENIZER, TINY, seed=1)
    after = build_tiny_model(TOKENIZER, TINY, seed=1)
    count = init_prompt_word_embeddings(after, TOKENIZER, LetterEncoder(), TINY.initializer_range)
    words = TOKENIZER.vocab.prompt_words
    assert count == len(words) > 0
    prompt_ids = {TOKENIZER.atom_ids[w] for w in words}
    old = before.get_input_embeddings().weight
    new = after.get_input_embeddings().weight
    for token_id in range(len(TOKENIZER)):
        same = torch.equal(old[token_id], new[token_id])
        assert same != (token_id in prompt_ids), TOKENIZER.token_text(token_id)
    expected = word_vectors(list(words), LetterEncoder(), TINY.hidden_size, 0.02)
    ids = [TOKENIZER.atom_ids[w] for w in words]
    assert torch.equal(new[ids], torch.from_numpy(expected))


def test_minilm_places_related_words_together(tmp_path: Path) -> None:
    words = [" dog", " dogs", " puppy", " car", " truck", " painting", " red", " city"]
    vectors = word_vectors(words, PromptEncoder(tmp_path), 128, 0.02)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    dog, dogs, puppy, car, truck = 0, 1, 2, 3, 4
    assert similarity[dog, dogs] > similarity[dog, car]
    assert similarity[dog, puppy] > similarity[dog, truck]
    assert similarity[car, truck] > similarity[car, puppy]


def test_unknown_word_init_is_refused() -> None:
    with pytest.raises(ValueError, match="prompt_word_init"):
        PolicyModelConfig(prompt_word_init="glove")


def test_sft_starts_its_prompt_words_from_the_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prompt_word_init = "minilm"` reaches a new SFT run (encoder swapped for speed): with a
    learning rate too small to move them, the saved prompt-word rows are the encoder's."""
    monkeypatch.setattr("flowforge.policy.sft.default_encoder", LetterEncoder)
    model = replace(TINY, prompt_word_init="minilm")
    train = TrainSettings(model=model, batch_size=8, learning_rate=1e-12, save_steps=3, seed=0)
    config = SFTRunConfig(out_dir=str(tmp_path / "p"), pairs=16, library_size=40, train=train)
    run_sft(config, progress=False)
    trained, tokenizer = load_policy(config.out_dir)
    words = list(tokenizer.vocab.prompt_words)
    rows = trained.get_input_embeddings().weight[[tokenizer.atom_ids[w] for w in words]]
    expected = word_vectors(words, LetterEncoder(), model.hidden_size, model.initializer_range)
    assert torch.allclose(rows, torch.from_numpy(expected), atol=1e-6)
    saved = read_run_config(config.out_dir)
    assert saved is not None
    assert saved["config"]["train"]["model"]["prompt_word_init"] == "minilm"
