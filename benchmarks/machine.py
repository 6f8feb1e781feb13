"""What every benchmark prints beside its numbers: the machine and the command."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def describe_machine() -> str:
    """One line: CPU model, cores visible, memory, Python and OS."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {cores} cores{memory}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def command_line() -> str:
    return "python " + " ".join(sys.argv)


def stamped(results: dict[str, Any]) -> dict[str, Any]:
    """`results` with the machine and the command beside them (a benchmark's JSON record)."""
    return {**results, "machine": describe_machine(), "command": command_line()}
