"""Loading judges from ``--judge`` specs: sim, sim:SEED, package.module:factory, comfyui."""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fake_judge import FakeJudge

from flowforge.judge import Judge
from flowforge.judge.loader import (
    JudgeLoadError,
    JudgeSource,
    judge_id,
    load_judge,
    parse_judge_options,
)


class RecordingSim:
    """Stands in for SimJudge: records the keyword arguments the loader passes."""

    calls: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        RecordingSim.calls.append(kwargs)

    def object_info(self) -> dict[str, Any]:
        return {}

    def score(self, items: Any) -> list[Any]:
        return []


@pytest.fixture
def recording_sim(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    module = types.ModuleType("flowforge.judge.sim.judge")
    module.SimJudge = RecordingSim  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flowforge.judge.sim.judge", module)
    RecordingSim.calls = []
    return RecordingSim.calls


def test_an_outside_factory_gets_its_options_as_strings() -> None:
    loaded = load_judge("fake_judge:make_judge", {"transient": "2", "delay": "0.5"})
    assert isinstance(loaded.judge, FakeJudge) and isinstance(loaded.judge, Judge)
    assert (loaded.judge.transient, loaded.judge.delay) == (2, 0.5)
    assert loaded.judge_id == "fake_judge:make_judge?delay=0.5&transient=2"
    assert load_judge("fake_judge:make_judge").judge_id == "fake_judge:make_judge"


def test_a_loaded_judge_knows_how_to_load_itself_again() -> None:
    """Helper processes get the source, never the judge object (it may hold sockets)."""
    loaded = load_judge("fake_judge:make_judge", {"transient": "2", "delay": "0.5"})
    assert loaded.source == JudgeSource(
        "fake_judge:make_judge", (("delay", "0.5"), ("transient", "2"))
    )
    again = pickle.loads(pickle.dumps(loaded.source)).load()
    assert again.judge_id == loaded.judge_id and again.judge is not loaded.judge
    assert (again.judge.transient, again.judge.delay) == (2, 0.5)


def test_sim_specs_are_normalized_and_seed_converted(recording_sim: list[dict[str, Any]]) -> None:
    assert load_judge("sim").judge_id == "sim:0"
    assert load_judge("sim:7").judge_id == "sim:7"
    assert load_judge("sim", {"seed": "3"}).judge_id == "sim:3"
    assert load_judge("sim:3", {"seed": "3", "cache_dir": "/tmp/c"}).judge_id == "sim:3"
    assert recording_sim == [
        {"seed": 0},
        {"seed": 7},
        {"seed": 3},
        {"seed": 3, "cache_dir": Path("/tmp/c")},
    ]


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        ("sim:x", {}, r"--judge sim:x: the sim's seed must be an integer \(sim:SEED\)"),
        (
            "sim",
            {"sed": "1"},
            r"--judge sim: unknown option\(s\) sed; the sim takes cache_dir, seed",
        ),
        ("sim", {"seed": "one"}, r"--judge sim: option seed='one' is not valid"),
        ("sim:2", {"seed": "3"}, r"--judge sim:2: --judge-opt seed=3 contradicts the spec"),
    ],
)
def test_bad_sim_specs_are_one_line_errors(
    recording_sim: list[dict[str, Any]], spec: str, options: dict[str, str], message: str
) -> None:
    with pytest.raises(JudgeLoadError, match=message):
        load_judge(spec, options)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("comfyui", r"--judge comfyui: ComfyUIOptionError: give at least one ComfyUI server"),
        ("no_such_module_xyz:make", r"cannot import module 'no_such_module_xyz': ModuleNotF"),
        ("fake_judge:nothing", r"--judge fake_judge:nothing: fake_judge has no 'nothing'"),
        ("fake_judge:PROMPTS", r"fake_judge has no 'PROMPTS'"),
        ("fake_judge:make_not_a_judge", r"returned a object, which is not a Judge \(missing"),
        ("fake_judge:make_failing", r"the factory raised RuntimeError: cannot connect with"),
        ("fake_judge", r"--judge 'fake_judge': not a judge spec"),
        ("a b:c", r"not a judge spec"),
    ],
)
def test_bad_specs_name_the_spec_in_one_line(spec: str, message: str) -> None:
    with pytest.raises(JudgeLoadError, match=message) as caught:
        load_judge(spec)
    assert "\n" not in str(caught.value)


def test_a_factory_given_an_unknown_option_fails_naming_the_spec() -> None:
    with pytest.raises(JudgeLoadError, match=r"fake_judge:make_judge: the factory raised TypeE"):
        load_judge("fake_judge:make_judge", {"colour": "red"})


def test_judge_options_parse_key_value_pairs() -> None:
    assert parse_judge_options(["a=1", "url=http://h:1/?x=y"]) == {
        "a": "1",
        "url": "http://h:1/?x=y",
    }
    with pytest.raises(JudgeLoadError, match="expected key=value"):
        parse_judge_options(["novalue"])
    with pytest.raises(JudgeLoadError, match="--judge-opt a is given twice"):
        parse_judge_options(["a=1", "a=2"])


def test_judge_id_names_what_scores_without_building_the_judge(
    recording_sim: list[dict[str, Any]],
) -> None:
    # the same ids the loaded judges get, and nothing was built to compute them
    assert judge_id("sim") == judge_id("sim:0") == judge_id("sim", {"seed": "0"}) == "sim:0"
    assert judge_id("sim:3", {"cache_dir": "/tmp/c"}) == load_judge("sim:3").judge_id == "sim:3"
    assert judge_id("fake_judge:make_judge", {"transient": "2", "delay": "0.5"}) == (
        load_judge("fake_judge:make_judge", {"delay": "0.5", "transient": "2"}).judge_id
    )
    assert recording_sim == [{"seed": 3}]  # only load_judge built a simulator
    # ComfyUI: the scorers name it, the servers do not (a run resumes on another pool)
    scorers = {"scorers": "aesthetic=laion/aesthetic", "device": "cpu"}
    here = judge_id("comfyui", {**scorers, "servers": "http://a:8188"})
    assert here == judge_id("comfyui", {**scorers, "servers": "http://b:8188,http://c:8188"})
    assert here != judge_id("comfyui", {"scorers": "pickscore=yuvalkirstain/PickScore_v1"})
    # what names no judge fails as loading it would
    with pytest.raises(JudgeLoadError, match="seed must be an integer"):
        judge_id("sim:x")
    with pytest.raises(JudgeLoadError, match="contradicts"):
        judge_id("sim:1", {"seed": "2"})
    with pytest.raises(JudgeLoadError, match="not a judge spec"):
        judge_id("nonsense")


def test_the_real_sim_loads_when_present() -> None:
    pytest.importorskip("flowforge.judge.sim.judge")
    loaded = load_judge("sim:1")
    assert loaded.judge_id == "sim:1" and isinstance(loaded.judge, Judge)
