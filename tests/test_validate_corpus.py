"""Validation against a corpus of broken workflows, one planted fault per file.

The corpus lives in ``tests/data/broken``: two valid base graphs (SD1.5 and SDXL
text-to-image with the default catalog's real nodes and model files), one file per fault
made from them by ``make_corpus.py``, and ``manifest.json`` naming the one problem each file
must produce. Validation must find exactly that problem (kind, node, input, severity) and no
other problem of that severity, through the Python API and through ``flowforge validate``.
"""

from __future__ import annotations

import filecmp
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flowforge.workflow.api import load_api
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.validate import Problem, ValidationReport, validate

CORPUS = Path(__file__).parent / "data" / "broken"
BASES = ("_valid_base_sd15.json", "_valid_base_sdxl.json")
MANIFEST: list[dict[str, Any]] = json.loads((CORPUS / "manifest.json").read_text("utf-8"))

ERROR_KINDS = {
    "unknown_class_type",
    "required_input_missing",
    "invalid_input_type",
    "value_smaller_than_min",
    "value_bigger_than_max",
    "value_not_in_list",
    "bad_linked_input",
    "return_type_mismatch",
    "cycle",
    "prompt_no_outputs",
}
WARNING_KINDS = {"unreachable_node", "unknown_embedding", "unknown_input"}

ERROR_ENTRIES = [e for e in MANIFEST if e["severity"] == "error"]
WARNING_ENTRIES = [e for e in MANIFEST if e["severity"] == "warning"]


def _id(entry: dict[str, Any]) -> str:
    return str(entry["file"]).removesuffix(".json")


def _describe(problems: tuple[Problem, ...]) -> str:
    return "\n".join(str(p) for p in problems) or "(none)"


def _matches(problem: Problem | dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether a problem (object or CLI JSON) is the fault a manifest entry describes."""
    get = problem.get if isinstance(problem, dict) else lambda key: getattr(problem, key)
    if get("kind") != entry["kind"] or get("severity") != entry["severity"]:
        return False
    if get("input") != entry["input"]:
        return False
    allowed = entry.get("cycle_nodes") or [entry["node_id"]]
    return get("node_id") in allowed


def _validate_file(name: str) -> ValidationReport:
    return validate(load_api(CORPUS / name), default_catalog())


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_corpus"] = module  # dataclasses look their module up while building
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["make_corpus"]
    return module


# --- the corpus itself -------------------------------------------------------------------


def test_corpus_is_large_and_covers_every_kind() -> None:
    assert len(MANIFEST) >= 30
    assert {e["kind"] for e in MANIFEST} == ERROR_KINDS | WARNING_KINDS
    for entry in MANIFEST:
        expected = "error" if entry["kind"] in ERROR_KINDS else "warning"
        assert entry["severity"] == expected, entry["file"]


def test_manifest_lists_exactly_the_fault_files() -> None:
    listed = [e["file"] for e in MANIFEST]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in CORPUS.glob("*.json")} - set(BASES) - {"manifest.json"}
    assert on_disk == set(listed)


def test_committed_corpus_is_what_the_generator_writes(tmp_path: Path) -> None:
    _load_generator().build(tmp_path)
    written = sorted(p.name for p in tmp_path.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(CORPUS, tmp_path, written, shallow=False)
    assert not mismatch and not errors, f"rerun make_corpus.py: {mismatch + errors}"


@pytest.mark.parametrize("entry", MANIFEST, ids=_id)
def test_fault_is_planted_on_an_existing_node(entry: dict[str, Any]) -> None:
    base = json.loads((CORPUS / entry["base"]).read_text("utf-8"))
    broken = json.loads((CORPUS / entry["file"]).read_text("utf-8"))
    assert broken != base
    if entry["node_id"] is not None:
        assert entry["node_id"] in broken
    for node_id in entry.get("cycle_nodes", []):
        assert node_id in broken


# --- validation through the Python API ---------------------------------------------------


@pytest.mark.parametrize("name", BASES)
def test_base_workflow_has_no_problem_at_all(name: str) -> None:
    report = _validate_file(name)
    assert report.problems == (), _describe(report.problems)
    assert report.ok


@pytest.mark.parametrize("entry", ERROR_ENTRIES, ids=_id)
def test_error_fault_is_the_only_error(entry: dict[str, Any]) -> None:
    report = _validate_file(entry["file"])
    assert not report.ok
    assert len(report.errors) == 1, _describe(report.errors)
    (problem,) = report.errors
    assert _matches(problem, entry), f"expected {entry}, got {problem}"
    assert problem.message


@pytest.mark.parametrize("entry", WARNING_ENTRIES, ids=_id)
def test_warning_fault_is_the_only_problem(entry: dict[str, Any]) -> None:
    report = _validate_file(entry["file"])
    assert report.ok, _describe(report.errors)
    assert len(report.problems) == 1, _describe(report.problems)
    (problem,) = report.problems
    assert _matches(problem, entry), f"expected {entry}, got {problem}"


@pytest.mark.parametrize("entry", [e for e in MANIFEST if e["node_id"] is not None], ids=_id)
def test_problem_names_the_class_of_its_node(entry: dict[str, Any]) -> None:
    data = json.loads((CORPUS / entry["file"]).read_text("utf-8"))
    report = _validate_file(entry["file"])
    for problem in report.problems:
        assert problem.node_id in data, str(problem)
        assert problem.class_type == data[problem.node_id]["class_type"], str(problem)


# --- validation through the command line -------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowforge", "validate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _cli_report(path: Path) -> tuple[int, dict[str, Any]]:
    """Exit code and the one file report of ``flowforge validate PATH --json``."""
    result = _cli(str(path), "--json")
    assert "Traceback" not in result.stderr, result.stderr
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"no JSON on stdout (exit {result.returncode}): {result.stderr[-2000:]}")
    files = document["files"]
    assert len(files) == 1
    assert Path(files[0]["path"]).name == path.name
    for problem in files[0]["problems"]:
        assert set(problem) >= {
            "kind",
            "message",
            "node_id",
            "class_type",
            "input",
            "expected",
            "found",
            "severity",
        }
    return result.returncode, files[0]


@pytest.mark.parametrize("name", BASES)
def test_cli_accepts_base_workflow(name: str) -> None:
    code, report = _cli_report(CORPUS / name)
    assert code == 0
    assert report["ok"] is True
    assert report["problems"] == []


@pytest.mark.parametrize("entry", ERROR_ENTRIES, ids=_id)
def test_cli_rejects_error_fault_naming_node_and_input(entry: dict[str, Any]) -> None:
    code, report = _cli_report(CORPUS / entry["file"])
    assert code == 1
    assert report["ok"] is False
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert len(errors) == 1, errors
    assert _matches(errors[0], entry), f"expected {entry}, got {errors[0]}"


@pytest.mark.parametrize("entry", WARNING_ENTRIES, ids=_id)
def test_cli_passes_warning_fault_but_reports_it(entry: dict[str, Any]) -> None:
    code, report = _cli_report(CORPUS / entry["file"])
    assert code == 0
    assert report["ok"] is True
    assert [_matches(p, entry) for p in report["problems"]] == [True], report["problems"]
