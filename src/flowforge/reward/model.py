"""One ensemble member as a torch module: (prompt, workflow) -> predicted training score.

Two backbones (``RewardConfig.backbone``):

- `MemberNet` (``minilm-frozen``, the CPU default). The prompt arrives as its frozen MiniLM
  sentence embedding (384-d, cached per text, so unseen prompts are placed by meaning); a
  learned projection makes it p. The workflow arrives as weighted tokens
  (`features.workflow_tokens`), summed by an ``EmbeddingBag`` and passed through a layer
  norm and a small MLP: w. The head, an MLP over ``[p, w, p * w]``, reads the workflow's own
  quality (w), the prompt's baseline (p) and their interaction (p * w: "this LoRA suits
  this prompt"). A few hundred thousand parameters; trains in seconds per epoch on a CPU.
- `HFMemberNet` (``hf:<dir>``, the GPU path). Any Hugging Face encoder reads
  "prompt [SEP] workflow text" as one sequence; the mean of its last hidden states over the
  real tokens goes through a linear regression head. The backbone is fine-tuned.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from threadpoolctl import threadpool_limits
from torch import Tensor, nn


class MemberNet(nn.Module):
    """Frozen-MiniLM prompt embedding + workflow token bag -> score (module docstring)."""

    def __init__(
        self, vocab_size: int, prompt_dim: int, dim: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="sum", padding_idx=0)
        nn.init.normal_(self.bag.weight, std=0.02)
        with torch.no_grad():
            self.bag.weight[0].zero_()
        self.workflow = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.prompt = nn.Sequential(nn.Linear(prompt_dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.head = nn.Sequential(
            nn.Linear(3 * dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def forward(
        self,
        prompt: Tensor,
        rows: Tensor,
        weights: Tensor,
        prompt_index: Tensor,
        design_index: Tensor,
    ) -> Tensor:
        """Scores of B pairs of P distinct prompts and D distinct designs -> (B,).

        prompt (P, 384) embeddings; rows, weights (D, L) token rows and weights (row 0 and
        weight 0 pad); prompt_index, design_index (B,) the pair's prompt and design. Each
        prompt and design is encoded once however many pairs share it (GRPO groups).
        """
        w = self.workflow_vectors(rows, weights)[design_index]  # (B, dim)
        p = self.prompt_vectors(prompt)[prompt_index]  # (B, dim)
        return self.score(p, w)

    # The three parts of `forward`, apart so that a table of P prompts by D designs
    # (`RewardEnsemble.predict_table`) encodes each prompt and design once, not P x D times.
    def workflow_vectors(self, rows: Tensor, weights: Tensor) -> Tensor:
        """w of D designs: token rows and weights (D, L) -> (D, dim)."""
        out: Tensor = self.workflow(self.bag(rows, per_sample_weights=weights))
        return out

    def prompt_vectors(self, prompt: Tensor) -> Tensor:
        """p of P prompts: embeddings (P, 384) -> (P, dim)."""
        out: Tensor = self.prompt(prompt)
        return out

    def score(self, p: Tensor, w: Tensor) -> Tensor:
        """The head on B (p, w) pairs, (B, dim) each -> (B,)."""
        out: Tensor = self.head(torch.cat([p, w, p * w], dim=-1)).squeeze(-1)
        return out

    def score_table(self, p: Tensor, w: Tensor) -> Tensor:
        """The head on every pair of P prompts and D designs, (P, dim) and (D, dim) ->
        (P, D): `score` up to float rounding, without building the (P, D, 3 dim) input.
        The head's first layer is split over [p, w, p * w]: its p part is computed once
        per prompt, and its w and p * w parts are one (dim, hidden) matrix per prompt,
        ``diag(p) W_pw^T + W_w^T``, applied to all D designs in one batched product."""
        first = self.head[0]
        assert isinstance(first, nn.Linear)
        on_p, on_w, on_pw = torch.split(first.weight, p.shape[1], dim=1)  # (hidden, dim) each
        per_prompt = p @ on_p.T + first.bias  # (P, hidden)
        # w's part and p * w's part as one matrix per prompt: w @ (diag(p) on_pw^T + on_w^T)
        per_pair = p[:, :, None] * on_pw.T[None] + on_w.T[None]  # (P, dim, hidden)
        wide = w.expand(len(p), *w.shape)  # (P, D, dim), a view
        hidden = torch.baddbmm(per_prompt[:, None, :], wide, per_pair)  # (P, D, hidden)
        out: Tensor = self.head[1:](hidden).squeeze(-1)
        return out


class HFMemberNet(nn.Module):
    """A Hugging Face encoder over "prompt [SEP] workflow text" + a linear head -> score."""

    def __init__(self, backbone: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **extra: Tensor) -> Tensor:
        """Token ids and mask (B, T) (plus e.g. token_type_ids) -> (B,)."""
        outputs: Any = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra)
        hidden = outputs.last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
        out: Tensor = self.head(pooled).squeeze(-1)
        return out


@contextmanager
def cpu_threads(threads: int) -> Iterator[None]:
    """Run with `threads` intra-op threads in torch and in numpy's BLAS, restoring the
    caller's settings afterwards.

    numpy's too because the numpy Llama samples the policies (GRPO, the evaluation, the
    refine rounds): OpenBLAS starts a worker per core, and beside another stage process on
    this 2-core machine that worker spun on the busy core (39% of a core in GRPO's stage
    process) as torch's OpenMP threads did (docs/evaluation.md, "Threads")."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)
