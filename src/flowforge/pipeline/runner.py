"""``flowforge run``: every stage in order into one run directory, resumable stage by stage.

Each stage has a **key**: the hash of its config sections and of the fingerprints of the
stages it reads. Its marker ``RUN/stages/<name>.json`` says ``running`` or ``done`` with
that key. When the run starts again:

- ``done`` with the same key: skipped (its fingerprint feeds the keys after it);
- ``running`` with the same key (the process was killed): a resumable stage continues from
  its own checkpoints (collection journal, SFT and GRPO checkpoints), any other is cleared
  and restarted;
- another key only because of settings the stage rechecks itself (`Stage.rechecked`: the
  refine rounds' choice among the last round's policies, and the last round's re-paired
  SFT): resumed, its output kept, and the stage redoes what those settings decide (the
  choice, or the re-paired SFT and what starts from it; not the rounds before them);
- anything else (no marker, another key: a setting changed, or an earlier stage was redone):
  its directory is cleared and the stage runs from nothing.

A stage that finishes gets a new fingerprint, so every stage after it that read its output
is redone. The resolved config is saved as ``RUN/config.json`` and the stages' times as
``RUN/run.json``; one ``flowforge run`` at a time holds ``RUN/run.lock``.

With ``jobs > 1`` (the default 2) a stage starts as soon as the stages it reads are done,
each in a spawned process of its own (`pipeline.workers`), so reward trains beside SFT and
ComfyGen-FT beside GRPO and the refine rounds; the markers, keys and fingerprints are the
same as one after another, and so are the results. ``jobs = 1`` runs every stage here, in
order.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..data.prompts import SPLIT_VERSIONS
from ..evaluate.report import REPORT_JSON, hand_over_sentence, results_table
from ..files import remove, write_text_atomic
from .config import RunConfig
from .layout import EVALUATE, STAGES_DIR
from .stages import STAGES, Stage, StageContext
from .workers import StageProcess, Timed, execute, receive_any

CONFIG_FILE = "config.json"
RUN_FILE = "run.json"
LOCK_FILE = "run.lock"


class RunError(RuntimeError):
    """A run that cannot proceed (locked by another process, a stage's output missing)."""


@dataclass(frozen=True)
class StageOutcome:
    """What happened to one stage in this call."""

    name: str
    status: str  # "skipped", "ran", "resumed"
    seconds: float  # wall time
    cpu_seconds: float  # CPU time of this process (what a machine to itself would take)
    result: dict[str, Any]


@dataclass(frozen=True)
class RunResult:
    """The stages of this call and the evaluation's main table (Markdown)."""

    run: Path
    stages: tuple[StageOutcome, ...]
    table: str | None
    seconds: float
    #: What ``flowforge design --run`` hands over and why (`hand_over_sentence`), if known.
    hand_over: str | None = None


def stage_key(stage: Stage, config: RunConfig, fingerprints: dict[str, str]) -> str:
    """sha256 of the stage's settings, of the fingerprints of the stages it reads and of the
    versions of the prompt splits it reads (`Stage.splits`: every stage the train split's,
    the choices validation's, the evaluation held-out's too). A stage reading only the train
    split keys its version as a plain string, as every stage did before the versions were
    per split, so the training stages of such runs stay valid."""
    return _key(stage, _settings(stage, config), _inputs(stage, config, fingerprints))


def _settings(stage: Stage, config: RunConfig) -> dict[str, Any]:
    """The config sections (or dotted settings) a stage's key covers, as JSON."""
    return {name: config.section(name) for name in stage.sections}


def _inputs(stage: Stage, config: RunConfig, fingerprints: dict[str, str]) -> dict[str, str]:
    """The fingerprints of the stages it reads under `config`."""
    return {name: fingerprints[name] for name in stage.reads(config)}


def _key(stage: Stage, sections: dict[str, Any], inputs: dict[str, str]) -> str:
    """`stage_key` of given section values and input fingerprints."""
    splits: str | dict[str, str] = (
        SPLIT_VERSIONS["train"]
        if stage.splits == ("train",)
        else {name: SPLIT_VERSIONS[name] for name in stage.splits}
    )
    payload = {"stage": stage.name, "splits": splits, "sections": sections, "inputs": inputs}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def read_marker(run: Path, name: str) -> dict[str, Any] | None:
    """A stage's marker, None when there is none (or it is unreadable: then it is redone)."""
    path = run / STAGES_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clear_stage(run: Path, name: str) -> None:
    """Remove a stage's directory (and a half-written sibling ``<name>.partial``)."""
    for path in (run / name, run / f"{name}.partial"):
        remove(path)


@contextmanager
def run_lock(run: Path) -> Iterator[None]:
    """Hold ``RUN/run.lock`` (released by the OS even when the process is killed)."""
    run.mkdir(parents=True, exist_ok=True)
    with open(run / LOCK_FILE, "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run} is being run by another process; wait for it") from None
        yield


def run_pipeline(
    config: RunConfig,
    run: Path,
    *,
    stages: Sequence[Stage] = STAGES,
    say: Callable[[str], None] | None = None,
) -> RunResult:
    """Run (or resume) every stage of `config` in `run`; see the module docstring."""
    started = time.perf_counter()
    message = say or (lambda text: None)
    with run_lock(run):
        (run / STAGES_DIR).mkdir(exist_ok=True)
        _write_json(run / CONFIG_FILE, config.to_json())  # a valid --config file itself
        ctx = StageContext(run, config, message)
        if config.jobs == 1:
            outcomes = _run_in_order(ctx, stages)
        else:
            outcomes = _run_concurrently(ctx, stages, config.jobs)
        elapsed = time.perf_counter() - started
        _write_json(run / RUN_FILE, _summary(outcomes, elapsed))
    table, hand_over = report_lines(run)
    return RunResult(run, tuple(outcomes), table, elapsed, hand_over)


def _run_in_order(ctx: StageContext, stages: Sequence[Stage]) -> list[StageOutcome]:
    """``jobs = 1``: every stage in this process, one after another, in the given order."""
    fingerprints: dict[str, str] = {}
    outcomes = []
    for stage in stages:
        started = _start(ctx, stage, fingerprints)
        if isinstance(started, _Skipped):
            outcome, fingerprints[stage.name] = started.outcome, started.fingerprint
        else:
            outcome, fingerprints[stage.name] = _finish(ctx, started, execute(stage, ctx))
        outcomes.append(outcome)
    return outcomes


def _run_concurrently(ctx: StageContext, stages: Sequence[Stage], jobs: int) -> list[StageOutcome]:
    """``jobs > 1``: each stage that runs gets a process of its own (`pipeline.workers`) as
    soon as every stage it reads is done and fewer than `jobs` run; ready stages start in
    the given order. The first failure stops the others (their markers stay ``running``,
    so the next call resumes them) and is raised here."""
    fingerprints: dict[str, str] = {}
    outcomes: dict[str, StageOutcome] = {}
    waiting = list(stages)
    running: dict[str, tuple[_Started, StageProcess]] = {}
    try:
        while waiting or running:
            skipped = True
            while skipped:  # a skipped stage can make others ready: look again before waiting
                skipped = False
                for stage in _ready(waiting, fingerprints, ctx.config, jobs - len(running)):
                    waiting.remove(stage)
                    started = _start(ctx, stage, fingerprints)
                    if isinstance(started, _Skipped):
                        outcomes[stage.name] = started.outcome
                        fingerprints[stage.name] = started.fingerprint
                        skipped = True
                    else:
                        running[stage.name] = (started, StageProcess(stage, ctx.run, ctx.config))
            if not running:
                if waiting:
                    names = ", ".join(stage.name for stage in waiting)
                    raise RunError(f"stages {names} read stages that are not in this run")
                continue
            _wait_for_one(ctx, running, fingerprints, outcomes)
    except BaseException:
        for _, process in running.values():
            process.stop(grace=0.0)  # they ignore Ctrl-C; terminated, they resume next time
        raise
    return [outcomes[stage.name] for stage in stages]


def _ready(
    waiting: Sequence[Stage], fingerprints: dict[str, str], config: RunConfig, slots: int
) -> list[Stage]:
    """Up to `slots` waiting stages whose read stages are all done, in the given order."""
    ready = [s for s in waiting if all(name in fingerprints for name in s.reads(config))]
    return ready[: max(0, slots)]


def _wait_for_one(
    ctx: StageContext,
    running: dict[str, tuple[_Started, StageProcess]],
    fingerprints: dict[str, str],
    outcomes: dict[str, StageOutcome],
) -> None:
    """Relay messages until at least one running stage is done (recorded) or failed or
    died (raised)."""
    while True:
        ended = False
        processes = [process for _, process in running.values()]
        for process, message in receive_any(processes, timeout=1.0):
            name = process.stage.name
            if message.kind == "say":
                ctx.say(message.payload)  # labelled in the stage process (`execute`)
                continue
            started, _ = running.pop(name)
            process.stop()  # after its result or error it is exiting anyway
            if message.kind == "failed":
                raise message.payload
            if message.kind == "died":
                raise process.died()
            outcome, fingerprints[name] = _finish(ctx, started, message.payload)
            outcomes[name] = outcome
            ended = True
        if ended:
            return


@dataclass(frozen=True)
class _Skipped:
    """A stage done before with the same key."""

    outcome: StageOutcome
    fingerprint: str


@dataclass(frozen=True)
class _Started:
    """A stage whose ``running`` marker is written: what its done marker needs."""

    stage: Stage
    key: str
    resume: bool
    record: dict[str, Any]


def _start(ctx: StageContext, stage: Stage, fingerprints: dict[str, str]) -> _Skipped | _Started:
    """Skip a stage done with the same key; else clear it (unless it resumes) and mark it
    ``running``."""
    settings = _settings(stage, ctx.config)
    inputs = _inputs(stage, ctx.config, fingerprints)
    key = _key(stage, settings, inputs)
    marker = read_marker(ctx.run, stage.name)
    same = marker is not None and marker.get("key") == key
    if same and marker is not None and marker.get("status") == "done":
        ctx.say(f"{stage.name}: done before, skipped")
        skipped = StageOutcome(stage.name, "skipped", 0.0, 0.0, marker["result"])
        return _Skipped(skipped, marker["fingerprint"])
    rechecked = not same and _only_rechecked_changed(stage, marker, settings, inputs)
    resume = (same or rechecked) and stage.resumable
    if not resume:
        clear_stage(ctx.run, stage.name)
    record = {"stage": stage.name, "key": key, "status": "running", "started_at": time.time()}
    record["settings"] = settings
    _write_json(_marker_path(ctx.run, stage.name), record)
    if resume and rechecked:
        why = redo_reason(marker.get("settings") if marker else None, settings)
        kept = f"{stage.name}: resuming, its earlier output kept"
        ctx.say(f"{kept} ({why}; it redoes only what those decide)")
    elif resume:
        ctx.say(f"{stage.name}: resuming")
    elif marker is None or same:  # new, or killed and not resumable
        ctx.say(f"{stage.name}: running")
    else:
        why = redo_reason(marker.get("settings"), settings)
        ctx.say(f"{stage.name}: running from nothing, its earlier output cleared ({why})")
    return _Started(stage, key, resume, record)


def _only_rechecked_changed(
    stage: Stage,
    marker: dict[str, Any] | None,
    settings: dict[str, Any],
    inputs: dict[str, str],
) -> bool:
    """Whether the stage's marker differs from today's key only in settings the stage
    rechecks itself (`Stage.rechecked`): its key with those settings put back to what the
    marker recorded is the marker's key, so nothing else changed (not a setting, not a stage
    it reads, not a prompt split)."""
    if marker is None or not stage.rechecked:
        return False
    recorded = marker.get("settings")
    if not isinstance(recorded, dict):
        return False
    patched = json.loads(json.dumps(settings))  # a deep copy
    for dotted in stage.rechecked:
        section, _, name = dotted.partition(".")
        before, now = recorded.get(section), patched.get(section)
        if not isinstance(before, dict) or not isinstance(now, dict):
            return False
        if name in before:
            now[name] = before[name]
        else:  # recorded while at an added setting's default (`flowforge.settings`)
            now.pop(name, None)
    return _key(stage, patched, inputs) == marker.get("key")


def redo_reason(recorded: Any, now: dict[str, Any]) -> str:
    """Why a stage's earlier output was cleared: the settings (dotted) that differ from those
    its marker recorded, or else a stage it reads (or the prompt splits) changed. Said out
    loud because a changed setting, say ``--judge sim:1`` on a finished world-0 run's
    ``--out``, clears every stage it reaches."""
    if not isinstance(recorded, dict):
        return "its key changed"
    changed: list[str] = []

    def walk(before: Any, after: Any, path: str) -> None:
        if isinstance(before, dict) and isinstance(after, dict):
            for name in sorted({*before, *after}):
                walk(before.get(name), after.get(name), f"{path}.{name}" if path else name)
        elif before != after:
            changed.append(path.replace("judge.judge", "judge", 1))

    walk(recorded, now, "")
    if not changed:
        return "a stage it reads was redone, or its prompt splits changed"
    shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    return f"settings changed: {shown}"


def _finish(ctx: StageContext, started: _Started, timed: Timed) -> tuple[StageOutcome, str]:
    """Mark a stage done with a new fingerprint; its outcome and that fingerprint."""
    result, seconds, cpu = timed
    name = started.stage.name
    fingerprint = hashlib.sha256(f"{started.key}:{uuid.uuid4()}".encode()).hexdigest()
    record = started.record | {"status": "done", "fingerprint": fingerprint, "result": result}
    record |= {"seconds": seconds, "cpu_seconds": cpu, "load_average": os.getloadavg()}
    _write_json(_marker_path(ctx.run, name), record)
    ctx.say(f"{name}: done in {seconds:.1f} s (cpu {cpu:.1f} s)")
    outcome = StageOutcome(name, "resumed" if started.resume else "ran", seconds, cpu, result)
    return outcome, fingerprint


def _marker_path(run: Path, name: str) -> Path:
    return run / STAGES_DIR / f"{name}.json"


def _summary(outcomes: Sequence[StageOutcome], elapsed: float) -> dict[str, Any]:
    """``RUN/run.json``: each stage's status and times, the total, the machine's load."""
    stages = [
        {"stage": o.name, "status": o.status, "seconds": round(o.seconds, 1)}
        | {"cpu_seconds": round(o.cpu_seconds, 1)}
        for o in outcomes
    ]
    load = [round(x, 2) for x in os.getloadavg()]
    return {
        "flowforge_version": __version__,
        "stages": stages,
        "seconds": round(elapsed, 1),
        "load_average_at_end": load,
    }


def report_lines(run: Path) -> tuple[str | None, str | None]:
    """The main table of the run's evaluation report and its sentence on what ``flowforge
    design --run`` hands over (the hand-over guard); None for what the run has not got."""
    path = run / EVALUATE / REPORT_JSON
    if not path.is_file():
        return None, None
    data = json.loads(path.read_text(encoding="utf-8"))
    return results_table(data), hand_over_sentence(data)
