"""The data and sim commands as a user runs them: collect, export, audit."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from flowforge.cli import app

runner = CliRunner()


def test_collect_then_export_to_parquet_and_hf(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["collect", "--judge", "fake_judge:make_judge", "--pairs", "20", "--seeds", "2",
            "--library-size", "8", "--out", str(run)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "judged 40 (40 scored) of 40" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "judged 0 (0 scored) of 40, 40 already done" in again.output

    parquet = tmp_path / "triplets.parquet"
    result = runner.invoke(app, ["data", "export", "--run", str(run), "-o", str(parquet)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(parquet)
    assert table.num_rows == 40
    assert {"prompt", "workflow_api", "workflow_text", "seed", "error"} <= set(table.column_names)

    hf_dir = tmp_path / "triplets_hf"
    result = runner.invoke(app, ["data", "export", "--run", str(run), "-o", str(hf_dir)])
    assert result.exit_code == 0 and (hf_dir / "dataset_info.json").exists()
    result = runner.invoke(app, ["data", "export", "--run", str(run), "-o", str(parquet)])
    assert result.exit_code == 2 and "exists" in result.output


def test_collect_refuses_a_bad_judge_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["collect", "--judge", "no_such_module:f", "--pairs", "2",
                                 "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 2
    assert "no_such_module" in result.output and "Traceback" not in result.output


def test_an_error_is_printed_as_written_not_read_as_emoji_codes(tmp_path: Path) -> None:
    """Rich reads ":x:" as an emoji code: `--judge sim:x` printed "sim\u274c the sim's seed"."""
    result = runner.invoke(app, ["collect", "--judge", "sim:x", "--pairs", "2",
                                 "--out", str(tmp_path / "r")])  # fmt: skip
    assert result.exit_code == 2
    assert "--judge sim:x: the sim's seed must be an integer" in result.output


def test_sim_audit_prints_the_four_properties_and_passes_on_seed_0() -> None:
    result = runner.invoke(app, ["sim", "audit", "--seed", "0"])
    assert result.exit_code == 0, result.output
    for name in ("per_prompt_gain", "beyond_library", "corr_heldout", "paraphrase_corr"):
        assert name in result.output
    assert "│ NO " not in result.output  # exit code 0 already says every property holds
