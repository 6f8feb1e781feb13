"""`flowforge design` as a user runs it: a real process, files written, errors in one line.

It must answer without importing torch or transformers (docs/benchmarks.md, "design
latency": those imports were 4.7 s of a 5.5 s command); the test checks the imports, not
the time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from policy_helpers import library_texts, memorize, tiny_tokenizer

from flowforge.policy.model import save_policy
from flowforge.workflow.anatomy import prune
from flowforge.workflow.api import load_api, to_api
from flowforge.workflow.library import load_seed_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import Bindings, from_text, to_text

TOKENIZER = tiny_tokenizer()
TEXT = next(t for t in library_texts() if "KSampler " in t and "LoraLoader" in t)

#: Runs the CLI in this process and reports which heavy modules it imported.
IMPORTS = """
import sys
from flowforge.cli import app
try:
    app(sys.argv[1:], prog_name="flowforge")
except SystemExit as stop:
    assert not stop.code, stop.code
print(sorted(m for m in ("torch", "transformers", "trl", "peft") if m in sys.modules))
"""


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("policy")
    save_policy(memorize(TOKENIZER, "a cat", TEXT), TOKENIZER, folder)
    return folder


def _flowforge(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "flowforge", *args]
    if code is not None:
        command = [sys.executable, "-c", code, *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_design_writes_api_and_ui_json_ready_to_queue(policy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cat.json"
    args = ("design", "a cat", "--policy", str(policy_dir), "--seed", "77", "-o", str(out))
    done = _flowforge(*args, "--ui", "--temperature", "0", "--negative", "blurry")
    assert done.returncode == 0, done.stderr
    api = json.loads(out.read_text())
    assert to_api(load_api(out)) == api
    sampler = next(node for node in api.values() if node["class_type"] == "KSampler")
    assert sampler["inputs"]["seed"] == 77
    texts = {n["inputs"]["text"] for n in api.values() if n["class_type"] == "CLIPTextEncode"}
    assert "a cat" in texts and any(t.startswith("blurry") for t in texts)
    ui = json.loads((tmp_path / "cat_ui.json").read_text())
    assert len(ui["nodes"]) == len(api)
    assert "designed in" in done.stderr


def test_design_imports_neither_torch_nor_transformers(policy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    guided = ("--reference", str(policy_dir), "--guidance", "2", "--samples", "3")
    done = _flowforge(
        "design", "a dog", "--policy", str(policy_dir), *guided, "-o", str(out), code=IMPORTS
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert out.is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--guidance", "2"), "--reference and --guidance go together"),
        (("--samples", "0"), "Invalid value for '--samples'"),
    ],
)
def test_bad_requests_fail_in_one_line(
    policy_dir: Path, args: tuple[str, ...], message: str
) -> None:
    done = _flowforge("design", "a cat", "--policy", str(policy_dir), *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_missing_policy_directory_is_named(tmp_path: Path) -> None:
    done = _flowforge("design", "a cat", "--policy", str(tmp_path / "nope"))
    assert done.returncode == 2
    assert "no such policy directory" in done.stderr and "Traceback" not in done.stderr


def test_run_sets_policy_reference_and_the_chosen_weight(policy_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(policy_dir, run / "grpo")
    shutil.copytree(policy_dir, run / "sft")
    (run / "evaluate").mkdir()
    report = {"guidance_choice": {"weight": 2.0, "prompts": 50, "judge_calls": 250}}
    (run / "evaluate" / "report.json").write_text(json.dumps(report))
    out = tmp_path / "d.json"
    done = _flowforge("design", "a cat", "--run", str(run), "--temperature", "0", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert f"guidance w=2 from {run / 'sft'}" in done.stderr and "1 sample(s)" in done.stderr
    assert out.is_file()
    missing = _flowforge("design", "a cat", "--run", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "no trained GRPO policy" in missing.stderr
    bare = _flowforge("design", "a cat")
    assert bare.returncode == 2 and "give --policy DIR" in bare.stderr


def test_run_hands_over_the_best_fixed_workflow_when_its_guard_says_so(
    policy_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(policy_dir, run / "grpo")
    (run / "evaluate").mkdir()
    catalog = default_catalog()
    fixed = to_text(load_seed_library()["sdxl_base"], catalog)[0]
    guard = {
        "method": "best_of_8", "handed": "best_fixed", "policy_score": 0.41,
        "fixed_score": 0.52, "prompts": 247, "judge_calls": 494, "fixed_text": fixed,
    }  # fmt: skip
    (run / "evaluate" / "report.json").write_text(json.dumps({"hand_over": guard}))
    out = tmp_path / "d.json"
    args = ("design", "a red bench", "--run", str(run), "--seed", "7", "--negative", "blurry")
    done = _flowforge(*args, "-o", str(out), "--ui")
    assert done.returncode == 0, done.stderr
    assert "0.410 on validation prompts against its best fixed workflow's 0.520" in done.stderr
    expected = to_api(
        prune(from_text(fixed, Bindings.request("a red bench", "blurry", 7)), catalog)
    )
    assert json.loads(out.read_text()) == expected
    assert (tmp_path / "d_ui.json").is_file()
    # --policy: the user asks for the policy, and gets it
    policy = _flowforge(*args, "--policy", str(run / "grpo"), "--temperature", "0")
    assert policy.returncode == 0, policy.stderr
    assert "best fixed" not in policy.stderr
    assert json.loads(policy.stdout) != expected
    # a guard that names no workflow is a clear error, not a crash
    lacking = {"hand_over": {**guard, "fixed_text": ""}}
    (run / "evaluate" / "report.json").write_text(json.dumps(lacking))
    broken = _flowforge(*args)
    assert broken.returncode == 2 and "hands over a fixed workflow it lacks" in broken.stderr
    unscored = {"hand_over": {k: v for k, v in guard.items() if k != "fixed_score"}}
    (run / "evaluate" / "report.json").write_text(json.dumps(unscored))
    broken = _flowforge(*args)
    assert broken.returncode == 2 and "lacks the guard's scores" in broken.stderr
