"""Spawned helper processes that behave under a run: Ctrl-C goes to the runner only, and a
helper whose parent dies exits by itself.

Used by the stage processes (`pipeline.workers`), the refine rounds' extra GRPO runs and
sampling (`pipeline.refine`, `pipeline.draws`) and the ensemble's members trained at once
(`reward.train`). Spawned, not forked: a fresh interpreter, so torch's threads and state
of the parent cannot leak into the child.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

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
