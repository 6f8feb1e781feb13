"""``flowforge run``, ``evaluate`` and ``grpo`` as a user runs them: the ``--quick`` run end
to end on the sim world (about a minute), then the commands on what it built, then the
one-line errors of bad input."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from typer.testing import CliRunner

from flowforge.cli import app
from flowforge.cli.pipeline import eval_inputs, evaluation_judge
from flowforge.data.export import run_table
from flowforge.data.prompts import load_prompts
from flowforge.evaluate.designers import SamplingSettings
from flowforge.pipeline.config import load_run_config, quick_config
from flowforge.pipeline.draws import Draw, draw
from flowforge.pipeline.layout import run_design
from flowforge.pipeline.refine import train_at_once
from flowforge.pipeline.workers import StageProcessError
from flowforge.policy.grpo import GRPORunConfig
from flowforge.policy.sft import library_texts
from flowforge.workflow.library import load_workflow_dir
from flowforge.workflow.schema import load_catalog

runner = CliRunner()
LABELS = ("default (sdxl_base)", "best fixed", "retrieval", "ComfyGen-FT", "SFT", "GRPO")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished ``flowforge run --quick`` and what it printed (stdout, then stderr)."""
    run = tmp_path_factory.mktemp("quick") / "run"
    result = runner.invoke(app, ["run", "--quick", "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run, result.stdout + result.stderr


def test_the_quick_run_prints_the_report_table_and_resumes_as_skipped(
    quick_run: tuple[Path, str],
) -> None:
    run, printed = quick_run
    for label in LABELS:
        assert label in printed
    assert "GRPO + guidance w=3" in printed and "best-of-4" in printed
    report = json.loads((run / "evaluate" / "report.json").read_text())
    assert all(m["valid"] == 1.0 for m in report["methods"])  # the constraint holds
    for name in ("report.md", "report.json", "designs.jsonl"):
        assert (run / "evaluate" / name).is_file()
    assert list((run / "evaluate").glob("*.png"))
    assert load_run_config(run / "config.json") == quick_config()
    # two stages at a time, each in its own process: their progress comes back as lines,
    # what they printed themselves is in their logs
    assert quick_config().jobs == 2
    for line in ("sft: step", "comfygen_ft: step", "grpo step 8/8", "refine: round 2/2"):
        assert line in printed
    assert {p.name for p in (run / "stages").glob("*.log")} >= {"sft.log", "evaluate.log"}
    again = runner.invoke(app, ["run", "--quick", "--out", str(run)])
    assert again.exit_code == 0, again.output
    assert again.stderr.count("done before, skipped") == 9
    table = printed[printed.index("| method") : printed.index("run ->")]
    assert table in again.stdout  # the same report, not a new one
    guard = report["hand_over"]  # judged on the quick preset's 20 validation prompts
    assert guard["prompts"] == 20 and "`flowforge design --run` hands over" in table


def test_comfygen_ft_learns_from_a_grid_of_its_own(quick_run: tuple[Path, str]) -> None:
    """ComfyGen's data shape: 30 library workflows, each judged on the same 50 train prompts
    with the collection's 2 seeds; the baseline's data calls in the report are the grid's."""
    run, _ = quick_run
    grid, pending = run_table(run / "comfygen_data")
    assert pending == 0
    assert grid.num_rows == 30 * 50 * 2
    pairs = set(zip(grid["prompt"].to_pylist(), grid["workflow_hash"].to_pylist(), strict=True))
    assert len(pairs) == 30 * 50
    assert len({h for _, h in pairs}) == 30 and len({p for p, _ in pairs}) == 50
    index = (run / "library" / "workflows" / "index.jsonl").read_text().splitlines()
    assert {h for _, h in pairs} <= {json.loads(line)["hash"] for line in index}
    record = json.loads((run / "comfygen_ft" / "flowforge_run.json").read_text())
    assert record["config"]["triplets"] == str(run / "comfygen_data")
    assert record["data"]["triplets"] == 3000 and record["data"]["library_workflows"] == 30
    report = json.loads((run / "evaluate" / "report.json").read_text())
    calls = {m["name"]: m["data_calls"] for m in report["methods"]}
    assert calls["comfygen_ft"] == 3000 and calls["best_fixed"] == 3000  # 1,500 pairs x 2


def test_evaluate_compares_what_a_run_built(quick_run: tuple[Path, str], tmp_path: Path) -> None:
    run, _ = quick_run
    out = tmp_path / "eval"
    args = ["evaluate", "--run", str(run), "--prompts", "4", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["prompts"] == 4
    assert {m["name"] for m in report["methods"]} >= {"default", "best_fixed", "sft", "grpo"}
    in_run = json.loads((run / "evaluate" / "report.json").read_text())
    calls = {m["name"]: m["data_calls"] for m in in_run["methods"]}
    again = {m["name"]: m["data_calls"] for m in report["methods"]}
    assert again["grpo"] == calls["grpo"] > calls["best_fixed"]  # the rounds' judgements too
    # the same --out again: refused before any work, the report kept; --overwrite replaces it
    refused = runner.invoke(app, [*args[:-4], "--prompts", "3", "--out", str(out)])
    assert refused.exit_code == 2 and "--overwrite" in " ".join(refused.output.split())
    assert json.loads((out / "report.json").read_text())["config"]["prompts"] == 4
    replaced = runner.invoke(app, [*args[:-4], "--prompts", "3", "--out", str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "report.json").read_text())["config"]["prompts"] == 3


def test_evaluate_uses_the_judge_the_run_was_made_with(
    quick_run: tuple[Path, str], tmp_path: Path
) -> None:
    """A run made with --judge sim:1 is evaluated by world 1 unless --judge says otherwise,
    not silently by the default world."""
    run, _ = quick_run
    other = tmp_path / "run"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("run.lock", "evaluate"))
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"judge": "sim:1"}))
    args = ["evaluate", "--run", str(other), "--prompts", "2", "--jobs", "1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "own")])
    assert result.exit_code == 0, result.output
    assert "judge: sim:1, the run's own" in result.stderr
    assert json.loads((tmp_path / "own" / "report.json").read_text())["judge"]["id"] == "sim:1"
    given = runner.invoke(app, [*args, "--judge", "sim:2", "--out", str(tmp_path / "given")])
    assert given.exit_code == 0, given.output
    assert json.loads((tmp_path / "given" / "report.json").read_text())["judge"]["id"] == "sim:2"


def test_the_evaluation_judge_comes_from_the_flag_the_run_or_the_default(tmp_path: Path) -> None:
    assert evaluation_judge(None, None, None) == ("sim", {})
    assert evaluation_judge(None, "sim:4", ["a=b"]) == ("sim:4", {"a": "b"})
    saved = {"judge": "pkg.mod:make", "judge_opt": [["url", "http://x"]]}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert evaluation_judge(tmp_path, None, None) == ("pkg.mod:make", {"url": "http://x"})
    assert evaluation_judge(tmp_path, None, ["url=http://y"]) == (
        "pkg.mod:make",
        {"url": "http://y"},
    )
    assert evaluation_judge(tmp_path, "sim", None) == ("sim", {})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the run's judge"):
        evaluation_judge(tmp_path, None, None)
    with pytest.raises(ValueError, match=r"no config\.json; give --judge"):
        evaluation_judge(tmp_path / "elsewhere", None, None)


def test_evaluate_warns_when_a_given_grpo_policy_started_from_another_sft(
    quick_run: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`evaluate --run RUN --grpo OTHER` guides OTHER from the run's SFT unless --start says
    otherwise; when OTHER's record says it started elsewhere, the user hears so."""
    run, _ = quick_run
    last = run / "refine" / "round-2"
    kept = json.loads((run / "refine" / "refine.json").read_text())["policy"]
    other = last / ("grpo-2" if kept == "grpo" else "grpo")  # started from round-2/sft too
    inputs = eval_inputs(run, None, None, None, None, None, other)
    warned = " ".join(capsys.readouterr().err.split())
    assert inputs.start is None and inputs.sft == run / "sft"
    assert f"pass --start {last / 'sft'}" in warned
    given = eval_inputs(run, None, None, None, None, None, other, start=last / "sft")
    assert given.start == last / "sft" and capsys.readouterr().err == ""
    first = eval_inputs(run, None, None, None, None, None, run / "grpo")  # from the run's SFT
    assert first.start is None and capsys.readouterr().err == ""


def test_grpo_trains_from_a_runs_policy_and_returns_a_finished_run(
    quick_run: tuple[Path, str], tmp_path: Path
) -> None:
    run, _ = quick_run
    out = tmp_path / "grpo"
    args = ["grpo", "--sft", str(run / "sft"), "--reward", str(run / "reward"), "--out", str(out)]
    result = runner.invoke(app, [*args, "--quick", "--steps", "2"])
    assert result.exit_code == 0, result.output
    lines = (out / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    assert (out / "model.safetensors").is_file()
    other = runner.invoke(app, [*args, "--quick", "--steps", "3"])
    assert other.exit_code == 2 and "steps" in other.output  # another run's settings


def test_grpo_with_audits_judges_its_own_samples(
    quick_run: tuple[Path, str], tmp_path: Path
) -> None:
    run, _ = quick_run
    settings = tmp_path / "audits.toml"
    settings.write_text("audit_samples = 2\nusable_only = false\n")  # quick designs: not usable
    out = tmp_path / "grpo"
    args = ["grpo", "--sft", str(run / "sft"), "--reward", str(run / "reward"), "--out", str(out)]
    audit = ["--audit-every", "1", "--judge", "sim", "--config", str(settings)]
    result = runner.invoke(app, [*args, "--quick", "--steps", "2", *audit])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [line["audit_calls"] for line in lines] == [2, 4]
    record = json.loads((out / "flowforge_run.json").read_text())
    assert record["result"]["audit_calls"] == 4 and record["config"]["audit_every"] == 1


def test_refine_rounds_judge_grpo_designs_refit_and_the_judges_pick_is_what_gets_evaluated(
    quick_run: tuple[Path, str], tmp_path: Path
) -> None:
    source, _ = quick_run
    run = tmp_path / "run"
    shutil.copytree(source, run)  # the stages before refine stay done (same keys)
    (run / "run.lock").unlink(missing_ok=True)
    settings = tmp_path / "refine.toml"
    settings.write_text(
        "[grpo]\naudit_every = 1\naudit_samples = 2\nusable_only = false\n"  # quick designs
        "[refine]\nenabled = true\nrounds = 2\nsamples = 1\npolicies = 2\nsft_designs = true\n"
        "sft_top_k = 3\nprobes = 1\n"
    )
    result = runner.invoke(app, ["run", "--quick", "--out", str(run), "--config", str(settings)])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("done before, skipped") == 6  # all but GRPO, refine, evaluate
    # round 2 takes its one design per prompt in turn from round 1's two GRPO runs
    assert "sampled designs for 300/300" in result.stderr
    for name in ("grpo", "grpo-2"):
        assert f"sampled designs of {name} for 150/150" in result.stderr
    summary = json.loads((run / "refine" / "refine.json").read_text())
    first, second = (
        pq.read_table(run / "refine" / f"round-{n}" / "judged.parquet") for n in (1, 2)
    )
    # a design per prompt, then one library probe per prompt (probes = 1), in each round
    assert [r["judge_calls"] for r in summary["rounds"]] == [600, 600]
    assert [r["probe_calls"] for r in summary["rounds"]] == [300, 300]
    assert first.num_rows == second.num_rows == 600
    items = first.column("item").to_pylist() + second.column("item").to_pylist()
    assert len(set(items)) == 1200  # the second round's judgements continue the first's
    # each round draws its own designs (its own seeds, its own policies)
    designs = [t.slice(0, 300).column("workflow_text").to_pylist() for t in (first, second)]
    assert designs[0] != designs[1]
    # the probes are library workflows, each paired with a prompt nothing judged it with
    catalog = load_catalog(run / "library" / "object_info.json")
    workflows = load_workflow_dir(run / "library" / "workflows").values()
    library = set(library_texts(workflows, catalog))
    triplets = run_table(run / "collect")[0]
    seen = set(_prompt_texts(triplets))
    for table in (first, second):
        probes = table.slice(300)
        pairs = _prompt_texts(probes)
        assert len(set(pairs)) == 300 and not set(pairs) & seen
        assert {text for _, text in pairs} <= library
        seen |= set(pairs)  # round 2 probes further down the list than round 1
    # two GRPO runs per round, GRPO seeds 0 and 1; the judge keeps one of the last round's
    last = run / "refine" / "round-2"
    runs = [run / "grpo"] + [
        run / "refine" / f"round-{n}" / name for n in (1, 2) for name in ("grpo", "grpo-2")
    ]
    records = [json.loads((d / "flowforge_run.json").read_text()) for d in runs]
    assert [r["config"]["seed"] for r in records[1:]] == [0, 1, 0, 1]
    choice = json.loads((last / "choice.json").read_text())
    assert summary["choice"] == choice and set(choice["scores"]) == {"grpo", "grpo-2"}
    best = max(choice["scores"].values())
    assert choice["chosen"] == summary["policy"] and choice["scores"][choice["chosen"]] == best
    assert choice["prompts"] == 20 and 0 < choice["judge_calls"] <= 40
    # ... on validation prompts: none of them was collected, so no stage trained on them
    validation = {p.id for p in load_prompts("validation")}
    collected = set(run_table(run / "collect")[0].column("prompt_id").to_pylist())
    assert set(choice["prompt_ids"]) <= validation and len(set(choice["prompt_ids"])) == 20
    assert not collected & validation and collected
    kept = last / summary["policy"]
    # every GRPO run audits; the kept run's audits are read from its own record, the
    # others' (which chose what the rounds judged, or competed for the choice) are charged
    # through the summary, with the choice's judge calls
    audits = {d: r["result"]["audit_calls"] for d, r in zip(runs, records, strict=True)}
    assert all(n > 0 for n in audits.values())
    others = sum(n for d, n in audits.items() if d != kept)
    assert summary["judge_calls"] == 1200 + others + choice["judge_calls"]
    assert (last / "reward" / "config.json").is_file()
    assert (kept / "model.safetensors").is_file()
    # the last round's GRPO started from an SFT paired by that round's ensemble (refit_sft);
    # the first round's from the run's SFT
    repaired = last / "sft"
    assert summary["sft"] == "sft" and (repaired / "model.safetensors").is_file()
    sft_record = json.loads((repaired / "flowforge_run.json").read_text())["config"]
    assert sft_record["pairing"] == "ensemble"
    assert sft_record["reward_dir"] == str(last / "reward")
    assert sft_record["pairs"] == quick_config().sft.pairs
    # ... among every round's judged designs (sft_designs) that are not library workflows
    # (sft_library_share = 0), in the kept policy's own model (the preset's small one)
    assert sft_record["designs"] == [
        str(run / "refine" / f"round-{n}" / "judged.parquet") for n in (1, 2)
    ]
    assert sft_record["library_share"] == 0.0
    assert sft_record["train"]["model"] == asdict(quick_config().refine.sft_model)
    sft_data = json.loads((repaired / "flowforge_run.json").read_text())["data"]
    files = list((run / "library" / "workflows").glob("*.json"))
    assert sft_data["library_workflows"] == len(files) and sft_data["judged_designs"] > 0
    assert sft_data["library_share"] == 0.0
    assert sft_record["pairing_top_k"] == 3  # each prompt paired among its 3 best (sft_top_k)
    assert sft_data["effective_workflows_per_prompt"]["p90"] <= 3 + 1e-6
    starts = [r["config"]["sft_dir"] for r in records[1:]]
    assert starts == [str(run / "sft")] * 2 + [str(repaired)] * 2
    assert "GRPO again from the re-paired SFT" in result.stderr
    report = json.loads((run / "evaluate" / "report.json").read_text())
    assert report["inputs"]["grpo"] == str(kept)
    assert report["inputs"]["grpo_data_calls"] == summary["judge_calls"]
    assert report["inputs"]["sft"] == str(run / "sft")
    assert report["inputs"]["start"] == str(repaired)
    design = run_design(run)  # what `flowforge design --run RUN` uses
    assert design.policy == kept and design.reward == last / "reward"
    assert design.reference in (None, repaired)  # guidance extrapolates from GRPO's start
    calls = {m["name"]: m["data_calls"] for m in report["methods"]}
    grpo_calls = calls["best_fixed"] + 1200 + sum(audits.values()) + choice["judge_calls"]
    assert calls["grpo"] == grpo_calls
    assert calls["sft"] == 0  # the run's SFT, random pairs: it learned from no judgement
    assert calls["grpo_start"] == grpo_calls - audits[kept]  # the rounds' ensemble chose its pairs
    sweep = {point["w"]: point["method"] for point in report["guidance_sweep"]}
    assert sweep[0.0] == "grpo_start"


def test_other_choice_settings_redo_the_choice_and_keep_the_refine_rounds(
    quick_run: tuple[Path, str], tmp_path: Path
) -> None:
    source, _ = quick_run
    run = tmp_path / "run"
    shutil.copytree(source, run)
    (run / "run.lock").unlink(missing_ok=True)
    last = run / "refine" / "round-2"
    kept = {
        path: path.read_bytes()
        for path in (run / "refine").rglob("*")
        if path.is_file() and path.name in ("judged.parquet", "log.jsonl", "model.safetensors")
    }
    assert len(kept) >= 10  # two rounds' judgements, four GRPO runs, the re-paired SFT
    settings = tmp_path / "choice.toml"
    settings.write_text("[refine]\nchoose_prompts = 12\nchoose_temperature = 0.9\n")
    result = runner.invoke(app, ["run", "--quick", "--out", str(run), "--config", str(settings)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())  # the console wraps long lines
    assert said.count("done before, skipped") == 7  # all but refine and evaluate
    assert (
        "refine: resuming, its earlier output kept (settings changed: refine.choose_prompts, "
        "refine.choose_temperature; it redoes only what those decide)" in said
    )
    assert "judging the policies again" in said
    assert "evaluate: running from nothing" in said  # the kept policy may differ
    assert {path: path.read_bytes() for path in kept} == kept  # nothing trained or judged again
    choice = json.loads((last / "choice.json").read_text())
    assert choice["prompts"] == 12 and choice["temperature"] == 0.9
    summary = json.loads((run / "refine" / "refine.json").read_text())
    assert summary["choice"] == choice and summary["policy"] == choice["chosen"]


def _prompt_texts(table: pa.Table) -> list[tuple[str, str]]:
    """The (prompt id, workflow text) pairs of a table with the export's columns."""
    ids, texts = table.column("prompt_id").to_pylist(), table.column("workflow_text").to_pylist()
    return list(zip(ids, texts, strict=True))


def test_a_refine_grpo_run_that_fails_in_its_process_is_an_error_naming_it(
    quick_run: tuple[Path, str], tmp_path: Path
) -> None:
    source, _ = quick_run
    record = json.loads((source / "grpo" / "flowforge_run.json").read_text())
    finished = GRPORunConfig(**record["config"])  # returns at once: it is done
    broken = replace(finished, seed=1, sft_dir=str(tmp_path / "missing"), out=str(tmp_path / "b"))
    with pytest.raises(StageProcessError, match=f"GRPO in {tmp_path / 'b'} .*exit code 1"):
        train_at_once([finished, broken], None, source / "reward")


def test_refine_sampling_gives_the_same_designs_in_one_process_or_spread_over_two(
    quick_run: tuple[Path, str],
) -> None:
    source, _ = quick_run
    catalog = load_catalog(source / "library" / "object_info.json")
    settings = SamplingSettings(1.0, True, 120, 8, "")
    draws = [
        Draw(source / name, ("a red fox at dawn", "a castle in fog"), (1, 2), n)
        for name, n in (("grpo", 2), ("sft", 1), ("grpo", 1))
    ]
    alone = draw(draws, catalog, settings, processes=1)
    heard: list[Draw] = []
    spread = draw(draws, catalog, settings, processes=2, on_done=heard.append)
    assert [[s.text for s in found] for found in spread] == [
        [s.text for s in found] for found in alone
    ]
    assert [len(found) for found in spread] == [4, 2, 2] and heard == draws


def test_run_show_config_prints_the_resolved_settings(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('judge = "sim:1"\n[grpo]\nsteps = 3\n')
    result = runner.invoke(app, ["run", "--quick", "--config", str(config), "--show-config"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["judge"] == "sim:1" and shown["grpo"]["steps"] == 3
    assert shown["sft"] == quick_config().to_json()["sft"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--config", "{cfg}"], "unknown setting 'grpo.stepz'"),
        (["evaluate", "--out", "{tmp}/e"], "give --run RUN, or at least --library and --data"),
        (["evaluate", "--run", "{tmp}", "--out", "{tmp}/e"], "is it a `flowforge run` directory"),
        (["evaluate", "--library", "{tmp}", "--data", "{tmp}/nope", "--out", "{tmp}/e"],
         "not found: --data"),
        (["grpo", "--sft", "{tmp}/nope", "--reward", "{tmp}/r", "--out", "{tmp}/g"], "nope"),
        (["grpo", "--sft", "{tmp}", "--reward", "{tmp}", "--out", "{tmp}/g", "--audit-every", "5"],
         "audit_every = 5 needs --judge"),
        (["grpo", "--sft", "{tmp}", "--reward", "{tmp}", "--out", "{tmp}/g", "--judge", "sim"],
         "--judge is for the audits"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[grpo]\nstepz = 3\n")
    filled = [a.replace("{cfg}", str(cfg)).replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, filled)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
