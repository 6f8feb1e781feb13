"""Turn a ``--judge`` spec and its ``--judge-opt key=value`` options into a Judge.

Specs (design.md's contract; this is how outside evaluators and render farms plug in):

- ``sim`` / ``sim:SEED``: the embedded simulated world (``sim`` is ``sim:0``). Options:
  ``seed`` (an int; it may not contradict a seed in the spec) and ``cache_dir`` (where
  prompt embeddings are kept; it does not change the judge id).
- ``package.module:factory``: ``factory(**options)`` must return a Judge (an object with
  ``object_info`` and ``score``). Options are passed as the strings given on the command
  line: flowforge cannot know an outside factory's types, so the factory converts them.
- ``comfyui``: real ComfyUI servers rendering, image scorers scoring
  (`flowforge.judge.comfyui`); options name the servers, scorers, executor (docs/comfyui.md).
  Its id depends only on the scorers, so a run can resume on other servers or on Ray.

The judge id names the judge in the collection journal's keys, so two runs agree on it
exactly when they would judge identically: ``sim:SEED`` for the simulator, and for a
factory its spec followed by the sorted options (``pkg.mod:make?url=http://a&k=v``).
Every failure is a `JudgeLoadError` with one line that names the spec.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .base import Judge

_SIM = re.compile(r"sim(?::(-?[0-9]+))?")
_FACTORY = re.compile(r"(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)")
#: The sim's options and their conversions from strings; only `seed` changes the judge id.
_SIM_OPTIONS: Mapping[str, Callable[[str], Any]] = {"seed": int, "cache_dir": Path}


class JudgeLoadError(ValueError):
    """A judge spec that cannot be turned into a Judge. One line, names the spec."""


@dataclass(frozen=True)
class JudgeSource:
    """A ``--judge`` spec and its options: how to build a judge again in another process.

    A judge object may hold sockets or a simulator's arrays that should not cross a process
    boundary, so helper processes (the evaluation's, the refine rounds' GRPO audits) are
    handed this and `load` their own."""

    spec: str
    options: tuple[tuple[str, str], ...] = ()  # sorted by key

    @classmethod
    def of(cls, spec: str, options: Mapping[str, str] | None = None) -> JudgeSource:
        return cls(spec, tuple(sorted(dict(options or {}).items())))

    def load(self) -> LoadedJudge:
        """The judge this spec names (`load_judge`)."""
        return load_judge(self.spec, dict(self.options))


@dataclass(frozen=True)
class LoadedJudge:
    """A judge and the id that keys its results in the journal (e.g. ``sim:0``).

    `source` is what `load_judge` built it from, so that a helper process can build the same
    judge; a judge built in code (a test's) has none and stays in its process."""

    judge_id: str
    judge: Judge
    source: JudgeSource | None = None


def load_judge(spec: str, options: Mapping[str, str] | None = None) -> LoadedJudge:
    """The judge a ``--judge`` spec names, built with the ``--judge-opt`` options."""
    options = dict(options or {})
    source = JudgeSource.of(spec, options)
    if spec == "comfyui":
        return replace(_load_comfyui(spec, options), source=source)
    if _is_sim(spec):
        return replace(_load_sim(spec, _sim_kwargs(spec, options)), source=source)
    module, attr = _factory_parts(spec)
    return replace(_load_factory(spec, module, attr, options), source=source)


def judge_id(spec: str, options: Mapping[str, str] | None = None) -> str:
    """The id of the judge a spec and its options name, without building the judge: equal
    exactly when two judges score alike (module docstring), so a run's stage keys use it and
    a run resumes with ``sim`` for ``sim:0``, another cache_dir, or other ComfyUI servers.
    JudgeLoadError when the spec or its options name no judge."""
    options = dict(options or {})
    if spec == "comfyui":
        from .comfyui.factory import comfyui_judge_id

        try:
            return comfyui_judge_id(options)
        except Exception as error:  # options are user input; any failure is one line
            raise JudgeLoadError(
                f"--judge {spec}: {type(error).__name__}: {_one_line(error)}"
            ) from None
    if _is_sim(spec):
        return f"sim:{_sim_kwargs(spec, options)['seed']}"
    _factory_parts(spec)
    suffix = "&".join(f"{key}={options[key]}" for key in sorted(options))
    return f"{spec}?{suffix}" if suffix else spec


def parse_judge_options(pairs: list[str]) -> dict[str, str]:
    """Repeated ``--judge-opt key=value`` flags as a dict; a key given twice is an error."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise JudgeLoadError(f"--judge-opt {pair!r}: expected key=value")
        if key in options:
            raise JudgeLoadError(f"--judge-opt {key} is given twice")
        options[key] = value
    return options


def _is_sim(spec: str) -> bool:
    return spec == "sim" or spec.startswith("sim:")


def _factory_parts(spec: str) -> tuple[str, str]:
    """(module, attribute) of a ``package.module:factory`` spec; JudgeLoadError otherwise."""
    factory = _FACTORY.fullmatch(spec)
    if factory is None:
        raise JudgeLoadError(
            f"--judge {spec!r}: not a judge spec; use sim, sim:SEED or package.module:factory"
        )
    return factory.group("module"), factory.group("attr")


def _sim_kwargs(spec: str, options: Mapping[str, str]) -> dict[str, Any]:
    """The simulator's keyword arguments, ``seed`` always among them (0 unless the spec or
    ``seed=`` names one; they may not disagree)."""
    sim = _SIM.fullmatch(spec)
    if sim is None:
        raise JudgeLoadError(f"--judge {spec}: the sim's seed must be an integer (sim:SEED)")
    unknown = sorted(set(options) - set(_SIM_OPTIONS))
    if unknown:
        raise JudgeLoadError(
            f"--judge {spec}: unknown option(s) {', '.join(unknown)}; "
            f"the sim takes {', '.join(sorted(_SIM_OPTIONS))}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        try:
            kwargs[key] = _SIM_OPTIONS[key](value)
        except ValueError:
            raise JudgeLoadError(f"--judge {spec}: option {key}={value!r} is not valid") from None
    spec_seed = sim.group(1)
    if spec_seed is not None:
        if "seed" in kwargs and kwargs["seed"] != int(spec_seed):
            raise JudgeLoadError(
                f"--judge {spec}: --judge-opt seed={kwargs['seed']} contradicts the spec's seed"
            )
        kwargs["seed"] = int(spec_seed)
    kwargs.setdefault("seed", 0)
    return kwargs


def _load_sim(spec: str, kwargs: dict[str, Any]) -> LoadedJudge:
    try:
        from .sim.judge import SimJudge
    except ImportError as error:
        raise JudgeLoadError(f"--judge {spec}: the simulator cannot be imported: {error}") from None
    try:
        judge = SimJudge(**kwargs)
    except Exception as error:
        raise JudgeLoadError(
            f"--judge {spec}: {type(error).__name__}: {_one_line(error)}"
        ) from None
    return LoadedJudge(judge_id=f"sim:{kwargs['seed']}", judge=_checked(spec, judge))


def _load_factory(spec: str, module_name: str, attr: str, options: dict[str, str]) -> LoadedJudge:
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # an outside module can raise anything while importing
        raise JudgeLoadError(
            f"--judge {spec}: cannot import module {module_name!r}: {type(error).__name__}: {error}"
        ) from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise JudgeLoadError(f"--judge {spec}: {module_name} has no {attr!r}") from None
    if not callable(target):
        raise JudgeLoadError(f"--judge {spec}: {module_name}.{attr} is not callable")
    try:
        judge = target(**options)
    except Exception as error:
        raise JudgeLoadError(
            f"--judge {spec}: the factory raised {type(error).__name__}: {_one_line(error)}"
        ) from None
    return LoadedJudge(judge_id(spec, options), _checked(spec, judge))


def _load_comfyui(spec: str, options: dict[str, str]) -> LoadedJudge:
    """The ComfyUI judge; imported here because it pulls in HTTP clients and torch."""
    from .comfyui.factory import make_comfyui_judge

    try:
        judge = make_comfyui_judge(**options)
    except Exception as error:  # options are user input; any failure is one line
        raise JudgeLoadError(
            f"--judge {spec}: {type(error).__name__}: {_one_line(error)}"
        ) from None
    return LoadedJudge(judge_id(spec, options), _checked(spec, judge))


def _checked(spec: str, judge: object) -> Judge:
    """The judge, if it has the contract's two methods; JudgeLoadError naming the spec if not."""
    if not isinstance(judge, Judge):
        missing = [name for name in ("object_info", "score") if not hasattr(judge, name)]
        raise JudgeLoadError(
            f"--judge {spec}: returned a {type(judge).__name__}, which is not a Judge "
            f"(missing method(s): {', '.join(missing)})"
        )
    return judge


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or "(no message)"
