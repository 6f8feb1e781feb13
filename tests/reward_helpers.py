"""Tiny reward-model ingredients: a fake sentence encoder, synthetic triplets, a tiny HF model.

The fake encoder makes MiniLM-path tests run in milliseconds without loading MiniLM; the
synthetic scores are a known, learnable function of a design's checkpoint, steps and LoRAs
and of the prompt, so that a few epochs visibly lower the loss.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from flowforge.data.export import Triplet
from flowforge.workflow.library import build_library, load_seed_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import to_text

CATALOG = default_catalog()
SCORERS = ("aesthetic", "alignment", "preference", "heldout_preference")


def _unit(text: str, salt: str) -> float:
    digest = hashlib.blake2b((salt + text).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class FakeEncoder:
    """Deterministic unit vectors per text (384-d), counting the texts it was asked for."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls += 1
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vector = np.random.default_rng(seed).normal(size=384)
            rows.append(vector / np.linalg.norm(vector))
        return np.asarray(rows, np.float32).reshape(len(texts), 384)


@cache
def design_texts(size: int = 60) -> tuple[str, ...]:
    entries = build_library(load_seed_library(), CATALOG, size, 0)
    return tuple(to_text(entry.workflow, CATALOG)[0] for entry in entries)


def _quality(prompt: str, text: str) -> float:
    """A known utility: checkpoint and steps matter, LoRAs depend on the prompt."""
    ckpt = next(w for w in text.split() if w.startswith("ckpt_name="))
    steps = [int(w.split("=")[1]) for w in text.split() if w.startswith("steps=")]
    side = 1.0 if _unit(prompt, "side") < 0.5 else -1.0
    lora = side * text.count("LoraLoader")
    return 3.0 * _unit(ckpt, "ckpt") - 1.5 + 0.02 * (steps[0] if steps else 0) + 0.5 * lora


def triplets(prompts: int = 24, per_prompt: int = 20, seeds: int = 1) -> list[Triplet]:
    """Synthetic judged triplets over the tiny library (four scorers, seed noise)."""
    texts = design_texts()
    out = []
    for p in range(prompts):
        prompt = f"test prompt number {p} about {['cats', 'cities', 'robots'][p % 3]}"
        for j in range(per_prompt):
            text = texts[(p * 7 + j) % len(texts)]
            for seed in range(seeds):
                u = _quality(prompt, text)
                scores = {
                    name: 1
                    / (1 + math.exp(-(u + 0.3 * (_unit(f"{prompt}{text}{seed}", name) - 0.5))))
                    for name in SCORERS
                }
                out.append(_triplet(prompt, text, seed, scores))
    return out


def _triplet(prompt: str, text: str, seed: int, scores: dict[str, float] | None) -> Triplet:
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return Triplet(
        prompt_id=prompt,
        prompt=prompt,
        negative="",
        workflow_hash=digest,
        workflow_text=text,
        workflow_api="{}",
        seed=seed,
        judge_id="test-judge",
        scores=scores,
        error=None if scores is not None else "render: failed",
    )


def tiny_hf_backbone(directory: Path, texts: Sequence[str]) -> Path:
    """A randomly initialised 2-layer BERT and a word-level tokenizer fitted on `texts`,
    saved like a pretrained model (safetensors), for the ``hf:<dir>`` path on a CPU."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=special))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(str(directory))
    fast.save_pretrained(str(directory))
    return directory
