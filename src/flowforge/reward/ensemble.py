"""The trained ensemble as GRPO and the designer use it: (prompt, workflow text) -> reward.

`RewardEnsemble.predict(prompts, workflows)` is the policy's `RewardScorer` contract
(``policy/design.py``): one float per pair, higher is better, ``mean - kappa * std`` over
the members for a valid workflow and the fixed `floor` for a text that does not parse or
validate against the catalog. `predict_detail` returns everything behind it (per-member
scores, mean, std, reward, and why a text is invalid).

Speed (GRPO calls this a lot): each distinct workflow text is parsed, validated and
tokenized once and kept in an LRU cache (`design_cache` entries); prompt embeddings are
cached per text by the encoder; a batch is then a few padded tensors and one forward per
member, in chunks of `chunk` pairs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
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
from .model import cpu_threads
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
