"""A pool of ComfyUI servers: bounded work per server, retries elsewhere, dead servers benched.

A batch of renders is spread over the servers that are up, at most `max_in_flight` prompts
queued on one server at a time (ComfyUI runs one prompt at a time; a little queueing hides
the round trips, a lot only makes a dying server take more work down with it). A transient
fault (`client.TransientError`) moves the render to another server after an exponential
backoff, up to `max_attempts` tries; the server that failed is benched for `down_seconds`
(doubling with each consecutive failure, up to `max_down_seconds`) and used again after that.
Every render ends as exactly one `Outcome`: the value, or an error whose text starts with a
kind (``transient:`` for "worth trying again later", ``invalid:`` or ``render:`` for
"would fail again"), which is the collection journal's convention (docs/collection.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from .client import ComfyUIClient, ComfyUIError, PromptRejectedError, RenderError, TransientError

T = TypeVar("T")
R = TypeVar("R")


class PoolConfigError(ValueError):
    """Pool settings that do not make sense. One line saying what to change."""


@dataclass(frozen=True)
class PoolConfig:
    """How a pool uses its servers. Times are in seconds."""

    max_in_flight: int = 2  # prompts queued on one server at once
    request_timeout: float = 30.0  # one HTTP request or websocket read
    render_timeout: float = 600.0  # one prompt, from queueing to its history record
    max_attempts: int = 3  # tries of one render over the servers, within one batch
    backoff_seconds: float = 1.0  # wait before try k is backoff_seconds * 2**(k-2)
    down_seconds: float = 30.0  # a failing server is benched this long, doubling per failure
    max_down_seconds: float = 600.0
    poll_seconds: float = 0.5  # /history poll interval when the websocket is silent or gone

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.max_attempts < 1:
            raise PoolConfigError("max_in_flight and max_attempts must be at least 1")
        times = {
            "request_timeout": self.request_timeout,
            "render_timeout": self.render_timeout,
            "poll_seconds": self.poll_seconds,
        }
        for name, value in times.items():
            if value <= 0:
                raise PoolConfigError(f"{name} must be positive, not {value}")
        if min(self.backoff_seconds, self.down_seconds) < 0 or (
            self.max_down_seconds < self.down_seconds
        ):
            raise PoolConfigError("backoff and down times must be >= 0, max_down >= down")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """One task's end: `value`, or `error` (``kind: message``), and the server that did it."""

    value: R | None
    error: str | None
    server: str | None
    attempts: int


class _Server:
    """One server's state: free slots, the bench, and one client per worker thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.busy = 0
        self.failures = 0
        self.down_until = 0.0
        self.clients: dict[int, ComfyUIClient] = {}


class ServerPool:
    """Servers by URL; `map` runs tasks on them (see module docstring). Thread-safe."""

    def __init__(
        self,
        urls: Sequence[str],
        config: PoolConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise PoolConfigError("a ComfyUI pool needs at least one server URL")
        if len(set(urls)) != len(urls):
            raise PoolConfigError(f"a server is listed twice in {list(urls)}")
        for url in urls:
            ComfyUIClient(url).close()  # checks the URL's shape now, not mid-run
        self.config = config or PoolConfig()
        self.servers = [_Server(url) for url in urls]
        self._clock = clock
        self._changed = threading.Condition()
        # One long-lived set of worker threads, so each keeps its clients (and connections).
        self._executor = ThreadPoolExecutor(
            len(urls) * self.config.max_in_flight, thread_name_prefix="comfyui"
        )

    def up(self) -> list[str]:
        """The servers not benched right now."""
        now = self._clock()
        with self._changed:
            return [s.url for s in self.servers if s.down_until <= now]

    def client(self, url: str) -> ComfyUIClient:
        """A client of `url` for the calling thread (clients are not thread-safe)."""
        server = next(s for s in self.servers if s.url == url)
        key = threading.get_ident()
        with self._changed:
            if key not in server.clients:
                server.clients[key] = ComfyUIClient(
                    url, timeout=self.config.request_timeout, poll_seconds=self.config.poll_seconds
                )
            return server.clients[key]

    def map(self, work: Callable[[ComfyUIClient, T], R], tasks: Sequence[T]) -> list[Outcome[R]]:
        """`work(client, task)` for every task, each on some server; outcomes in task order."""
        return list(self._executor.map(lambda task: self._run(work, task), tasks))

    def first(self, work: Callable[[ComfyUIClient], R]) -> R:
        """`work` on the first server that answers (e.g. reading /object_info)."""
        outcome = self._run(lambda client, _: work(client), None)
        if outcome.error is not None:
            raise ComfyUIError(f"no ComfyUI server answered: {outcome.error}")
        return outcome.value  # type: ignore[return-value]

    def _run(self, work: Callable[[ComfyUIClient, T], R], task: T) -> Outcome[R]:
        last = "transient: no attempt made"
        avoid: str | None = None
        for attempt in range(1, self.config.max_attempts + 1):
            if attempt > 1:
                time.sleep(self.config.backoff_seconds * 2 ** (attempt - 2))
            server = self._acquire(avoid)
            if server is None:
                return Outcome(None, "transient: every ComfyUI server is down", None, attempt)
            try:
                value = work(self.client(server.url), task)
            except TransientError as error:
                self._release(server, failed=True)
                last, avoid = f"transient: {server.url}: {error}", server.url
                continue
            except PromptRejectedError as error:
                self._release(server, failed=False)
                return Outcome(None, f"invalid: {error}", server.url, attempt)
            except (RenderError, ComfyUIError) as error:
                self._release(server, failed=False)
                return Outcome(None, f"render: {server.url}: {error}", server.url, attempt)
            self._release(server, failed=False)
            return Outcome(value, None, server.url, attempt)
        return Outcome(None, last, avoid, self.config.max_attempts)

    def _acquire(self, avoid: str | None) -> _Server | None:
        """A server with a free slot (not `avoid` if another is up), waiting while all are busy
        or benched; None when every server is benched past the render timeout."""
        give_up = self._clock() + self.config.render_timeout
        with self._changed:
            while True:
                now = self._clock()
                up = [s for s in self.servers if s.down_until <= now]
                free = [s for s in up if s.busy < self.config.max_in_flight]
                preferred = [s for s in free if s.url != avoid] or free
                if preferred:
                    server = min(preferred, key=lambda s: (s.busy, s.failures))
                    server.busy += 1
                    return server
                if not up:
                    wake = min(s.down_until for s in self.servers)
                    if wake > give_up:
                        return None
                    self._changed.wait(max(0.01, wake - now))
                else:
                    self._changed.wait(1.0)

    def _release(self, server: _Server, *, failed: bool) -> None:
        with self._changed:
            server.busy -= 1
            if failed:
                server.failures += 1
                bench = self.config.down_seconds * 2 ** (server.failures - 1)
                server.down_until = self._clock() + min(bench, self.config.max_down_seconds)
            else:
                server.failures = 0
            self._changed.notify_all()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._changed:
            for server in self.servers:
                for client in server.clients.values():
                    client.close()
                server.clients.clear()
