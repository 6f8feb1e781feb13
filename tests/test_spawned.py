"""`spawned.worker_pool`: the pool every helper of a stage comes from (sampling, reward
members, the evaluation's designers). Its tasks live here, at module level, so a spawned
worker can import them (pytest puts tests/ on sys.path, which spawn hands to the child)."""

from __future__ import annotations

import os
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from flowforge.spawned import worker_pool

_SEEN: dict[str, str] = {}


def _remember(value: str) -> None:
    _SEEN["value"] = value


def _report() -> tuple[int, str, int]:
    import torch

    return os.getpid(), _SEEN["value"], torch.get_num_threads()


def _fail() -> None:
    raise KeyError("a task's own error")


def _die() -> None:
    os._exit(9)  # killed mid-task, as the OOM killer would


def _sleep_then_mark(folder: str) -> None:
    Path(folder, "pid").write_text(str(os.getpid()))
    time.sleep(120)
    Path(folder, "finished").write_text("yes")


def test_workers_run_the_initializer_and_the_thread_setting() -> None:
    with worker_pool(2, 1, _remember, ("set up",)) as pool:
        found = [pool.submit(_report).result() for _ in range(4)]
    assert {value for _, value, _ in found} == {"set up"}
    assert {threads for _, _, threads in found} == {1}
    assert os.getpid() not in {pid for pid, _, _ in found}


def test_a_task_error_reaches_the_caller_as_itself() -> None:
    with worker_pool(1, 1) as pool, pytest.raises(KeyError, match="own error"):
        pool.submit(_fail).result()


def test_a_worker_that_dies_mid_task_breaks_the_pool_instead_of_hanging() -> None:
    with worker_pool(1, 1) as pool, pytest.raises(BrokenProcessPool):
        pool.submit(_die).result(timeout=60)


def test_an_error_in_the_caller_terminates_busy_workers(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the caller failed"), worker_pool(1, 1) as pool:
        pool.submit(_sleep_then_mark, str(tmp_path))
        while not (tmp_path / "pid").exists():
            time.sleep(0.05)
        raise RuntimeError("the caller failed")
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, not sleeping on: the block did not wait for its task
    assert not (tmp_path / "finished").exists()
