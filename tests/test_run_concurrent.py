"""``flowforge run`` with ``jobs > 1``: independent stages in processes of their own, at
once; failures and dead processes stop the run cleanly and leave it resumable (fake stages
from pipeline_fakes.py; the real ``--quick`` run uses the default ``jobs = 2`` in
test_cli_pipeline.py)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_fakes import branches, diamond, write_plan

from flowforge.pipeline.config import quick_config
from flowforge.pipeline.runner import read_marker, run_pipeline
from flowforge.pipeline.stages import STAGES, YIELD_NICENESS
from flowforge.pipeline.workers import StageProcessError

CONFIG = dataclasses.replace(quick_config(), jobs=2)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_gone(pid: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_independent_stages_run_at_once_each_in_a_process_of_its_own(tmp_path: Path) -> None:
    # b waits for c to have started and c for b: run one after another, neither would finish
    write_plan(tmp_path, {"b": {"wait_for": "c"}, "c": {"wait_for": "b"}})
    said: list[str] = []
    result = run_pipeline(CONFIG, tmp_path, stages=diamond(), say=said.append)
    assert [o.status for o in result.stages] == ["ran"] * 4
    pids = {o.name: o.result["pid"] for o in result.stages}
    assert len(set(pids.values()) | {os.getpid()}) == 5  # a fresh process per stage
    # messages come back through the runner, prefixed with the stage; prints go to its log
    assert "b: hello from b" in said and "c: hello from c" in said
    assert "printed by b" in (tmp_path / "stages" / "b.log").read_text()
    assert "printed by b" not in (tmp_path / "stages" / "c.log").read_text()
    # d started only after both of its inputs were done
    done = [line.split(":")[0] for line in said if ": done in" in line]
    assert done.index("d") > max(done.index("b"), done.index("c"))
    again = run_pipeline(CONFIG, tmp_path, stages=diamond())
    assert [o.status for o in again.stages] == ["skipped"] * 4


def test_a_stage_a_skipped_stage_made_ready_starts_beside_one_already_running(
    tmp_path: Path,
) -> None:
    """Resuming a run: c starts, then b is found done and skipped, which makes d ready. d
    must start at once (c waits to meet it), not when c ends: the default run, resumed
    after SFT, ran GRPO only after ComfyGen-FT had finished."""
    write_plan(tmp_path, {"c": {"wait_for": "d"}, "d": {"wait_for": "c"}})
    first = run_pipeline(CONFIG, tmp_path, stages=branches())
    assert [o.status for o in first.stages] == ["ran"] * 4
    for name in ("c", "d"):  # c and d to be redone; a and b stay done
        (tmp_path / "stages" / f"{name}.json").unlink()
        shutil.rmtree(tmp_path / name)  # no "started" left from the first run
    again = run_pipeline(CONFIG, tmp_path, stages=branches())
    assert [o.status for o in again.stages] == ["skipped", "ran", "skipped", "ran"]


def test_a_failing_stage_stops_the_one_beside_it_and_the_run_resumes(tmp_path: Path) -> None:
    write_plan(tmp_path, {"b": {"hang": True}, "c": {"wait_for": "b", "fail": "c broke"}})
    with pytest.raises(ValueError, match="c broke"):  # the stage's own error, as itself
        run_pipeline(CONFIG, tmp_path, stages=diamond())
    b_pid = int((tmp_path / "b" / "pid").read_text())
    assert wait_gone(b_pid)  # the hanging stage beside it was stopped, not left running
    for name in ("b", "c"):
        marker = read_marker(tmp_path, name)
        assert marker is not None and marker["status"] == "running"
    assert "ValueError: c broke" in (tmp_path / "stages" / "c.log").read_text()
    write_plan(tmp_path, {})
    result = run_pipeline(CONFIG, tmp_path, stages=diamond())
    assert [o.status for o in result.stages] == ["skipped", "resumed", "ran", "ran"]


def test_a_stage_process_that_dies_is_an_error_naming_the_stage(tmp_path: Path) -> None:
    write_plan(tmp_path, {"c": {"exit": 9}})
    with pytest.raises(StageProcessError, match="stage c: its process ended with exit code 9"):
        run_pipeline(CONFIG, tmp_path, stages=diamond())
    marker = read_marker(tmp_path, "c")
    assert marker is not None and marker["status"] == "running"


RUNNER = """
import dataclasses, sys
from pathlib import Path
from pipeline_fakes import diamond
from flowforge.pipeline.config import quick_config
from flowforge.pipeline.runner import run_pipeline
if __name__ == "__main__":
    run_pipeline(dataclasses.replace(quick_config(), jobs=2), Path(sys.argv[1]), stages=diamond())
"""


def test_stage_processes_exit_when_the_run_is_killed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_plan(run, {"b": {"hang": True}})
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runner = subprocess.Popen([sys.executable, str(script), str(run)], env=env)
    try:
        pid_file = run / "b" / "pid"
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and runner.poll() is None, "b never started"
            time.sleep(0.1)
        stage_pid = int(pid_file.read_text())
        runner.kill()  # SIGKILL: no cleanup in the runner at all
        runner.wait()
        assert wait_gone(stage_pid), "the stage process outlived its run"
    finally:
        if runner.poll() is None:
            runner.kill()


def test_a_yielding_stage_runs_at_lower_cpu_priority_and_the_others_do_not(
    tmp_path: Path,
) -> None:
    """ComfyGen-FT yields the cores to the stages the rest of the run waits on."""
    stages = [dataclasses.replace(s, yields=s.name == "c") for s in diamond()]
    result = run_pipeline(CONFIG, tmp_path, stages=stages)
    niceness = {o.name: o.result["niceness"] for o in result.stages}
    base = os.nice(0)
    assert niceness == {"a": base, "b": base, "c": min(base + YIELD_NICENESS, 19), "d": base}


def test_comfygen_ft_is_the_stage_that_yields() -> None:
    assert [s.name for s in STAGES if s.yields] == ["comfygen_ft"]


LOWERED = """
import os, threading
from flowforge.pipeline.workers import lower_priority

def niceness():
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

seen = {}
go = threading.Event()
def early():
    go.wait()
    seen["early"] = niceness()
before = threading.Thread(target=early)
before.start()
lower_priority(5)
go.set()
before.join()
later = threading.Thread(target=lambda: seen.__setitem__("later", niceness()))
later.start()
later.join()
print(seen["early"], niceness(), seen["later"])
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread niceness: Linux")
def test_lower_priority_reaches_threads_started_before_and_after() -> None:
    """On Linux the nice value is per thread: torch's threads, started before the stage
    lowers its priority, must be lowered too."""
    out = subprocess.run(
        [sys.executable, "-c", LOWERED], capture_output=True, text=True, check=True
    ).stdout.split()
    base = os.nice(0)
    assert [int(v) for v in out] == [min(base + 5, 19)] * 3
