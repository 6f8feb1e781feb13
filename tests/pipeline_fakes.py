"""Fake stages that a spawned stage process can import (``flowforge run`` with ``jobs > 1``
pickles a stage by reference to its functions). What each does is read from
``RUN/plan.json`` (a test writes it), since a closure cannot cross to another process.

plan = {"<stage>": {"wait_for": "<other stage>", "fail": "text", "exit": code,
                    "hang": true}}

Every stage writes ``RUN/<name>/pid`` (its process) and ``RUN/<name>/started``, prints a
line (to its log) and says one message; ``wait_for`` waits up to 60 s for the other stage's
``started`` file and fails without it (two stages run one after another never meet).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from flowforge.pipeline.stages import Stage, StageContext

MEETING_SECONDS = 60.0


def _plan(ctx: StageContext, name: str) -> dict[str, Any]:
    path = ctx.run / "plan.json"
    plan: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    return dict(plan.get(name, {}))


def fake_stage(ctx: StageContext, name: str) -> dict[str, Any]:
    plan = _plan(ctx, name)
    folder = ctx.path(name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pid").write_text(str(os.getpid()))
    (folder / "started").write_text("")
    print(f"printed by {name}", flush=True)
    ctx.say(f"hello from {name}")
    if "wait_for" in plan:
        other = ctx.path(plan["wait_for"], "started")
        deadline = time.monotonic() + MEETING_SECONDS
        while not other.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} never met {plan['wait_for']}")
            time.sleep(0.05)
    if plan.get("hang"):
        time.sleep(600)
    if "exit" in plan:
        os._exit(int(plan["exit"]))
    if "fail" in plan:
        raise ValueError(plan["fail"])
    return {"pid": os.getpid(), "niceness": os.nice(0)}


def run_a(ctx: StageContext) -> dict[str, Any]:
    return fake_stage(ctx, "a")


def run_b(ctx: StageContext) -> dict[str, Any]:
    return fake_stage(ctx, "b")


def run_c(ctx: StageContext) -> dict[str, Any]:
    return fake_stage(ctx, "c")


def run_d(ctx: StageContext) -> dict[str, Any]:
    return fake_stage(ctx, "d")


def diamond() -> list[Stage]:
    """a; then b and c (each reads a only); then d (reads b and c)."""
    return [
        Stage("a", ("library",), (), False, run_a),
        Stage("b", ("collect",), ("a",), True, run_b),
        Stage("c", ("reward",), ("a",), False, run_c),
        Stage("d", ("sft",), ("b", "c"), False, run_d),
    ]


def branches() -> list[Stage]:
    """a; c and b after a (in that order); d after b. With a and b done before, a resumed
    run skips b after starting c: d must then start beside c, not after it."""
    return [
        Stage("a", ("library",), (), False, run_a),
        Stage("c", ("reward",), ("a",), False, run_c),
        Stage("b", ("collect",), ("a",), True, run_b),
        Stage("d", ("sft",), ("b",), False, run_d),
    ]


def write_plan(run: Path, plan: dict[str, Any]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "plan.json").write_text(json.dumps(plan))
