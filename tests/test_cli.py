"""The command line as a user meets it: exit codes, one-line errors, files written."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from flowforge.cli import app
from flowforge.cli.helptext import PANELS
from flowforge.workflow.api import MAX_DEPTH, MAX_FILE_BYTES, load_api, to_api
from flowforge.workflow.canonical import workflow_hash
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.ui import load_ui

runner = CliRunner()
SEEDS = Path(str(resources.files("flowforge").joinpath("resources", "seeds")))
SD15_BASE = SEEDS / "sd15_base.json"


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_validate_accepts_a_valid_seed_and_reports_json(tmp_path: Path) -> None:
    code, output = run("validate", str(SD15_BASE), "--json")
    assert code == 0
    report = json.loads(output)
    assert report["files"][0]["ok"] is True and report["files"][0]["problems"] == []


def test_validate_exits_1_and_names_node_and_input(tmp_path: Path) -> None:
    data = json.loads(SD15_BASE.read_text())
    sampler = next(k for k, v in data.items() if v["class_type"] == "KSampler")
    data[sampler]["inputs"]["sampler_name"] = "euler_a"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    code, output = run("validate", str(path))
    assert code == 1
    assert f"node {sampler} (KSampler) input 'sampler_name'" in output
    assert 'found "euler_a"' in output and "expected one of [euler," in output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed JSON at line 1"),
        ('"just a string"', "not a ComfyUI workflow"),
        ('{"a": 1}', "not a ComfyUI workflow"),
        ("[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5), "nested deeper than"),
    ],
)
def test_validate_reports_unreadable_files_in_one_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "in.json"
    path.write_text(content)
    code, output = run("validate", str(path))
    assert code == 1
    line = next(line for line in output.splitlines() if "in.json" in line)
    assert message in line
    assert "Traceback" not in output


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    code, output = run("convert", str(path), "--to", "text")
    assert code == 2
    assert "larger than the" in output and "Traceback" not in output


def test_ui_file_where_api_is_expected_is_named(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    code, _ = run("convert", str(SD15_BASE), "--to", "ui", "-o", str(seeds / "ui.json"))
    assert code == 0
    code, output = run(
        "library", "build", "--seeds", str(seeds), "--size", "5", "-o", str(tmp_path / "lib")
    )
    assert code == 2
    assert "UI-format workflow" in output and "Traceback" not in output


def test_convert_round_trips_api_ui_text(tmp_path: Path) -> None:
    ui_path, text_path, api_path = tmp_path / "w_ui.json", tmp_path / "w.txt", tmp_path / "w.json"
    assert run("convert", str(SD15_BASE), "--to", "ui", "-o", str(ui_path))[0] == 0
    assert run("convert", str(ui_path), "--to", "text", "-o", str(text_path))[0] == 0
    seed_workflow = load_api(SD15_BASE)
    assert workflow_hash(load_ui(ui_path, default_catalog())) == workflow_hash(seed_workflow)
    text = text_path.read_text()
    assert "text=$PROMPT" in text and "seed=$SEED" in text
    code, _ = run(
        "convert",
        str(text_path),
        "--to",
        "api",
        "-o",
        str(api_path),
        "--prompt",
        "a red fox",
        "--seed",
        "7",
    )
    assert code == 0
    designed = json.loads(api_path.read_text())
    sampler = next(v for v in designed.values() if v["class_type"] == "KSampler")
    assert sampler["inputs"]["seed"] == 7
    texts = [v["inputs"]["text"] for v in designed.values() if v["class_type"] == "CLIPTextEncode"]
    assert "a red fox" in texts
    assert to_api(load_api(api_path)) == designed


def test_convert_rejects_an_unknown_target_format() -> None:
    code, output = run("convert", str(SD15_BASE), "--to", "xml")
    assert code == 2 and "--to must be api, ui or text" in output


def test_library_build_writes_distinct_valid_workflows(tmp_path: Path) -> None:
    out = tmp_path / "lib"
    code, output = run("library", "build", "--size", "60", "-o", str(out))
    assert code == 0, output
    files = sorted(out.glob("*.json"))
    assert len(files) == 60
    assert {workflow_hash(load_api(f)) for f in files} == {f.stem for f in files}
    assert len((out / "index.jsonl").read_text().splitlines()) == 60
    code, output = run("validate", str(out))
    assert code == 0 and "60 valid, 0 invalid" in output
    code, output = run("library", "build", "--size", "5", "-o", str(out))
    assert code == 2 and "not an empty directory" in output


def test_bad_object_info_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "object_info.json"
    path.write_text(json.dumps({"KSampler": {"no": "input"}}))
    code, output = run("validate", str(SD15_BASE), "--object-info", str(path))
    assert code == 2 and "is not a node schema" in output


@pytest.mark.parametrize("width", ["70", "200"])
def test_help_paragraphs_wrap_to_the_terminal_not_to_the_source(width: str) -> None:
    """A docstring's source line breaks would leave ragged lines after the first paragraph."""
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": width})
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Settings:"))
    paragraph = lines[start : lines.index("", start)]
    # every line but the paragraph's last is filled to within a word of the width
    assert all(len(line) > int(width) - 20 for line in paragraph[:-1]), paragraph
    assert " ".join(paragraph).endswith("Prints the report's table.")


def help_page(*path: str) -> str:
    """`flowforge PATH --help` as printed on a terminal wide enough for nothing to wrap, its
    table borders and runs of spaces collapsed."""
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, (path, result.output)
    return " ".join(result.output.replace("│", " ").split())


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, tuple[str, ...], Any]]:
    """Every command under `command` (groups included) as (name path, command), for walking
    the whole CLI. Duck-typed: typer ships its own copy of click's classes."""
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


def test_every_bracketed_part_of_an_option_help_reaches_the_help_page() -> None:
    """Help is rendered by rich, which reads "[...]" as markup and drops it unless escaped:
    `design --help` once said "Candidates to draw ." where "[default: 1; 8 with --run]" was
    written. Every bracketed part of every option's help must be printed."""
    commands = _commands(typer.main.get_command(app))
    checked: list[str] = []
    lost: list[str] = []
    for path, command in commands:
        page = help_page(*path)
        for param in command.params:
            for part in re.findall(r"\[[^\]]*\]", getattr(param, "help", None) or ""):
                checked.append(part)
                if " ".join(part.split()) not in page:
                    lost.append(f"{' '.join(path)} --{param.name}: {part}")
    assert len(commands) > 15
    assert not lost, lost


def test_shown_defaults_are_the_defaults_the_code_uses() -> None:
    """Options left unset fall back to defaults held elsewhere (TrainSettings, the design
    temperature); their help names those values, so the two must not drift apart."""
    from flowforge.policy.config import TrainSettings
    from flowforge.policy.design import DESIGN_TEMPERATURE

    train = TrainSettings()
    design = help_page("design")
    # click prints a described default in brackets: "[default: (0.7)]"
    assert "[default: (1; 8 with --run)]" in design
    assert f"[default: ({DESIGN_TEMPERATURE})]" in design
    sft = help_page("sft")
    for option, value in [
        ("--epochs", train.epochs),
        ("--learning-rate", train.learning_rate),
        ("--batch-size", train.batch_size),
        ("--seed", train.seed),
    ]:
        shown = re.search(re.escape(option) + r" .*?\[default: \(([^)]+)\)\]", sft)
        assert shown is not None, option
        assert float(shown.group(1)) == value, (option, shown.group(1), value)


def test_the_top_level_help_starts_with_the_main_job_and_places_every_command() -> None:
    """`flowforge --help` lists run and design first, then the stages, in panels; a command
    added without a place in `PANELS` would land in an unnamed panel."""
    placed = [name for _, names in PANELS for name in names]
    registered = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert sorted(placed) == sorted(registered)
    shown = runner.invoke(app, ["--help"], terminal_width=100).output
    assert "Start here" in shown and "The stages of flowforge run" in shown
    rows = re.findall(r"^│ ([a-z][a-z-]+) ", shown, flags=re.MULTILINE)
    assert rows[:2] == ["run", "design"] and set(rows) == set(placed)
