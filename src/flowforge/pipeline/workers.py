"""Stages in processes of their own, so that independent stages use both cores at once.

``flowforge run`` with ``jobs > 1`` starts each stage that runs in a new *spawned* process
(`StageProcess`): a fresh interpreter, so a stage gives the same result whichever stages
ran before it or beside it, and torch's thread settings of one stage do not leak into
another. The process

- writes its stdout and stderr (progress bars, library warnings) to
  ``RUN/stages/<name>.log``, so two stages never draw over each other in the terminal;
- sends the stage's messages, then its result (or its exception), to the runner over a pipe
  of its own (the runner sees the pipe close if the process dies without a word);
- ignores Ctrl-C, which interrupts the runner, which then terminates it;
- exits by itself when the runner dies (a watchdog thread compares the parent's pid), so a
  killed run leaves no stage writing into the run directory when it is started again.

The runner (`pipeline.runner`) decides what runs when; this module only runs one stage.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
import traceback
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import torch

from ..reward.model import cpu_threads
from ..spawned import SPAWN, StageProcessError, sigint_ignored, watch_parent
from .config import RunConfig
from .layout import STAGES_DIR
from .stages import YIELD_NICENESS, Stage, StageContext, labelled

__all__ = [  # StageProcessError lives in spawned.py (the refine rounds' helpers raise it too)
    "Message",
    "StageProcess",
    "StageProcessError",
    "Timed",
    "execute",
    "log_path",
    "receive_any",
]

#: A stage's result as the runner records it: (result, wall seconds, CPU seconds).
Timed = tuple[dict[str, Any], float, float]


def execute(stage: Stage, ctx: StageContext) -> Timed:
    """Run `stage` in this process under the run's torch threads, its messages labelled
    with its name (`labelled`); its result and times."""
    here = replace(ctx, say=labelled(stage.name, ctx.say))
    start, cpu = time.perf_counter(), time.process_time()
    with cpu_threads(ctx.config.threads or torch.get_num_threads()):
        result = stage.run(here)
    return result, time.perf_counter() - start, time.process_time() - cpu


def log_path(run: Path, name: str) -> Path:
    """Where a stage process writes its stdout and stderr."""
    return run / STAGES_DIR / f"{name}.log"


@dataclass(frozen=True)
class Message:
    """What a stage process sends: ``say`` (text), ``done`` (a `Timed`) or ``failed`` (the
    exception); ``died`` is the runner's own, for a pipe that closed without a result."""

    kind: str
    payload: Any


class StageProcess:
    """One stage running in a spawned process, and the pipe it reports on."""

    def __init__(self, stage: Stage, run: Path, config: RunConfig) -> None:
        self.stage = stage
        self.connection, sender = SPAWN.Pipe(duplex=False)
        self.process: SpawnProcess = SPAWN.Process(
            target=_main,
            args=(stage, run, config, sender, os.getpid()),
            name=f"flowforge-{stage.name}",
        )
        with sigint_ignored():  # inherited through exec: Ctrl-C reaches the runner only
            self.process.start()
        sender.close()  # the child has its own copy; ours would keep the pipe from closing

    def receive(self) -> Message:
        """The next message (call when `receive_any` says one is there)."""
        try:
            message: Message = self.connection.recv()
        except (EOFError, OSError, pickle.UnpicklingError):
            return Message("died", None)
        return message

    def died(self) -> StageProcessError:
        """The error for a process that ended without sending its result."""
        code = self.process.exitcode
        return StageProcessError(
            f"stage {self.stage.name}: its process ended with exit code {code} before it "
            f"finished (killed, or out of memory?); see {self.stage.name}.log in the run's "
            "stages/ directory. Run the same command again to resume."
        )

    def stop(self, grace: float = 10.0) -> None:
        """Let the process end within `grace` seconds (it has sent its result), else
        terminate it (the run stops after another stage failed, or was interrupted)."""
        self.process.join(timeout=grace)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


def receive_any(
    processes: list[StageProcess], timeout: float
) -> list[tuple[StageProcess, Message]]:
    """One message from each process that has one (or has died) within `timeout` seconds."""
    ready = set(connection_wait([p.connection for p in processes], timeout))
    return [(p, p.receive()) for p in processes if p.connection in ready]


def _main(
    stage: Stage,
    run: Path,
    config: RunConfig,
    sender: Connection,
    parent: int,
) -> None:
    """The stage process: output to its log, watchdog on, run, report."""
    watch_parent(parent)
    log = open(log_path(run, stage.name), "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)

    def say(text: str) -> None:
        print(text, flush=True)  # the log keeps the messages too, in order with the rest
        sender.send(Message("say", text))

    signal.signal(signal.SIGTERM, _exit_on_terminate)
    if stage.yields:
        lower_priority(YIELD_NICENESS)
    try:
        timed = execute(stage, StageContext(run, config, say))
    except _Terminated:
        raise SystemExit(143) from None  # the runner stopped it: nobody to tell
    except BaseException as error:  # sent back whatever it is, then exit
        traceback.print_exc()
        sender.send(Message("failed", _sendable(error)))
        raise SystemExit(1) from None
    sender.send(Message("done", timed))


def lower_priority(increment: int) -> None:
    """Raise this process's niceness by `increment`, in every thread it has: on Linux the
    nice value is per thread (setpriority(2), "BUGS"), and threads started later inherit
    their starter's, so the threads already running (torch's, the watchdog) are set one by
    one and the ones to come follow the main thread."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():  # elsewhere the nice value is the process's
        os.nice(increment)
        return
    for task in tasks.iterdir():
        tid = int(task.name)
        try:
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue


class _Terminated(BaseException):
    """SIGTERM from the runner, raised in the stage so that its `finally` blocks and
    Python's exit handlers run (semaphores and temporary files released, not leaked)."""


def _exit_on_terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _sendable(error: BaseException) -> BaseException:
    """`error` itself when it survives the trip to the runner (so the CLI shows a user
    error as one), else a `StageProcessError` carrying its type, message and traceback."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # any failure to round-trip: send text instead
        text = "".join(traceback.format_exception(error))
        return StageProcessError(f"{type(error).__name__}: {error}\n{text}")
    return error
