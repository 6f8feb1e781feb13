"""Validation of 52 real API-format workflows (ComfyMind's atomic workflow library).

These files were written for newer ComfyUI versions and mostly use community nodes, so
against the default catalog (a real ComfyUI of early 2024) the only errors allowed are:
- ``unknown_class_type`` on exactly the nodes whose class the catalog lacks;
- the few values listed in `GENUINE_ERRORS`, which that ComfyUI would reject too;
- with ``check_model_files=True``, ``value_not_in_list`` on model-file inputs (checkpoints,
  LoRAs, VAEs, UNets, CLIPs, ControlNets, uploaded images): those list one installation.
Anything else is a spurious error, i.e. a validation bug. Warnings are not judged here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowforge.workflow.api import load_api
from flowforge.workflow.graph import Workflow
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.validate import Problem, validate

COMFYMIND = Path(__file__).parents[1].parent / "shared" / "data" / "workflows" / "comfymind"
FILES = sorted(COMFYMIND.glob("*.json"))

# Errors a real ComfyUI of the catalog's version (a28a9dc, early 2024) raises on these files
# as well: required enums it checks against its own lists, and links into inputs it lacks.
GENUINE_ERRORS: dict[str, set[tuple[str, str, str]]] = {
    # scheduler "beta" was added to ComfyUI after the catalog's version (Flux-era workflows)
    "005_api.json": {("5", "value_not_in_list", "scheduler")},
    "028_api.json": {("7", "value_not_in_list", "scheduler")},
    "045_api.json": {("5", "value_not_in_list", "scheduler")},
    "052_api.json": {("14", "value_not_in_list", "scheduler")},
    # CLIPLoader type "sd3" is newer too; the catalog offers stable_diffusion/stable_cascade
    "048_api.json": {("41", "value_not_in_list", "type")},
    # ControlNetApplyAdvanced gained an optional `vae` input later; the catalog's version
    # receives the linked value as an unexpected argument and fails when the prompt runs.
    "030_api.json": {("3", "unknown_input", "vae")},
    "034_api.json": {("13", "unknown_input", "vae"), ("48", "unknown_input", "vae")},
    "053_api.json": {("13", "unknown_input", "vae"), ("48", "unknown_input", "vae")},
}

pytestmark = pytest.mark.skipif(not COMFYMIND.is_dir(), reason=f"{COMFYMIND} not present")


def _key(problem: Problem) -> tuple[str, str, str]:
    return (str(problem.node_id), problem.kind, str(problem.input))


def _describe(problems: set[Problem] | tuple[Problem, ...]) -> str:
    return "\n".join(sorted(str(p) for p in problems)) or "(none)"


def _unknown_nodes(workflow: Workflow) -> set[tuple[str, str]]:
    catalog = default_catalog()
    return {(n.id, n.class_type) for n in workflow if n.class_type not in catalog}


def test_all_52_workflows_are_there() -> None:
    assert len(FILES) == 52
    assert set(GENUINE_ERRORS) <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_structure_errors_are_only_unknown_classes(path: Path) -> None:
    workflow = load_api(path)
    report = validate(workflow, default_catalog(), check_model_files=False)
    unknown = {(p.node_id, p.class_type) for p in report.errors if p.kind == "unknown_class_type"}
    assert unknown == _unknown_nodes(workflow)
    others = {p for p in report.errors if p.kind != "unknown_class_type"}
    assert {_key(p) for p in others} == GENUINE_ERRORS.get(path.name, set()), _describe(others)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_model_file_check_adds_only_model_file_errors(path: Path) -> None:
    catalog = default_catalog()
    workflow = load_api(path)
    structural = set(validate(workflow, catalog, check_model_files=False).errors)
    full = set(validate(workflow, catalog, check_model_files=True).errors)
    assert structural <= full
    added = full - structural
    spurious = set()
    for problem in added:
        schema = catalog.get(str(problem.class_type))
        spec = schema.input(problem.input) if schema and problem.input else None
        if problem.kind != "value_not_in_list" or spec is None or not spec.is_model_file:
            spurious.add(problem)
    assert not spurious, _describe(spurious)
    for problem in added:
        value = workflow.node(str(problem.node_id)).get(str(problem.input))
        assert value not in catalog.choices(str(problem.class_type), str(problem.input))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_problem_names_a_real_node_and_its_class(path: Path) -> None:
    workflow = load_api(path)
    for problem in validate(workflow, default_catalog()).problems:
        if problem.node_id is None:
            continue
        assert problem.node_id in workflow, str(problem)
        assert problem.class_type == workflow.node(problem.node_id).class_type, str(problem)
