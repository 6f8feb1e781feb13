"""``flowforge run``'s orchestration: skipping, redoing and resuming stages (tiny fake
stages; the real ``--quick`` run end to end is in test_cli_pipeline.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

import flowforge.pipeline.refine as refine_module
import flowforge.pipeline.runner as runner
import flowforge.pipeline.stages as stages_module
from flowforge.pipeline.config import (
    KEPT_POLICY_MODEL,
    REPAIRED_SFT_SETTINGS,
    CollectStageConfig,
    LibraryStageConfig,
    RunConfig,
    RunConfigError,
    load_run_config,
    quick_config,
)
from flowforge.pipeline.overrides import ConfigFileError
from flowforge.pipeline.refine import RefinePaths, refit_sft
from flowforge.pipeline.runner import (
    RUN_FILE,
    RunError,
    read_marker,
    run_lock,
    run_pipeline,
    stage_key,
)
from flowforge.pipeline.stages import STAGES, Stage, StageContext
from flowforge.pipeline.workers import execute
from flowforge.policy.checkpoint import run_record, write_json
from flowforge.policy.sft import SFTResult


class Killed(RuntimeError):
    """Stands in for a process killed in the middle of a stage."""


class FakeStages:
    """Three stages: a (library), b (collect, resumable, reads a), c (reward, reads b).
    Each appends to RUN/<name>/log.txt; `kill` makes one stop half-way."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.kill: str | None = None

    def stage(self, name: str, section: str, inputs: tuple[str, ...], resumable: bool) -> Stage:
        def run(ctx: StageContext) -> dict[str, Any]:
            self.calls.append(name)
            folder = ctx.path(name)
            folder.mkdir(parents=True, exist_ok=True)
            log = folder / "log.txt"
            before = log.read_text() if log.is_file() else ""
            log.write_text(before + "started\n")
            if self.kill == name:
                raise Killed(name)
            log.write_text(log.read_text() + "finished\n")
            ctx.say("halfway")
            ctx.say(f"{name}: says its own name")
            return {"lines": log.read_text().count("\n")}

        return Stage(name, (section,), inputs, resumable, run)

    def all(self) -> list[Stage]:
        return [
            self.stage("a", "library", (), False),
            self.stage("b", "collect", ("a",), True),
            self.stage("c", "reward", ("b",), False),
        ]


def in_order() -> RunConfig:
    """The quick config run stage after stage in this process (the fakes are closures)."""
    return dataclasses.replace(quick_config(), jobs=1)


def statuses(result: Any) -> list[str]:
    return [outcome.status for outcome in result.stages]


def test_a_finished_run_is_skipped_stage_by_stage(tmp_path: Path) -> None:
    fake = FakeStages()
    config = in_order()
    first = run_pipeline(config, tmp_path, stages=fake.all())
    assert statuses(first) == ["ran", "ran", "ran"] and fake.calls == ["a", "b", "c"]
    second = run_pipeline(config, tmp_path, stages=fake.all())
    assert statuses(second) == ["skipped"] * 3 and fake.calls == ["a", "b", "c"]
    assert [o.result for o in second.stages] == [o.result for o in first.stages]
    assert load_run_config(tmp_path / "config.json") == config  # the saved config reloads
    summary = json.loads((tmp_path / RUN_FILE).read_text())
    assert [s["stage"] for s in summary["stages"]] == ["a", "b", "c"]
    assert first.table is None  # no evaluation stage in this run


def test_a_stage_run_in_order_has_its_messages_labelled_as_in_its_own_process(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    run_pipeline(in_order(), tmp_path, stages=FakeStages().all()[:1], say=said.append)
    assert said[1:3] == ["a: halfway", "a: says its own name"]  # after "a: running"


def test_a_changed_section_redoes_its_stage_and_every_stage_after_it(tmp_path: Path) -> None:
    fake = FakeStages()
    config = in_order()
    run_pipeline(config, tmp_path, stages=fake.all())
    changed = dataclasses.replace(config, collect=CollectStageConfig(pairs=99, prompts=10))
    said: list[str] = []
    result = run_pipeline(changed, tmp_path, stages=fake.all(), say=said.append)
    assert statuses(result) == ["skipped", "ran", "ran"]
    # what is cleared, and why, is said: a setting, or a stage read that was redone
    cleared = [line for line in said if "earlier output cleared" in line]
    assert cleared == [
        "b: running from nothing, its earlier output cleared (settings changed: "
        "collect.pairs, collect.prompts)",
        "c: running from nothing, its earlier output cleared (a stage it reads was redone, "
        "or its prompt splits changed)",
    ]
    assert (tmp_path / "b" / "log.txt").read_text() == "started\nfinished\n"  # cleared first
    again = dataclasses.replace(changed, library=LibraryStageConfig(size=64))
    assert statuses(run_pipeline(again, tmp_path, stages=fake.all())) == ["ran"] * 3
    unrelated = dataclasses.replace(again, judge_opt=(("x", "1"),))  # no fake stage reads it
    assert statuses(run_pipeline(unrelated, tmp_path, stages=fake.all())) == ["skipped"] * 3


def test_a_killed_resumable_stage_resumes_and_a_killed_other_stage_restarts(
    tmp_path: Path,
) -> None:
    fake = FakeStages()
    config = in_order()
    fake.kill = "b"
    with pytest.raises(Killed):
        run_pipeline(config, tmp_path, stages=fake.all())
    marker = read_marker(tmp_path, "b")
    assert marker is not None and marker["status"] == "running"
    fake.kill = "c"
    with pytest.raises(Killed):
        run_pipeline(config, tmp_path, stages=fake.all())
    # b continued in its own directory (a collection journal would resume from it)
    assert (tmp_path / "b" / "log.txt").read_text() == "started\nstarted\nfinished\n"
    fake.kill = None
    result = run_pipeline(config, tmp_path, stages=fake.all())
    assert statuses(result) == ["skipped", "skipped", "ran"]
    # c is not resumable: its half-done output was cleared before it ran again
    assert (tmp_path / "c" / "log.txt").read_text() == "started\nfinished\n"


def test_a_changed_setting_restarts_a_killed_resumable_stage_from_nothing(
    tmp_path: Path,
) -> None:
    fake = FakeStages()
    fake.kill = "b"
    with pytest.raises(Killed):
        run_pipeline(in_order(), tmp_path, stages=fake.all())
    fake.kill = None
    changed = dataclasses.replace(in_order(), collect=CollectStageConfig(pairs=7))
    assert statuses(run_pipeline(changed, tmp_path, stages=fake.all())) == ["skipped", "ran", "ran"]
    assert (tmp_path / "b" / "log.txt").read_text() == "started\nfinished\n"


def test_a_change_in_only_the_settings_a_stage_rechecks_resumes_it_with_its_output(
    tmp_path: Path,
) -> None:
    # b rechecks collect.prompts itself (as refine rechecks its choice's settings): a change
    # in only that resumes b over its output; c, which reads b, is redone as always
    fake = FakeStages()
    stages = fake.all()
    stages[1] = dataclasses.replace(stages[1], rechecked=("collect.prompts",))
    config = in_order()
    run_pipeline(config, tmp_path, stages=stages)
    said: list[str] = []
    fewer = dataclasses.replace(config, collect=dataclasses.replace(config.collect, prompts=3))
    result = run_pipeline(fewer, tmp_path, stages=stages, say=said.append)
    assert statuses(result) == ["skipped", "resumed", "ran"]
    assert "b: resuming, its earlier output kept (settings changed: collect.prompts; it " in (
        "\n".join(said)
    )
    assert (tmp_path / "b" / "log.txt").read_text() == "started\nfinished\n" * 2  # kept
    assert statuses(run_pipeline(fewer, tmp_path, stages=stages)) == ["skipped"] * 3
    # another setting besides it, or a stage it reads redone: cleared, as any stage
    more = dataclasses.replace(fewer.collect, prompts=4, pairs=5)
    assert statuses(
        run_pipeline(dataclasses.replace(fewer, collect=more), tmp_path, stages=stages)
    ) == [
        "skipped",
        "ran",
        "ran",
    ]
    assert (tmp_path / "b" / "log.txt").read_text() == "started\nfinished\n"
    library = dataclasses.replace(fewer, collect=more, library=LibraryStageConfig(size=64))
    back = dataclasses.replace(library, collect=dataclasses.replace(more, prompts=6))
    assert statuses(run_pipeline(back, tmp_path, stages=stages)) == ["ran"] * 3
    assert (tmp_path / "b" / "log.txt").read_text() == "started\nfinished\n"
    # a stage that rechecks nothing is cleared by the same change
    plain = FakeStages().all()
    run_pipeline(config, tmp_path / "plain", stages=plain)
    assert statuses(run_pipeline(fewer, tmp_path / "plain", stages=plain)) == [
        "skipped",
        "ran",
        "ran",
    ]


def changed_keys(before: RunConfig, after: RunConfig, redone: str | None = None) -> set[str]:
    """The real stages whose own key differs between the configs, when stage `redone` (if
    any) also gets a new fingerprint (the other inputs' fingerprints held equal)."""
    old = {stage.name: "f" for stage in STAGES}
    new = old if redone is None else {**old, redone: "g"}
    return {
        stage.name
        for stage in STAGES
        if stage_key(stage, before, old) != stage_key(stage, after, new)
    }


@pytest.mark.parametrize(
    ("split", "redone"),
    [
        # A run collected before the validation split trained on today's validation prompts.
        ("train", {stage.name for stage in STAGES}),
        # GenEval's validation share moved held-out prompts: the choices and the evaluation.
        ("validation", {"refine", "evaluate"}),
        ("heldout", {"evaluate"}),
    ],
)
def test_a_new_prompt_split_redoes_the_stages_that_read_it(
    monkeypatch: pytest.MonkeyPatch, split: str, redone: set[str]
) -> None:
    config, fingerprints = quick_config(), {stage.name: "f" for stage in STAGES}
    before = {stage.name: stage_key(stage, config, fingerprints) for stage in STAGES}
    monkeypatch.setitem(runner.SPLIT_VERSIONS, split, "another")
    after = {stage.name: stage_key(stage, config, fingerprints) for stage in STAGES}
    assert {name for name in before if before[name] != after[name]} == redone


def test_training_stage_keys_are_those_of_runs_made_before_per_split_versions() -> None:
    # Before session 29 every stage keyed one version string, "2-validation"; the train
    # split has not moved since, so those runs' training stages must not be redone.
    config, fingerprints = quick_config(), {stage.name: "f" for stage in STAGES}
    sft = next(stage for stage in STAGES if stage.name == "sft")
    payload = {
        "stage": "sft",
        "splits": "2-validation",
        "sections": {name: config.section(name) for name in sft.sections},
        "inputs": {name: fingerprints[name] for name in sft.reads(config)},
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    assert stage_key(sft, config, fingerprints) == hashlib.sha256(text.encode()).hexdigest()


def test_each_real_stage_is_keyed_by_exactly_the_settings_it_reads() -> None:
    base = quick_config()
    evaluate = dataclasses.replace(base.evaluate, prompts=12)
    assert changed_keys(base, dataclasses.replace(base, evaluate=evaluate)) == {"evaluate"}
    ft = dataclasses.replace(base.comfygen_ft, enabled=False)
    off = {"comfygen_data", "comfygen_ft"}
    assert changed_keys(base, dataclasses.replace(base, comfygen_ft=ft)) == off
    # its grid is keyed by what is judged, not by how the baseline trains on it: a real
    # judge's grid is hours of rendering
    epochs = dataclasses.replace(base.comfygen_ft.train, epochs=1.0)
    trained = dataclasses.replace(base.comfygen_ft, train=epochs)
    assert changed_keys(base, dataclasses.replace(base, comfygen_ft=trained)) == {"comfygen_ft"}
    grid = dataclasses.replace(base.comfygen_ft.grid, workflows=20)
    bigger = dataclasses.replace(base.comfygen_ft, grid=grid)
    assert changed_keys(base, dataclasses.replace(base, comfygen_ft=bigger)) == off
    batches = dataclasses.replace(base.collect, batch_size=64)
    assert changed_keys(base, dataclasses.replace(base, collect=batches)) == {"collect"}
    seeds = dataclasses.replace(base.collect, seeds=1)
    assert changed_keys(base, dataclasses.replace(base, collect=seeds)) == {
        "collect",
        "comfygen_data",
    }
    # ComfyGen-FT starts from the SFT policy (`from_sft`): a new SFT fingerprint redoes it
    assert "sft" in {stage.name: stage.inputs for stage in STAGES}["comfygen_ft"]
    grpo = dataclasses.replace(base.grpo, steps=3)
    assert changed_keys(base, dataclasses.replace(base, grpo=grpo)) == {"grpo"}
    # a setting added later (flowforge.settings) keys its stages once it leaves its default
    contrast = dataclasses.replace(base.grpo, prompt_contrast=0.5)
    assert changed_keys(base, dataclasses.replace(base, grpo=contrast)) == {"grpo"}
    judged = {"library", "collect", "comfygen_data", "evaluate"}
    assert changed_keys(base, dataclasses.replace(base, judge="sim:1")) == judged
    assert changed_keys(base, dataclasses.replace(base, judge="sim:0")) == set()  # = "sim"
    # the judge's id keys the stages: options that do not change scores redo nothing
    cached = dataclasses.replace(base, judge_opt=(("cache_dir", "/tmp/elsewhere"),))
    assert changed_keys(base, cached) == set()
    assert changed_keys(base, dataclasses.replace(base, judge_opt=(("seed", "1"),))) == judged
    scorers = ("scorers", "aesthetic=laion/aesthetic")
    pool_a = dataclasses.replace(
        base, judge="comfyui", judge_opt=(("servers", "http://a:1"), scorers)
    )
    pool_b = dataclasses.replace(pool_a, judge_opt=(scorers, ("servers", "http://b:1")))
    assert changed_keys(pool_a, pool_b) == set()
    assert changed_keys(base, dataclasses.replace(base, threads=2)) == set()
    assert changed_keys(base, dataclasses.replace(base, sft_threads=None)) == set()
    assert changed_keys(base, dataclasses.replace(base, jobs=1)) == set()  # results the same


def keys_with_new(config: RunConfig, redone: str) -> set[str]:
    """The real stages whose key changes when stage `redone` gets a new fingerprint."""
    return changed_keys(config, config, redone)


def test_a_new_output_redoes_only_the_stages_that_read_it_under_this_config() -> None:
    refined = quick_config()
    base = dataclasses.replace(refined, refine=dataclasses.replace(refined.refine, enabled=False))
    # random pairing does not read the ensemble: a new ensemble leaves SFT (and ComfyGen-FT) be
    assert base.sft.pairing == "random"
    assert keys_with_new(base, "reward") == {"grpo", "evaluate"}
    paired = dataclasses.replace(base, sft=dataclasses.replace(base.sft, pairing="ensemble"))
    assert keys_with_new(paired, "reward") == {"sft", "grpo", "evaluate"}
    # ComfyGen-FT starts from SFT only with `from_sft`; disabled it reads nothing at all
    assert keys_with_new(base, "sft") == {"comfygen_ft", "grpo", "evaluate"}
    scratch = dataclasses.replace(base.comfygen_ft, from_sft=False)
    assert keys_with_new(dataclasses.replace(base, comfygen_ft=scratch), "sft") == {
        "grpo",
        "evaluate",
    }
    # the refine rounds read nothing while disabled; enabled, they follow GRPO (and so the
    # reward, collection and GRPO settings that redo GRPO)
    assert "refine" not in keys_with_new(base, "grpo")
    assert keys_with_new(refined, "grpo") == {"refine", "evaluate"}
    assert keys_with_new(refined, "sft") == {"comfygen_ft", "grpo", "refine", "evaluate"}
    assert changed_keys(base, refined) == {"refine"}
    off = dataclasses.replace(base, comfygen_ft=dataclasses.replace(scratch, enabled=False))
    assert "comfygen_ft" not in keys_with_new(off, "collect")
    assert "comfygen_ft" not in keys_with_new(off, "comfygen_data")
    assert keys_with_new(off, "library") == {"collect", "sft", "evaluate"}
    # ComfyGen-FT learns from its grid (the default) or from the triplets, never both
    assert base.comfygen_ft.data == "grid"
    assert keys_with_new(base, "comfygen_data") == {"comfygen_ft"}
    assert "comfygen_ft" not in keys_with_new(base, "collect")
    triplets = dataclasses.replace(
        base, comfygen_ft=dataclasses.replace(base.comfygen_ft, data="triplets")
    )
    assert "comfygen_ft" in keys_with_new(triplets, "collect")
    assert keys_with_new(triplets, "comfygen_data") == set()
    assert "comfygen_data" not in keys_with_new(triplets, "library")
    assert "comfygen_data" in keys_with_new(base, "library")


def test_a_second_run_of_the_same_directory_is_refused_while_one_runs(tmp_path: Path) -> None:
    with run_lock(tmp_path), pytest.raises(RunError, match="another process"):
        run_pipeline(in_order(), tmp_path, stages=FakeStages().all())


@pytest.mark.parametrize(("sft_threads", "expected"), [(2, 2), (3, 3), (None, 1)])
def test_sft_trains_on_its_own_threads_and_the_run_keeps_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sft_threads: int | None, expected: int
) -> None:
    """Phase-1 SFT runs while the other core idles: `sft_threads` (None: the run's)."""
    seen: list[int] = []

    def fake_sft(config: Any, progress: bool = True, say: Any = None) -> SFTResult:
        seen.append(torch.get_num_threads())
        return SFTResult(Path(config.out_dir), 1, 1, 0.0, 0.0, 1, False)

    monkeypatch.setattr(stages_module, "run_sft", fake_sft)
    config = dataclasses.replace(in_order(), threads=1, sft_threads=sft_threads)
    sft = next(stage for stage in STAGES if stage.name == "sft")
    before = torch.get_num_threads()
    result, _, _ = execute(sft, StageContext(tmp_path, config, lambda line: None))
    assert seen == [expected] and result["policy_dir"] == str(tmp_path / "sft")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("threads", "expected"), [(2, 2), (None, 1)])
def test_the_repaired_sft_trains_on_its_own_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int | None, expected: int
) -> None:
    """The last refine round's SFT runs with nothing beside it: the run's `sft_threads`."""
    seen: list[tuple[int, str]] = []

    def fake_sft(config: Any, progress: bool = True, say: Any = None) -> SFTResult:
        seen.append((torch.get_num_threads(), config.pairing))
        return SFTResult(Path(config.out_dir), 1, 1, 0.0, 0.0, 1, False)

    monkeypatch.setattr(refine_module, "run_sft", fake_sft)
    paths = RefinePaths(*(tmp_path / name for name in ("c", "s", "g", "l", "o.json", "out")))
    original = torch.get_num_threads()
    torch.set_num_threads(1)  # the rounds' process: one thread (the run's `threads`)
    try:
        out = refit_sft(
            tmp_path, tmp_path / "r", in_order().sft, paths, lambda line: None, threads=threads
        )
        assert seen == [(expected, "ensemble")] and out == tmp_path / "sft"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(original)


def test_the_repaired_sft_takes_refines_own_model(tmp_path: Path) -> None:
    """`[refine.sft_model]` shapes the re-paired SFT (and so the kept policy) alone, 160 wide
    by default over the run's 128; a key the file leaves out keeps the default's value."""
    plain = RunConfig()
    assert plain.refine.sft_model == KEPT_POLICY_MODEL and plain.sft.train.model.hidden_size == 128
    repaired = refine_module.repaired_sft(plain.sft, plain.refine)
    assert repaired.train.model == KEPT_POLICY_MODEL and repaired.train.model.hidden_size == 160
    assert repaired.train.learning_rate == plain.sft.train.learning_rate  # the rest: the run's
    assert repaired.pairs == plain.sft.pairs
    path = tmp_path / "wide.toml"
    path.write_text("[refine.sft_model]\nhidden_size = 256\nnum_attention_heads = 8\n")
    wide = load_run_config(path)
    assert wide.sft.train.model.hidden_size == 128
    kept = wide.refine.sft_model
    assert (kept.hidden_size, kept.intermediate_size, kept.num_attention_heads) == (256, 480, 8)
    assert refine_module.repaired_sft(wide.sft, wide.refine).train.model == wide.refine.sft_model
    assert changed_keys(plain, dataclasses.replace(plain, refine=wide.refine)) == {"refine"}
    # the quick preset keeps its policy as small as the others
    assert quick_config().refine.sft_model == quick_config().sft.train.model
    bad = tmp_path / "bad.toml"
    bad.write_text("[refine.sft_model]\nhidden_sise = 256\n")
    with pytest.raises(ConfigFileError, match=r"unknown setting 'refine\.sft_model\.hidden_sise'"):
        load_run_config(bad)
    odd = tmp_path / "odd.toml"  # 128 wide over the default's 5 heads
    odd.write_text("[refine.sft_model]\nhidden_size = 128\n")
    with pytest.raises(ConfigFileError, match="hidden_size 128 / num_attention_heads 5"):
        load_run_config(odd)


def test_a_refine_stage_made_before_the_kept_policy_defaults_resumes_its_rounds() -> None:
    """A run made before session 38 recorded its refine stage without `sft_model` and
    `sft_library_share` (added settings then, at their old defaults); under today's defaults
    the runner resumes that stage, its rounds kept, as these are settings it rechecks (its
    re-paired SFT is redone, `refit_sft`); any other change besides them clears it."""
    stage = next(stage for stage in STAGES if stage.name == "refine")
    config = RunConfig()
    settings = runner._settings(stage, config)
    inputs = {name: f"fingerprint of {name}" for name in stage.reads(config)}
    old = json.loads(json.dumps(settings))
    del old["refine"]["sft_model"], old["refine"]["sft_library_share"]
    marker = {"key": runner._key(stage, old, inputs), "settings": old}
    assert marker["key"] != runner._key(stage, settings, inputs)
    assert runner._only_rechecked_changed(stage, marker, settings, inputs)
    old["refine"]["samples"] = 4
    marker = {"key": runner._key(stage, old, inputs), "settings": old}
    assert not runner._only_rechecked_changed(stage, marker, settings, inputs)


def test_the_repaired_sft_library_share_reaches_its_run_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[refine] sft_library_share` reaches the re-paired SFT's run config and its line of
    progress; 0 by default, which the judged designs alone can follow."""
    seen: list[tuple[float, tuple[str, ...]]] = []
    said: list[str] = []

    def fake_sft(config: Any, progress: bool = True, say: Any = None) -> SFTResult:
        seen.append((config.library_share, config.designs))
        return SFTResult(Path(config.out_dir), 1, 1, 0.0, 0.0, 1, False)

    monkeypatch.setattr(refine_module, "run_sft", fake_sft)
    paths = RefinePaths(*(tmp_path / name for name in ("c", "s", "g", "l", "o.json", "out")))
    sft = in_order().sft
    for share in (0.0, 0.25, 1.0):
        refit_sft(tmp_path, tmp_path / "r", sft, paths, said.append, ("j.parquet",), 16, 1, share)
    assert seen == [(share, ("j.parquet",)) for share in (0.0, 0.25, 1.0)]
    assert "among the judged designs not in the library" in said[0]
    assert "the library and the judged designs (at most 25% library workflows)" in said[1]
    assert said[2].endswith("among the library and the judged designs -> " + str(tmp_path / "sft"))
    plain = RunConfig()
    assert plain.refine.sft_library_share == 0.0 == plain.refine.repaired_library_share
    capped = dataclasses.replace(plain.refine, sft_library_share=0.25)
    assert changed_keys(plain, dataclasses.replace(plain, refine=capped)) == {"refine"}
    # without the judged designs the library is the only candidate: no cap, whatever the share
    alone = dataclasses.replace(plain.refine, sft_designs=False)
    assert alone.sft_library_share == 0.0 and alone.repaired_library_share == 1.0


def test_other_repaired_sft_settings_redo_that_sft_and_what_starts_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner resumes the refine stage when only the re-paired SFT's settings changed
    (`REPAIRED_SFT_SETTINGS` are rechecked); `refit_sft` then finds its SFT recorded with
    other settings and clears it, the last round's GRPO runs and the choice (all started
    from it), and nothing else; with the same settings it clears nothing."""
    refine_stage = next(stage for stage in STAGES if stage.name == "refine")
    assert {f"refine.{name}" for name in REPAIRED_SFT_SETTINGS} <= set(refine_stage.rechecked)
    here = tmp_path / "round-2"
    paths = RefinePaths(*(tmp_path / name for name in ("c", "s", "g", "l", "o.json", "out")))
    sft = in_order().sft
    asked: list[Any] = []

    def fake_sft(config: Any, progress: bool = True, say: Any = None) -> SFTResult:
        asked.append(config)
        return SFTResult(Path(config.out_dir), 1, 1, 0.0, 0.0, 1, False)

    monkeypatch.setattr(refine_module, "run_sft", fake_sft)
    said: list[str] = []
    refit_sft(here, tmp_path / "r", sft, paths, said.append, ("j.parquet",), 16, 1, 0.25)
    (here / "sft").mkdir(parents=True)
    write_json(here / "sft" / "flowforge_run.json", run_record("sft", asdict(asked[0]), True))
    kept = [here / "reward" / "config.json", here / "judged.parquet"]
    made = [here / "grpo" / "model.safetensors", here / "grpo-2" / "log.jsonl"]
    made.append(here / "choice.json")
    for path in kept + made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    refit_sft(here, tmp_path / "r", sft, paths, said.append, ("j.parquet",), 16, 1, 0.25)
    assert all(path.exists() for path in kept + made)  # the same settings: nothing cleared
    assert (here / "sft" / "flowforge_run.json").is_file()
    refit_sft(here, tmp_path / "r", sft, paths, said.append, ("j.parquet",), 16, 1, 0.5)
    assert all(path.exists() for path in kept) and not any(path.exists() for path in made)
    assert not (here / "sft").exists()  # cleared for `run_sft` to train from nothing
    assert "the re-paired SFT's settings changed (library_share): training it again" in said[-1]
    assert [config.library_share for config in asked] == [0.25, 0.25, 0.5]


def test_sft_threads_below_one_are_refused() -> None:
    with pytest.raises(RunConfigError, match="sft_threads must be >= 1"):
        dataclasses.replace(quick_config(), sft_threads=0)
