"""Judging spread over a Ray cluster: one actor per ComfyUI server, holding its scorers.

``flowforge collect --executor ray`` keeps everything else as it is: the driver (the
process running `collect`) plans, calls `ComfyUIJudge.score` batch by batch and alone writes
the journal; only rendering and scoring move into actors. Each actor owns one server and a
loaded scorer set, declares the Ray resources a render box needs (``gpus_per_actor``, so Ray
places it on a GPU node; run it near its server), and judges small chunks of
``max_in_flight`` items handed out as actors become free, so fast servers get more work.

Faults: an actor whose chunk comes back with transient errors (its server is down or sick)
or that dies (its node was lost) is benched for ``down_seconds``, doubling per consecutive
failure, and its chunk goes back in the queue for another actor, up to ``max_attempts``
tries per item; a dead actor is created again when its bench ends. Each item still gets
exactly one result, so the journal loses and duplicates nothing.

Ray moves task arguments and results (`JudgeItem`, `JudgeResult`) between the cluster's own
processes with its serializer; only join clusters you trust.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError

from ..base import JudgeItem, JudgeResult
from ..scorers.base import ScorerSet, ScorerSetConfig
from .judge import Evaluator, LocalExecutor, ui_catalog
from .pool import PoolConfig, ServerPool


@dataclass(frozen=True)
class RayConfig:
    """Where the actors run and what each declares."""

    address: str | None = None  # None: start a local Ray instance; "auto" or ray://host:port
    gpus_per_actor: float = 0.0  # GPUs each server's actor reserves (its scorers run there)
    cpus_per_actor: float = 1.0


class ServerActor:
    """One server's renders and scores, inside a Ray actor (made remote by `RayExecutor`)."""

    def __init__(
        self, url: str, pool: PoolConfig, scorers: ScorerSetConfig, image_dir: Path | None
    ) -> None:
        # One try per chunk here: the driver moves failed items to other servers.
        single = ServerPool([url], replace(pool, max_attempts=1))
        self.executor = LocalExecutor(single, Evaluator(ScorerSet(scorers), image_dir), ui_catalog)

    def object_info(self) -> dict[str, Any]:
        return self.executor.object_info()

    def judge(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        return self.executor.judge(items)


def is_transient(error: str | None) -> bool:
    """The collection's convention (docs/collection.md): worth another try later."""
    return error is not None and error.startswith("transient:")


class _Slot:
    """The driver's view of one server's actor: the handle (None while dead) and its bench."""

    def __init__(self, url: str) -> None:
        self.url, self.failures, self.down_until = url, 0, 0.0
        self.actor: Any = None


class RayExecutor:
    """Spreads `judge` calls over one actor per server (see module docstring)."""

    def __init__(
        self,
        urls: Sequence[str],
        pool: PoolConfig,
        scorers: ScorerSetConfig,
        image_dir: Path | None,
        config: RayConfig,
    ) -> None:
        if not ray.is_initialized():
            ray.init(address=config.address, include_dashboard=False, log_to_driver=False)
        self.pool, self.scorers, self.image_dir, self.config = pool, scorers, image_dir, config
        self._remote = ray.remote(num_gpus=config.gpus_per_actor, num_cpus=config.cpus_per_actor)(
            ServerActor
        )
        self.slots = [_Slot(url) for url in urls]

    def object_info(self) -> dict[str, Any]:
        errors = []
        for slot in self.slots:
            try:
                return ray.get(self._actor(slot).object_info.remote())  # type: ignore[no-any-return]
            except Exception as error:  # any failure: ask the next server
                errors.append(f"{slot.url}: {type(error).__name__}: {error}")
        raise ConnectionError(f"no ComfyUI server answered: {'; '.join(errors)}")

    def judge(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        results: list[JudgeResult | None] = [None] * len(items)
        queue, tries = deque(range(len(items))), Counter[int]()
        running: dict[Any, tuple[_Slot, list[int]]] = {}
        while queue or running:
            self._hand_out(items, queue, tries, running)
            if not running:
                if not self._wait_for_a_slot():
                    for index in queue:
                        results[index] = JudgeResult(None, "transient: every ComfyUI actor is down")
                    break
                continue
            done, _ = ray.wait(list(running), num_returns=1)
            slot, chunk = running.pop(done[0])
            for index, result in zip(chunk, self._collect(done[0], slot, len(chunk)), strict=True):
                if is_transient(result.error) and tries[index] < self.pool.max_attempts:
                    queue.append(index)
                else:
                    results[index] = result
        return [r if r is not None else JudgeResult(None, "transient: not judged") for r in results]

    def _hand_out(
        self,
        items: Sequence[JudgeItem],
        queue: deque[int],
        tries: Counter[int],
        running: dict[Any, tuple[_Slot, list[int]]],
    ) -> None:
        """Give every idle actor that is not benched its next chunk."""
        busy = {id(slot) for slot, _ in running.values()}
        now = time.monotonic()
        for slot in self.slots:
            if not queue:
                return
            if id(slot) in busy or slot.down_until > now:
                continue
            chunk = [queue.popleft() for _ in range(min(self.pool.max_in_flight, len(queue)))]
            tries.update(chunk)
            running[self._actor(slot).judge.remote([items[i] for i in chunk])] = (slot, chunk)

    def _collect(self, ref: Any, slot: _Slot, size: int) -> list[JudgeResult]:
        """A chunk's results; a dead actor's chunk as transient errors (and the actor benched)."""
        try:
            results: list[JudgeResult] = ray.get(ref)
        except RayError as error:
            slot.actor = None  # created again after its bench
            self._bench(slot)
            return [
                JudgeResult(None, f"transient: actor of {slot.url} lost: {type(error).__name__}")
            ] * size
        if any(is_transient(r.error) for r in results):
            self._bench(slot)
        else:
            slot.failures = 0
        return results

    def _bench(self, slot: _Slot) -> None:
        slot.failures += 1
        bench = self.pool.down_seconds * 2 ** (slot.failures - 1)
        slot.down_until = time.monotonic() + min(bench, self.pool.max_down_seconds)

    def _wait_for_a_slot(self) -> bool:
        """Sleep until the first bench ends; False if that is beyond the render timeout."""
        wait = min(slot.down_until for slot in self.slots) - time.monotonic()
        if wait > self.pool.render_timeout:
            return False
        time.sleep(max(wait, 0.0))
        return True

    def _actor(self, slot: _Slot) -> Any:
        if slot.actor is None:
            slot.actor = self._remote.remote(slot.url, self.pool, self.scorers, self.image_dir)
        return slot.actor

    def close(self) -> None:
        for slot in self.slots:
            if slot.actor is not None:
                ray.kill(slot.actor)
                slot.actor = None
