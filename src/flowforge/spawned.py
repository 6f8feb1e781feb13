"""Spawned helper processes that behave under a run: Ctrl-C goes to the runner only, and a
helper whose parent dies exits by itself.

Used by the stage processes (`pipeline.workers`), the refine rounds' extra GRPO runs and
sampling (`pipeline.refine`, `pipeline.draws`), the ensemble's members trained at once
(`reward.train`) and the evaluation's designers (`evaluate.designing`); the pools among them
come from `worker_pool`. Spawned, not forked: a fresh interpreter, so torch's threads and
state of the parent cannot leak into the child.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

SPAWN = multiprocessing.get_context("spawn")


class StageProcessError(RuntimeError):
    """A stage process (or a stage's helper) that failed with an error that could not be
    sent back as itself, or died without a word (killed, out of memory); the message holds
    what is known."""


_WATCHDOG_SECONDS = 1.0


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while a helper process is started, so that it starts ignoring it too.

    Ctrl-C goes to the terminal's whole process group; a helper would die with a
    KeyboardInterrupt traceback on the terminal (it may still be importing, before its
    output goes to its log). Instead the runner alone is interrupted and terminates its
    stage processes (which take their helpers with them: `watch_parent`); their markers
    say ``running`` and the next call resumes them."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; a runner off it has no Ctrl-C
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def watch_parent(parent: int) -> None:
    """Start a daemon thread that exits this process at once when `parent` is gone (the
    process was re-parented), so a killed run leaves nothing writing into its directory."""
    threading.Thread(target=_watch, args=(parent,), daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_WATCHDOG_SECONDS)
    os._exit(70)


@contextmanager
def worker_pool(
    workers: int,
    threads: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[ProcessPoolExecutor]:
    """A pool of `workers` spawned processes, all started before it is handed out.

    Each worker watches this process (`watch_parent`), runs torch and numpy's BLAS on
    `threads` threads and then calls ``initializer(*initargs)``. The workers are started here, on
    this thread, with SIGINT ignored (`sigint_ignored`), so Ctrl-C reaches the caller only,
    however late a task is submitted (a pool starts its workers on submit, maybe from
    another thread). Leaving the block waits for running tasks and cancels queued ones; an
    exception leaving it (Ctrl-C included) terminates the workers first."""
    setup = (os.getpid(), threads, initializer, initargs)
    pool = ProcessPoolExecutor(workers, SPAWN, initializer=_start_worker, initargs=setup)
    try:
        with sigint_ignored():
            started = [pool.submit(_started) for _ in range(workers)]
            for future in started:
                future.result()
        yield pool
    except BaseException:
        _terminate_workers(pool)  # an error or Ctrl-C here: do not wait for their tasks
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate a pool's worker processes (Python 3.14's `terminate_workers`; before it,
    the pool's process table is the only handle on them)."""
    processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        if process.is_alive():
            process.terminate()


def _start_worker(
    parent: int,
    threads: int,
    initializer: Callable[..., None] | None,
    initargs: tuple[Any, ...],
) -> None:
    import torch  # here, not at the top: the runner's CLI imports this module early
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # also in a worker a late submit started
    watch_parent(parent)
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")  # numpy's too (reward.model.cpu_threads)
    if initializer is not None:
        initializer(*initargs)


def _started() -> int:
    return os.getpid()
