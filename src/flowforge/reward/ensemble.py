"""The trained ensemble as GRPO and the designer use it: (prompt, workflow text) -> reward.

`RewardEnsemble.predict(prompts, workflows)` is the policy's `RewardScorer` contract
(``policy/design.py``): one float per pair, higher is better, ``mean - kappa * std`` over
the members for a valid workflow and the fixed `floor` for a text that does not parse or
validate against the catalog. `predict_detail` returns everything behind it (per-member
scores, mean, std, reward, and why a text is invalid). `predict_table` is `predict` on every
pair of P prompts and D workflows, the grid ensemble pairing reads (``policy/sft.py``).

Speed (GRPO calls this a lot): each distinct workflow text is parsed, validated and
tokenized once and kept in an LRU cache (`design_cache` entries); prompt embeddings are
cached per text by the encoder; a batch is then a few padded tensors and one forward per
member, in chunks of `chunk` pairs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..workflow.schema import Catalog, default_catalog
from .backbone import Backbone, Design, HFBackbone, MiniLMBackbone, TextEncoder
from .config import RewardConfig
from .metrics import member_stats, penalized_reward
from .model import MemberNet, cpu_threads
from .store import SavedModel, TrainingSet, load_state, read_model
from .target import TrainingScore

Floats = NDArray[np.float64]


@dataclass(frozen=True)
class RewardPrediction:
    """Predictions for N pairs. Invalid pairs: NaN member scores, mean and std; floor reward."""

    members: Floats  # (N, K) each member's predicted training score
    mean: Floats  # (N,)
    std: Floats  # (N,) population std over members
    reward: Floats  # (N,) mean - kappa * std, or the floor
    errors: tuple[str | None, ...]  # why each text is invalid, None when valid

    @property
    def valid(self) -> NDArray[np.bool_]:
        return np.array([error is None for error in self.errors], dtype=bool)


class RewardEnsemble:
    """K frozen members, their backbone, and the scoring settings (module docstring)."""

    def __init__(
        self,
        config: RewardConfig,
        backbone: Backbone,
        members: Sequence[nn.Module],
        training_score: TrainingScore,
        training_set: TrainingSet,
        catalog: Catalog | None = None,
        *,
        design_cache: int = 200_000,
        chunk: int = 4096,
    ) -> None:
        if len(members) != config.members:
            raise ValueError(f"{len(members)} members given, the config says {config.members}")
        self.config = config
        self.backbone = backbone
        self.members = list(members)
        for member in self.members:
            member.eval()
        self.training_score = training_score
        self.training_set = training_set
        self.catalog = catalog if catalog is not None else default_catalog()
        self._designs: OrderedDict[str, Design] = OrderedDict()
        self._design_cache = design_cache
        self._chunk = chunk

    @property
    def kappa(self) -> float:
        return self.config.kappa

    @property
    def floor(self) -> float:
        return self.config.floor

    def with_scoring(
        self, kappa: float | None = None, floor: float | None = None
    ) -> RewardEnsemble:
        """The same members with other scoring settings (checked like any config) and an
        empty design cache."""
        config = replace(
            self.config,
            kappa=self.config.kappa if kappa is None else kappa,
            floor=self.config.floor if floor is None else floor,
        )
        return RewardEnsemble(
            config,
            self.backbone,
            self.members,
            self.training_score,
            self.training_set,
            self.catalog,
            design_cache=self._design_cache,
            chunk=self._chunk,
        )

    def design(self, text: str) -> Design:
        """The text read once (parsed, validated, tokenized), from the LRU cache if there."""
        found = self._designs.get(text)
        if found is not None:
            self._designs.move_to_end(text)
            return found
        design = self.backbone.design(text, self.catalog)
        self._designs[text] = design
        if len(self._designs) > self._design_cache:
            self._designs.popitem(last=False)
        return design

    def clear_design_cache(self) -> None:
        """Forget every design read so far (benchmarks; memory)."""
        self._designs.clear()

    def predict(self, prompts: Sequence[str], workflows: Sequence[str]) -> list[float]:
        """The reward of each (prompt, workflow text) pair: the policy's RewardScorer."""
        return [float(r) for r in self.predict_detail(prompts, workflows).reward]

    def predict_detail(self, prompts: Sequence[str], workflows: Sequence[str]) -> RewardPrediction:
        """Per-member scores, mean, std, reward and validity of each pair."""
        if len(prompts) != len(workflows):
            raise ValueError(f"{len(prompts)} prompts but {len(workflows)} workflows")
        designs = [self.design(text) for text in workflows]
        valid = [i for i, design in enumerate(designs) if design.valid]
        members = np.full((len(designs), len(self.members)), np.nan)
        for start in range(0, len(valid), self._chunk):
            index = valid[start : start + self._chunk]
            members[index] = self.member_scores(
                [prompts[i] for i in index], [designs[i] for i in index]
            )
        mean, std = member_stats(members)
        reward = np.where(np.isnan(mean), self.floor, penalized_reward(mean, std, self.kappa))
        return RewardPrediction(members, mean, std, reward, tuple(d.error for d in designs))

    def predict_table(
        self,
        prompts: Sequence[str],
        workflows: Sequence[str],
        *,
        block: int = 65_536,
        progress: Callable[[int], None] | None = None,
    ) -> Floats:
        """(P, D) rewards: ``predict`` of every (prompt, workflow) pair, up to float rounding.

        Why not `predict` row by row: with the MiniLM backbone each member's workflow
        vector (token bag, norm, MLP) and prompt vector are computed once for the whole
        table instead of once per pair, and only the head runs per pair, `block` pairs at a
        time, its first layer as one matrix product per prompt (`MemberNet.score_table`);
        on the refine rounds' re-paired SFT (1,330 prompts x 4,406 workflows, 10
        members) that was most of the pairing's time (docs/benchmarks.md, "Ensemble
        pairing's table"). An HF backbone reads each pair as one sequence, so it goes row
        by row. `progress` is called with the number of prompts each step finished."""
        if block < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        table = np.full((len(prompts), len(workflows)), self.floor)
        designs = [self.design(text) for text in workflows]
        valid = [i for i, design in enumerate(designs) if design.valid]
        if not prompts or not valid:
            if progress is not None and prompts:
                progress(len(prompts))
            return table
        if not isinstance(self.backbone, MiniLMBackbone):
            for row, prompt in enumerate(prompts):
                table[row] = self.predict_detail([prompt] * len(workflows), workflows).reward
                if progress is not None:
                    progress(1)
            return table
        nets = [m for m in self.members if isinstance(m, MemberNet)]
        assert len(nets) == len(self.members)  # the MiniLM backbone's members
        t = self.backbone.tensors(prompts, [designs[i] for i in valid])
        rows = max(1, block // len(valid))  # prompts per step
        with torch.inference_mode(), cpu_threads(self.config.threads):
            # each member's (D, dim) workflow and (P, dim) prompt vectors, in table order
            w = [m.workflow_vectors(t["rows"], t["weights"])[t["design_index"]] for m in nets]
            p = [m.prompt_vectors(t["prompt"])[t["prompt_index"]] for m in nets]
            for start in range(0, len(prompts), rows):
                stop = min(start + rows, len(prompts))
                columns = [  # (prompts, designs) pairs in row-major order
                    m.score_table(pm[start:stop], wm).reshape(-1)
                    for m, pm, wm in zip(nets, p, w, strict=True)
                ]
                members = torch.stack(columns, dim=1).double().numpy()
                mean, std = member_stats(members)
                reward = penalized_reward(mean, std, self.kappa)
                table[start:stop, valid] = reward.reshape(stop - start, len(valid))
                if progress is not None:
                    progress(stop - start)
        return table

    def member_scores(self, prompts: Sequence[str], designs: Sequence[Design]) -> Floats:
        """(N, K) predictions of every member for valid designs (one batch)."""
        tensors = self.backbone.tensors(prompts, designs)
        with torch.inference_mode(), cpu_threads(self.config.threads):
            columns = [member(**tensors) for member in self.members]
        return torch.stack(columns, dim=1).double().numpy()


def load_ensemble(
    directory: Path | str,
    *,
    catalog: Catalog | None = None,
    encoder: TextEncoder | None = None,
    kappa: float | None = None,
    floor: float | None = None,
) -> RewardEnsemble:
    """A saved ensemble (`store.py`), optionally with other `kappa` / `floor` settings.

    `catalog` decides which workflows are valid (default: the shipped one; pass your
    server's); `encoder` replaces the MiniLM prompt encoder (tests). Never unpickles.
    """
    saved = read_model(Path(directory))
    backbone = _backbone(saved, encoder)
    members = []
    for index, state in enumerate(saved.member_states):
        member = backbone.new_member(pretrained=False)
        load_state(saved.directory, member, state, index)
        members.append(member)
    ensemble = RewardEnsemble(
        saved.config, backbone, members, saved.training_score, saved.training_set, catalog
    )
    return ensemble.with_scoring(kappa, floor) if (kappa, floor) != (None, None) else ensemble


def _backbone(saved: SavedModel, encoder: TextEncoder | None) -> Backbone:
    if saved.vocab is not None:
        return MiniLMBackbone(saved.config, saved.vocab, encoder)
    assert saved.backbone_dir is not None  # read_model guarantees one of the two
    try:
        return HFBackbone(saved.config, saved.backbone_dir)
    except (OSError, ValueError) as error:
        from .store import RewardModelError

        message = " ".join(str(error).split())
        raise RewardModelError(f"{saved.directory}: cannot read its backbone ({message})") from None


def describe(ensemble: RewardEnsemble) -> dict[str, Any]:
    """A short JSON-ready description (for logs and the eval report)."""
    return {
        "backbone": ensemble.config.backbone,
        "members": ensemble.config.members,
        "kappa": ensemble.kappa,
        "floor": ensemble.floor,
        "training_scorers": list(ensemble.training_score.names),
        "training_prompts": len(ensemble.training_set.prompts),
        "training_designs": len(ensemble.training_set.designs),
    }
