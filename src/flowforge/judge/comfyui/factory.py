"""Building a ComfyUI judge from ``--judge-opt`` strings, its judge id, and ``catalog pull``.

`make_comfyui_judge` is the factory behind ``--judge comfyui`` (it also works today as
``--judge flowforge.judge.comfyui:make_comfyui_judge``). Every option is a string, as the
loader passes them (docs/collection.md):

==================  ===========================================================================
``servers``         comma-separated URLs (``--server URL`` repeated)
``servers_file``    a file with one URL per line, ``#`` comments (``--servers FILE``)
``scorers``         comma-separated ``name=MODEL`` (``aesthetic=DIR``...); or
``scorers_file``    a JSON scorer config (docs/comfyui.md) with heads, mean/std and weights
``aesthetic_head``  the aesthetic MLP head (.safetensors) when ``scorers`` lists aesthetic
``device``          torch device of the scorers (``cpu``)
``image_dir``       keep every rendered PNG here (workflow in its text chunks)
``max_in_flight``, ``request_timeout``, ``render_timeout``, ``max_attempts``,
``backoff_seconds``, ``down_seconds``, ``poll_seconds``: `PoolConfig` fields
``executor``        ``local`` (threads here) or ``ray`` (an actor per server)
``ray_address``     a Ray cluster to join (``auto``, ``ray://host:10001``); none: start one
``gpus_per_actor``, ``cpus_per_actor``: Ray resources each server's actor declares
==================  ===========================================================================

The judge id (`comfyui_judge_id`) holds only what changes scores: the scorer set's digest.
Servers, executor and timeouts decide how, not what, is judged, so a run can be resumed on
other servers or on a Ray cluster and keep its results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..scorers.base import ScorerError, ScorerSet, ScorerSetConfig, ScorerSpec
from .client import ComfyUIClient
from .judge import ComfyUIJudge, Evaluator, Executor, LocalExecutor, ui_catalog
from .pool import PoolConfig, ServerPool

_POOL_OPTIONS = {f.name: f.type for f in fields(PoolConfig)}
_OTHER_OPTIONS = {
    "servers", "servers_file", "scorers", "scorers_file", "aesthetic_head", "device",
    "scorer_batch_size", "image_dir", "executor", "ray_address", "gpus_per_actor",
    "cpus_per_actor",
}  # fmt: skip


class ComfyUIOptionError(ValueError):
    """A ``--judge-opt`` for the ComfyUI judge that cannot be used. One line."""


def parse_servers(servers: str = "", servers_file: str = "") -> list[str]:
    """Server URLs from a comma-separated list and/or a file (one per line, # comments)."""
    urls = [url.strip() for url in servers.split(",") if url.strip()]
    if servers_file:
        try:
            lines = Path(servers_file).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ComfyUIOptionError(f"servers_file {servers_file}: {error.strerror}") from None
        urls += [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]
    if not urls:
        raise ComfyUIOptionError(
            "give at least one ComfyUI server (--server URL or --servers FILE)"
        )
    return list(dict.fromkeys(url.rstrip("/") for url in urls))


def scorer_config(options: Mapping[str, str]) -> ScorerSetConfig:
    """The scorer set the options describe (``scorers_file`` or ``scorers=name=MODEL,...``)."""
    if options.get("scorers_file"):
        if options.get("scorers"):
            raise ComfyUIOptionError("give scorers or scorers_file, not both")
        path = Path(options["scorers_file"])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ComfyUIOptionError(f"scorers_file {path}: {error}") from None
        config = ScorerSetConfig.from_json(data, base=path.parent)
    else:
        specs = []
        for entry in filter(None, (e.strip() for e in options.get("scorers", "").split(","))):
            name, sep, model = entry.partition("=")
            if not sep:
                raise ComfyUIOptionError(f"scorers entry {entry!r}: expected name=MODEL")
            head = options.get("aesthetic_head") if name == "aesthetic" else None
            specs.append(ScorerSpec(name.strip(), model.strip(), head=head))
        config = ScorerSetConfig(tuple(specs))
    batch = options.get("scorer_batch_size")
    device = options.get("device")
    if batch is not None or device is not None:
        config = ScorerSetConfig(
            config.scorers,
            int(batch) if batch else config.batch_size,
            device or config.device,
            config.threads,
        )
    return config


def pool_config(options: Mapping[str, str]) -> PoolConfig:
    """The `PoolConfig` fields given as options, converted from strings."""
    values: dict[str, Any] = {}
    for name, kind in _POOL_OPTIONS.items():
        if name in options:
            try:
                values[name] = int(options[name]) if kind == "int" else float(options[name])
            except ValueError:
                raise ComfyUIOptionError(f"{name}={options[name]!r} is not a number") from None
    return PoolConfig(**values)


def comfyui_judge_id(options: Mapping[str, str]) -> str:
    """``comfyui?scorers=<digest>``: equal for runs that score alike (see module docstring)."""
    return f"comfyui?scorers={scorer_config(options).digest()}"


def make_comfyui_judge(**options: str) -> ComfyUIJudge:
    """The ComfyUI judge the options describe (see the module docstring for each option)."""
    unknown = sorted(set(options) - set(_POOL_OPTIONS) - _OTHER_OPTIONS)
    if unknown:
        raise ComfyUIOptionError(f"unknown ComfyUI judge option(s): {', '.join(unknown)}")
    urls = parse_servers(options.get("servers", ""), options.get("servers_file", ""))
    scorers, pool = scorer_config(options), pool_config(options)
    image_dir = Path(options["image_dir"]) if options.get("image_dir") else None
    executor: Executor
    if options.get("executor", "local") == "ray":
        from .ray_executor import RayConfig, RayExecutor

        ray = RayConfig(
            address=options.get("ray_address") or None,
            gpus_per_actor=float(options.get("gpus_per_actor", "0")),
            cpus_per_actor=float(options.get("cpus_per_actor", "1")),
        )
        executor = RayExecutor(urls, pool, scorers, image_dir, ray)
    elif options.get("executor", "local") == "local":
        try:
            scorer_set = ScorerSet(scorers)
        except ScorerError as error:
            raise ComfyUIOptionError(str(error)) from None
        executor = LocalExecutor(
            ServerPool(urls, pool), Evaluator(scorer_set, image_dir), ui_catalog
        )
    else:
        raise ComfyUIOptionError(f"executor must be local or ray, not {options['executor']!r}")
    return ComfyUIJudge(executor)


def pull_catalog(server: str, output: Path, *, timeout: float = 60.0) -> int:
    """``flowforge catalog pull``: save a server's ``/object_info`` to `output` (as the server
    sends it, declaration order kept) and return the number of node classes. The file is
    what ``--object-info`` takes, so designs use exactly that install's nodes and models."""
    client = ComfyUIClient(server, timeout=timeout)
    try:
        data = client.object_info()
    finally:
        client.close()
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(output)
    return len(data)
