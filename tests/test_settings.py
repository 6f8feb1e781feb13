"""Settings added after runs exist leave a run's identity alone while at their default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from flowforge.pipeline.config import RunConfig
from flowforge.policy.grpo import GRPORunConfig
from flowforge.settings import added_defaults, added_setting, to_json


@dataclass(frozen=True)
class Inner:
    old: int = 1
    new: tuple[str, ...] = added_setting(("a",))


@dataclass(frozen=True)
class Outer:
    path: Path = Path("x")
    inner: Inner = field(default_factory=Inner)
    switch: bool = added_setting(False)


def test_an_added_setting_at_its_default_is_left_out_and_counts_once_changed() -> None:
    assert to_json(Outer(), identity=True) == {"path": "x", "inner": {"old": 1}}
    assert to_json(Outer()) == {"path": "x", "inner": {"old": 1, "new": ["a"]}, "switch": False}
    changed = Outer(inner=Inner(new=("b",)), switch=True)
    assert to_json(changed, identity=True) == {
        "path": "x",
        "inner": {"old": 1, "new": ["b"]},
        "switch": True,
    }
    assert added_defaults(Outer) == {"switch": False}
    assert added_defaults(Inner) == {"new": ["a"]}


def test_grpo_prompt_contrast_is_an_added_setting_of_the_stage_keys() -> None:
    # runs made before prompt_contrast existed keep their GRPO and refine stages
    assert added_defaults(GRPORunConfig) == {"prompt_contrast": 0.0}
    base = RunConfig()
    assert "prompt_contrast" not in base.section("grpo")
    contrast = dataclasses.replace(base.grpo, prompt_contrast=0.5)
    assert dataclasses.replace(base, grpo=contrast).section("grpo")["prompt_contrast"] == 0.5
    # the run's own record still holds every setting
    assert base.to_json()["grpo"]["prompt_contrast"] == 0.0
