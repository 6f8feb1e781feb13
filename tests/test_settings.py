"""Settings added after runs exist leave a run's identity alone while at their default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flowforge.evaluate.config import EvalConfig
from flowforge.pipeline.config import RefineStageConfig, RunConfig
from flowforge.policy.checkpoint import RunDirError, open_run
from flowforge.policy.grpo import GRPORunConfig
from flowforge.settings import added_defaults, added_setting, moved_paths, to_json


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


def test_refines_judged_design_pairing_is_a_default_that_counts_in_the_stage_key() -> None:
    # sft_designs and sft_top_k changed results when they became the default (session 20),
    # so they are no added settings: a run made before them redoes its refine stage
    # so did probes = 2 (session 31): a run made before it redoes its refine stage.
    # sft_model (session 35) and sft_library_share (session 37) were added settings until
    # their defaults changed (session 38: 160 wide, share 0): a run made before redoes its
    # re-paired SFT (test_run_pipeline: the refine stage resumes, its rounds kept)
    assert added_defaults(RefineStageConfig) == {}
    refine = RunConfig().section("refine")
    assert refine["sft_library_share"] == 0.0
    assert refine["sft_model"]["hidden_size"] == 160
    assert refine["probes"] == 2
    assert (refine["sft_designs"], refine["sft_top_k"]) == (True, 16)
    # likewise samples = 8 (session 22): the rounds judge other designs, so a run made
    # with 4 redoes its refine stage (and its evaluation) rather than resuming it
    assert refine["samples"] == 8


def test_a_moved_runs_paths_are_read_under_its_new_root() -> None:
    recorded = {
        "out": "/a/run/refine/round-2/grpo",
        "sft_dir": "/a/run/refine/round-2/sft",
        "library_dir": "/a/run/library/workflows",
        "designs": ["/a/run/refine/round-1/judged.parquet"],
        "elsewhere": "/a/runs/other",  # shares a prefix of characters, not of the root
        "steps": 200,
    }
    moved = moved_paths(recorded, recorded["out"], "/b/copy/refine/round-2/grpo")
    assert moved == {
        "out": "/b/copy/refine/round-2/grpo",
        "sft_dir": "/b/copy/refine/round-2/sft",
        "library_dir": "/b/copy/library/workflows",
        "designs": ["/b/copy/refine/round-1/judged.parquet"],
        "elsewhere": "/a/runs/other",
        "steps": 200,
    }
    assert moved_paths(recorded, recorded["out"], recorded["out"]) == recorded
    # the run directory itself renamed: only what lies inside it moves with it
    renamed = moved_paths({"out": "/a/grpo", "sft_dir": "/a/grpo/sft"}, "/a/grpo", "/a/grpo2")
    assert renamed == {"out": "/a/grpo2", "sft_dir": "/a/grpo2/sft"}


def test_a_run_moved_half_done_resumes_and_other_inputs_are_still_refused(
    tmp_path: Path,
) -> None:
    """A killed GRPO run copied to a new place with the run around it resumes there (its
    inputs moved with it); an input that really changed is still another run."""
    old, new = tmp_path / "a" / "run", tmp_path / "b" / "copy"

    def config(root: Path, sft: str = "sft") -> dict[str, object]:
        return {"out": str(root / "grpo"), "sft_dir": str(root / sft), "steps": 3}

    assert not open_run(old / "grpo", "grpo", config(old))
    new.parent.mkdir()
    old.rename(new)
    assert not open_run(new / "grpo", "grpo", config(new))  # not finished, no error
    with pytest.raises(RunDirError, match="sft_dir"):
        open_run(new / "grpo", "grpo", config(new, "sft-2"))


def test_the_guidance_choice_on_all_validation_prompts_counts_in_the_evaluate_key() -> None:
    # select_prompts went from 50 to all 247 (session 32): it changes which w is chosen,
    # so a run evaluated before redoes its evaluation instead of reading the old report
    assert added_defaults(EvalConfig) == {}
    base = RunConfig()
    assert base.section("evaluate")["select_prompts"] is None
    fifty = dataclasses.replace(
        base, evaluate=dataclasses.replace(base.evaluate, select_prompts=50)
    )
    assert fifty.section("evaluate") != base.section("evaluate")
