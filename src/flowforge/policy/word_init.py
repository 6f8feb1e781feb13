"""Prompt-word embeddings of a new tiny policy, from a pretrained sentence encoder.

Why: the paper's policy is an LLM, which arrives knowing that "puppy" and "dog" mean nearly
the same. flowforge's tiny default policy starts from random embeddings and reads prompts
as whole words (docs/policy.md); SFT pairs workflows with random prompts, so nothing before
GRPO teaches it what a prompt word means, and GRPO meets each train prompt about once. What
GRPO learns about one prompt then cannot carry over to a prompt that says the same in other
words. Starting each prompt word's embedding row from the encoder's embedding of that word
gives the tiny model the LLM's prior at almost no cost: similar words start close together.

How: each prompt word of the vocabulary (``" cat"`` -> ``"cat"``) is encoded by the sentence
encoder the reward ensemble reads prompts with (MiniLM, 384-d; `default_encoder`), centred,
projected on its leading principal components down to the model width (PCA keeps the most
of the words' geometry that fits), and scaled so its entries have the standard deviation of
the model's initial weights (`initializer_range`): the rest of the network sees inputs of
the scale it was initialised for. Workflow tokens and specials keep their random rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from transformers import PreTrainedModel

from flowforge.reward.backbone import TextEncoder

from .tokenizer import PolicyTokenizer


def word_vectors(
    words: Sequence[str], encoder: TextEncoder, width: int, std: float
) -> NDArray[np.float32]:
    """(len(words), width) rows: the encoder's embeddings of `words`, centred, reduced to
    their `width` leading principal components (zero-padded if the encoder is narrower than
    `width` or there are fewer words), scaled to entries of standard deviation `std`."""
    if not words:
        return np.zeros((0, width), np.float32)
    embedded = np.asarray(encoder.encode([word.strip() or word for word in words]), np.float64)
    centred = embedded - embedded.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    kept = min(width, s.size)
    reduced = np.zeros((len(words), width))
    reduced[:, :kept] = u[:, :kept] * s[:kept]
    spread = reduced.std()
    if spread > 0:
        reduced *= std / spread
    return reduced.astype(np.float32)


def init_prompt_word_embeddings(
    model: PreTrainedModel, tokenizer: PolicyTokenizer, encoder: TextEncoder, std: float
) -> int:
    """Overwrite the input embedding rows of `tokenizer`'s prompt words with `word_vectors`
    (a tied output head shares them); returns how many rows were set."""
    words = [w for w in tokenizer.vocab.prompt_words if w in tokenizer.atom_ids]
    ids = [tokenizer.atom_ids[w] for w in words]
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, torch.nn.Embedding):
        raise TypeError(f"{type(model).__name__} has no token embedding table")
    weight = embedding.weight
    vectors = word_vectors(words, encoder, int(weight.shape[1]), std)
    with torch.no_grad():
        weight[ids] = torch.from_numpy(vectors).to(weight.dtype)
    return len(ids)
