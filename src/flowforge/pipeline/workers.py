"""Stages in processes of their own, so that independent stages use both cores at once.

``flowforge run`` with ``jobs > 1`` starts each stage that runs in a new *spawned* process
(`StageProcess`): a fresh interpreter, so a stage gives the same result whichever stages
ran before it or beside it, and torch's thread settings of one stage do not leak into
another. The process

- writes its stdout and stderr (progress bars, library warnings) to
  ``RUN/stages/<name>.log``, so two stages never draw over each other in the terminal;
- sends the stage's messages, then its result (or its exception), to the runner over one
  `multiprocessing` queue shared by all stage processes;
- exits by itself when the runner dies (a watchdog thread compares the parent's pid), so a
  killed run leaves no stage writing into the run directory when it is started again.

The runner (`pipeline.runner`) decides what runs when; this module only runs one stage.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import torch

from ..reward.model import torch_threads
from .config import RunConfig
from .stages import Stage, StageContext

#: A stage's result as the runner records it: (result, wall seconds, CPU seconds).
Timed = tuple[dict[str, Any], float, float]

_SPAWN = multiprocessing.get_context("spawn")
_WATCHDOG_SECONDS = 1.0


class StageProcessError(RuntimeError):
    """A stage process that failed with an error that could not be sent back as itself,
    or died without a word (killed, out of memory); the message holds what is known."""


def execute(stage: Stage, ctx: StageContext) -> Timed:
    """Run `stage` in this process under the run's torch threads; its result and times."""
    start, cpu = time.perf_counter(), time.process_time()
    with torch_threads(ctx.config.threads or torch.get_num_threads()):
        result = stage.run(ctx)
    return result, time.perf_counter() - start, time.process_time() - cpu


def log_path(run: Path, name: str) -> Path:
    """Where a stage process writes its stdout and stderr."""
    return run / "stages" / f"{name}.log"


@dataclass(frozen=True)
class Message:
    """What a stage process sends: ``say`` (text), ``done`` (a `Timed`) or ``failed``."""

    stage: str
    kind: str
    payload: Any


class StageProcess:
    """One stage running in a spawned process; `messages` is the runner's shared queue."""

    def __init__(
        self, stage: Stage, run: Path, config: RunConfig, messages: multiprocessing.Queue[Any]
    ) -> None:
        self.stage = stage
        self.process: SpawnProcess = _SPAWN.Process(
            target=_main,
            args=(stage, run, config, messages, os.getpid()),
            name=f"flowforge-{stage.name}",
        )
        self.process.start()

    def alive(self) -> bool:
        return self.process.is_alive()

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


def new_queue() -> multiprocessing.Queue[Any]:
    """The queue every stage process of a run sends its messages on."""
    return _SPAWN.Queue()


def receive(messages: multiprocessing.Queue[Any], timeout: float) -> Message | None:
    """The next message, or None when none arrived within `timeout` seconds."""
    try:
        message: Message = messages.get(timeout=timeout)
    except queue.Empty:
        return None
    return message


def _main(
    stage: Stage,
    run: Path,
    config: RunConfig,
    messages: multiprocessing.Queue[Any],
    parent: int,
) -> None:
    """The stage process: output to its log, watchdog on, run, report."""
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    log = open(log_path(run, stage.name), "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)

    def say(text: str) -> None:
        print(text, flush=True)  # the log keeps the messages too, in order with the rest
        messages.put(Message(stage.name, "say", text))

    try:
        timed = execute(stage, StageContext(run, config, say))
    except BaseException as error:  # sent back whatever it is, then exit
        traceback.print_exc()
        messages.put(Message(stage.name, "failed", _sendable(error)))
        raise SystemExit(1) from None
    messages.put(Message(stage.name, "done", timed))


def _sendable(error: BaseException) -> BaseException:
    """`error` itself when it survives the trip to the runner (so the CLI shows a user
    error as one), else a `StageProcessError` carrying its type, message and traceback."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # any failure to round-trip: send text instead
        text = "".join(traceback.format_exception(error))
        return StageProcessError(f"{type(error).__name__}: {error}\n{text}")
    return error


def _watch_parent(parent: int) -> None:
    """Exit at once when the runner is gone (the process was re-parented)."""
    while os.getppid() == parent:
        time.sleep(_WATCHDOG_SECONDS)
    os._exit(70)
