"""The ComfyUI commands as a user runs them, against a real HTTP server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

from fake_comfyui import FakeServer
from tiny_scorers import write_scorers_file
from typer.testing import CliRunner

from flowforge.cli import app
from flowforge.workflow.schema import load_catalog

runner = CliRunner()
SAMPLE = Path(__file__).parent / "data" / "library_sample"


def test_catalog_pull_then_collect_with_judge_comfyui(tmp_path: Path) -> None:
    server = FakeServer(tmp_path / "server")
    try:
        catalog_file = tmp_path / "object_info.json"
        result = runner.invoke(
            app, ["catalog", "pull", "--server", server.url, "-o", str(catalog_file)]
        )
        assert result.exit_code == 0, result.output
        assert "node classes" in result.output
        assert "KSampler" in load_catalog(catalog_file)

        prompts = tmp_path / "prompts.txt"
        prompts.write_text("a lighthouse at dusk\na red fox in snow\n")
        scorers = write_scorers_file(tmp_path / "scorers")
        args = [
            "collect", "--judge", "comfyui", "--server", server.url,
            "--judge-opt", f"scorers_file={scorers}", "--judge-opt", "poll_seconds=0.05",
            "--judge-opt", f"image_dir={tmp_path / 'images'}",
            "--prompts", str(prompts), "--library", str(SAMPLE), "--pairs", "4",
            "--out", str(tmp_path / "run"),
        ]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "judged 4 (4 scored) of 4" in result.output
        config = json.loads((tmp_path / "run" / "config.json").read_text())
        assert config["judge"] == "comfyui"
        assert len(list((tmp_path / "images").glob("*.png"))) == 4
    finally:
        server.kill()


def test_comfyui_flags_need_the_comfyui_judge(tmp_path: Path) -> None:
    result = runner.invoke(app, ["collect", "--judge", "sim", "--server", "http://x", "--pairs",
                                 "1", "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 2 and "need --judge comfyui" in result.output
