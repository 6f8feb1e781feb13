"""Every method designs its workflows: in this process, or two methods at a time.

Designing (sampling the policies, best-of-N's candidates, the oracle's judgements of the
whole library) is most of an evaluation's time, and each method designs on its own. With
`processes` = 2 a spawned helper builds the same methods from the same inputs (`Rebuild`:
the judge built again from its ``--judge`` spec; the guidance weight the judge already
chose is passed, not chosen again). The helper designs from the end of the report's order
(the oracle and best-of-N, the slowest, are there) while this process designs from its
start, each taking the next method when it is free, until they meet. A designer derives
every seed from the prompts and seeds it is given, so a method designs the same texts in
either process (a test compares whole reports). Checking, judging and predicting the
designs stay in the caller, in report order.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..judge.loader import JudgeSource, LoadedJudge
from ..spawned import worker_pool
from .config import EvalConfig, EvalError, EvalInputs
from .designers import TextEncoder, WeightChoice
from .methods import Method

Say = Callable[[str], None]


@dataclass(frozen=True)
class Designed:
    """One method's designs, one text per prompt, and what designing them took."""

    texts: list[str]
    seconds: float  # wall time of designing
    judge_calls: int  # judgements the designer itself made (the oracle's); 0 for most
    in_helper: bool = False  # designed by the helper (its judge calls are not in ours)


@dataclass(frozen=True)
class Rebuild:
    """What a helper process builds the evaluation's methods from (`methods.build_methods`
    over `compare.load_sources`)."""

    config: EvalConfig
    inputs: EvalInputs
    judge: JudgeSource
    encoder: Callable[[], TextEncoder]  # module-level, so that it pickles
    choice: WeightChoice | None  # the guidance weight already chosen, if any

    @classmethod
    def of(
        cls,
        config: EvalConfig,
        inputs: EvalInputs,
        judge: LoadedJudge,
        encoder: Callable[[], TextEncoder],
        choice: WeightChoice | None,
    ) -> Rebuild:
        """The rebuild of an evaluation; its judge must come from a ``--judge`` spec (a
        judge object may hold sockets or a simulator's arrays: it is built again, never
        sent)."""
        if judge.source is None:
            raise EvalError(
                f"judge {judge.judge_id} was built in code, not loaded from a --judge spec, "
                "so a helper process cannot build it: design in one process"
            )
        return cls(config, inputs, judge.source, encoder, choice)


def design(method: Method, prompts: Sequence[str], seeds: Sequence[int]) -> Designed:
    """`method`'s designs for `prompts` in this process."""
    calls = method.designer.judge_calls
    start = time.perf_counter()
    texts = method.designer.design(list(prompts), list(seeds))
    seconds = time.perf_counter() - start
    return Designed(texts, seconds, method.designer.judge_calls - calls)


def design_all(
    methods: Sequence[Method],
    prompts: Sequence[str],
    seeds: Sequence[int],
    say: Say,
    helper: Rebuild | None = None,
    threads: int = 1,
) -> dict[str, Designed]:
    """Every method's designs by name: here, one after another; with a `helper`, two at a
    time (this process and a spawned one on `threads` torch threads, each taking the next
    method in order). The first failure stops both and is raised as itself."""
    if helper is None or len(methods) < 2:
        found = {}
        for method in methods:
            say(f"designing: {method.label}")
            found[method.name] = design(method, prompts, seeds)
        return found
    return _Shared(methods, list(prompts), list(seeds), say).run(helper, threads)


class _Shared:
    """The methods left to design, taken in order by this process and by the feeder thread
    that hands them to the helper; the first failure stops both."""

    def __init__(
        self, methods: Sequence[Method], prompts: list[str], seeds: list[int], say: Say
    ) -> None:
        self.todo = deque(methods)
        self.prompts, self.seeds, self.say = prompts, seeds, say
        self.found: dict[str, Designed] = {}
        self.failures: list[BaseException] = []
        self.lock = threading.Lock()

    def take(self, last: bool = False) -> Method | None:
        """The next method from the front (this process) or from the back (the helper)."""
        with self.lock:
            if self.failures or not self.todo:
                return None
            return self.todo.pop() if last else self.todo.popleft()

    def run(self, helper: Rebuild, threads: int) -> dict[str, Designed]:
        with worker_pool(1, threads, _start_helper, (helper,)) as pool:
            feeder = threading.Thread(target=self._feed, args=(pool,), daemon=True)
            feeder.start()
            try:
                while (method := self.take()) is not None:
                    self.say(f"designing: {method.label}")
                    self.found[method.name] = design(method, self.prompts, self.seeds)
            except BaseException as error:
                with self.lock:
                    self.failures.insert(0, error)  # ours first: it is what the user did
                raise  # leaving the pool's block terminates the helper
            feeder.join()
        if self.failures:
            raise self.failures[0]
        return self.found

    def _feed(self, pool: Any) -> None:
        try:
            while (method := self.take(last=True)) is not None:
                self.say(f"designing: {method.label} (helper process)")
                future = pool.submit(_design_in_helper, method.name, self.prompts, self.seeds)
                self.found[method.name] = replace(future.result(), in_helper=True)
        except BaseException as error:  # sent on to the caller's thread
            with self.lock:
                self.failures.append(error)


_HELPER: dict[str, Any] = {}  # the helper's rebuild recipe, then its methods by name


def _start_helper(rebuild: Rebuild) -> None:
    _HELPER["rebuild"] = rebuild


def _design_in_helper(name: str, prompts: list[str], seeds: list[int]) -> Designed:
    """Built on the first call, not in the initializer: an error while building (a missing
    input, a judge that cannot load) then reaches the caller as itself."""
    if "methods" not in _HELPER:
        _HELPER["methods"] = _rebuilt_methods(_HELPER["rebuild"])
    return design(_HELPER["methods"][name], prompts, seeds)


def _rebuilt_methods(rebuild: Rebuild) -> dict[str, Method]:
    from .compare import heldout_prompts, load_sources
    from .methods import build_methods

    judge = rebuild.judge.load()
    prompts = heldout_prompts(rebuild.config.prompts)
    sources, _ = load_sources(rebuild.config, rebuild.inputs, judge, rebuild.encoder, prompts)
    methods, _ = build_methods(sources, rebuild.choice)
    return {method.name: method for method in methods}
