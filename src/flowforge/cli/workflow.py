"""Workflow commands: validate, convert, library build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..workflow.api import WorkflowFormatError, detect_format, from_api, read_json_file, to_api
from ..workflow.canonical import canonicalize
from ..workflow.graph import GraphError, Workflow
from ..workflow.library import build_library, load_seed_library, load_workflow_dir, save_library
from ..workflow.schema import Catalog
from ..workflow.textform import Bindings, from_text, to_text
from ..workflow.ui import from_ui_strict, to_ui
from ..workflow.validate import Problem, validate
from .app import (
    ObjectInfoOption,
    app,
    catalog_option,
    err,
    fail,
    out,
    progress_bar,
    user_errors,
)

library_app = typer.Typer(
    help="Build workflow libraries from seed workflows.", no_args_is_help=True
)
app.add_typer(library_app, name="library")


def read_workflow(path: Path, catalog: Catalog) -> tuple[Workflow, str]:
    """Read an API- or UI-format file into the IR; returns (workflow, format)."""
    data = read_json_file(path)
    kind = detect_format(data)
    if kind == "ui":
        return from_ui_strict(data, catalog, str(path)), "ui"
    return from_api(data, str(path)), "api"


def _problem_json(problem: Problem) -> dict[str, Any]:
    return {
        "kind": problem.kind,
        "severity": problem.severity,
        "node_id": problem.node_id,
        "class_type": problem.class_type,
        "input": problem.input,
        "expected": problem.expected,
        "found": problem.found,
        "message": problem.message,
    }


@app.command("validate")
def validate_command(
    files: Annotated[
        list[Path],
        typer.Argument(help="Workflow files (API or UI format), or directories of them."),
    ],
    object_info: ObjectInfoOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    skip_model_files: Annotated[
        bool,
        typer.Option(
            "--skip-model-files",
            help="Do not check model-file names against the catalog (judge structure only).",
        ),
    ] = False,
) -> None:
    """Check workflows against node schemas and report every problem. Exit 1 if any is invalid.

    Each problem names the node id, class, input, what was expected and what was found.
    Warnings (ignored inputs, nodes that feed no output) do not make a workflow invalid.
    """
    catalog = catalog_option(object_info)
    reports = []
    for path in _expand(files):
        try:
            workflow, kind = read_workflow(path, catalog)
        except (WorkflowFormatError, GraphError) as error:
            reports.append(
                {
                    "path": str(path),
                    "ok": False,
                    "format": None,
                    "error": str(error),
                    "problems": [],
                }
            )
            continue
        report = validate(workflow, catalog, check_model_files=not skip_model_files)
        reports.append(
            {
                "path": str(path),
                "ok": report.ok,
                "format": kind,
                "error": None,
                "problems": [_problem_json(p) for p in report.problems],
            }
        )
    if as_json:
        print(json.dumps({"catalog": catalog.source, "files": reports}, indent=2))
    else:
        _print_reports(reports)
        invalid = sum(not r["ok"] for r in reports)
        out.print(f"{len(reports)} file(s): {len(reports) - invalid} valid, {invalid} invalid")
    if not all(r["ok"] for r in reports):
        raise typer.Exit(1)


def _expand(paths: list[Path]) -> list[Path]:
    """Files as given; a directory stands for the ``*.json`` files directly in it."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if not found:
                fail(f"{path}: directory holds no .json files")
            files.extend(found)
        else:
            files.append(path)
    return files


def _print_reports(reports: list[dict[str, Any]]) -> None:
    for report in reports:
        if report["error"]:
            out.print(f"[red]✗[/] {escape(report['error'])}", highlight=False, soft_wrap=True)
            continue
        problems = report["problems"]
        errors = sum(p["severity"] == "error" for p in problems)
        warnings = len(problems) - errors
        mark = "[green]✓[/]" if report["ok"] else "[red]✗[/]"
        out.print(
            f"{mark} {escape(report['path'])} ({report['format']}): {errors} error(s), "
            f"{warnings} warning(s)",
            highlight=False,
            soft_wrap=True,
        )
        for p in problems:
            colour = "red" if p["severity"] == "error" else "yellow"
            where = f"node {p['node_id']} ({p['class_type']})" if p["node_id"] else "workflow"
            if p["input"]:
                where += f" input {p['input']!r}"
            detail = ""
            if p["expected"] is not None or p["found"] is not None:
                detail = f" — expected {p['expected']}, found {p['found']}"
            out.print(
                f"  [{colour}]{p['severity']}[/] {p['kind']}: "
                + escape(f"{where}: {p['message']}{detail}"),
                highlight=False,
                soft_wrap=True,
            )


@app.command("convert")
def convert_command(
    file: Annotated[Path, typer.Argument(help="A workflow: API JSON, UI JSON, or text form.")],
    to: Annotated[str, typer.Option("--to", help="Output format: api, ui or text.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    object_info: ObjectInfoOption = None,
    prompt: Annotated[str, typer.Option(help="Fills $PROMPT when reading the text form.")] = "",
    negative: Annotated[str, typer.Option(help="Fills $NEGATIVE when reading the text form.")] = "",
    seed: Annotated[int, typer.Option(help="Fills $SEED when reading the text form.")] = 0,
) -> None:
    """Convert between ComfyUI API JSON, ComfyUI UI JSON and flowforge's text form.

    The text form is what the policy reads and writes: canonical node order, links as
    @node.slot, the prompt, negative prompt and seeds as $PROMPT/$NEGATIVE/$SEED. Converting
    to it replaces those per-request values by placeholders; converting from it fills them
    from --prompt/--negative/--seed.
    """
    if to not in ("api", "ui", "text"):
        fail(f"--to must be api, ui or text, not {to!r}")
    catalog = catalog_option(object_info)
    with user_errors():
        if file.suffix == ".txt":
            text = file.read_text(encoding="utf-8")
            workflow = from_text(text, Bindings.request(prompt, negative, seed), catalog)
        else:
            workflow, _ = read_workflow(file, catalog)
        if to == "api":
            result = json.dumps(to_api(workflow), indent=2, ensure_ascii=False)
        elif to == "ui":
            if not all(node_id.isdigit() for node_id in workflow.ids()):
                workflow = canonicalize(workflow)  # the editor needs integer node ids
            result = json.dumps(to_ui(workflow, catalog), indent=2, ensure_ascii=False)
        else:
            result, _ = to_text(workflow, catalog)
    if output is None:
        print(result)
    else:
        output.write_text(result + "\n", encoding="utf-8")
        err.print(f"wrote {output}", highlight=False)


@library_app.command("build")
def library_build_command(
    size: Annotated[int, typer.Option("--size", help="Number of distinct workflows.", min=1)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    seeds: Annotated[
        Path | None,
        typer.Option(
            "--seeds",
            help="Directory of seed workflows (API JSON). Default: the shipped seed library.",
            file_okay=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same library).")] = 0,
    object_info: ObjectInfoOption = None,
) -> None:
    """Augment seed workflows into N distinct valid workflows, one API JSON file each.

    Augmentations swap checkpoints (within the SD1.5/SDXL family, with native resolutions),
    LoRAs, samplers, schedulers, steps, CFG and resolution, and add or drop hires fix,
    upscalers, a refiner, FreeU and negative embeddings. Every output is validated.
    """
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        fail(f"{output} exists and is not an empty directory; choose a new one or remove it")
    catalog = catalog_option(object_info)
    with user_errors():
        seed_workflows = load_seed_library() if seeds is None else load_workflow_dir(seeds)
    with progress_bar() as progress:
        task = progress.add_task("augmenting", total=size)

        def on_progress(done: int) -> None:
            progress.update(task, completed=done)

        with user_errors():
            workflows = build_library(seed_workflows, catalog, size, seed, on_progress)
    with user_errors():
        save_library(workflows, output)
    out.print(f"wrote {len(workflows)} workflows to {output}", highlight=False)
