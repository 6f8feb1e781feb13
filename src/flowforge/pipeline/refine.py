"""Active-learning rounds after GRPO (``[refine]``, two by default): judge the policy's own
designs, refit the ensemble on the triplets plus those judgements, GRPO again from SFT with
`policies` seeds at once; the next round judges those policies, and after the last round
the judge keeps the one that designs best on the validation prompts (which no stage trains
on, `pipeline.choose`).

Why: the ensemble learned from library workflows, and GRPO leaves the library. On some seeds
it climbs into a family of new designs every member overrates (docs/benchmarks.md, "GRPO's
spread over seeds"); on others it stalls. Judging what the GRPO policy writes, on the train
prompts, shows the ensemble its errors near the policy's path; GRPO from SFT then optimises
against the refitted ensemble. Measured with `benchmarks/refine_round.py` (the same
computation): on sim world 0 one round took GRPO seeds 0, 1 and 2 to 0.507, 0.503 and 0.320
held-out (0.479, 0.305 and 0.030 on the run's own ensemble), and two rounds took them to
0.504, 0.377 and 0.509; on world 1 two rounds gave seeds 0 and 1 0.456 and 0.607 (0.497 and
0.487 without; docs/benchmarks.md, "Two active-learning rounds"). The seed still decides
much, so each round trains two (the second in a process of its own, on the core that
otherwise idles) and the judge chooses between the last two (`choose`). The last round's
GRPO starts from an SFT re-paired by that round's ensemble (`refit_sft`, on by default):
the refitted ensemble's own per-prompt pick from the library beats the best fixed workflow
on 71% of held-out prompts on both sim worlds, where GRPO from the random-paired SFT, which
hardly reads its prompt, reached 59% and 49%; from the re-paired SFT 73% and 49%. Each round
also judges `probes` library workflows per train prompt, those the ensemble of the moment
rates best for it and nobody judged with it (`pipeline.probes`: the refit then learns what
its own per-prompt picks are worth). A round costs (`samples` + `probes`) x `seeds` judge
calls per train prompt (9,592 + 2,398 by default, 60% of the collection: 8 designs per
prompt; against the best fixed workflow on world 1, 2 left the
last GRPO at 49% of held-out prompts, 4 reached 66%, 8 62-71%, best-of-8 70-75%), the choice
`choose_prompts` per policy; all are charged to every GRPO method's data calls in the
evaluation.

``RUN/refine/round-N/``: ``judged.parquet`` (the round's judgements, the export's columns,
its designs' then its probes'; written atomically, so a killed round does not judge again),
``probes.json`` (how many of those rows are probes), ``reward/`` (the refitted
ensemble, retrained from nothing after a kill), ``grpo/``, ``grpo-2/``, ... (the round's GRPO
runs, seeds ``grpo.seed``, +1, ..., resumed from their checkpoints), ``sft/`` (the last
round, with `refit_sft`: the re-paired SFT its GRPO runs started from), ``choice.json`` (the
last round: the judge's scores of its policies and the one kept); ``RUN/refine/refine.json``
(what the rounds did, which policy the run keeps and, as ``sft``, where it started; written
last).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import torch

from ..data.collect import check_results
from ..data.export import run_table
from ..data.plan import SEED_LIMIT, RequestTemplate
from ..evaluate.designers import SamplingSettings, derive_seed
from ..evaluate.methods import audit_calls
from ..files import remove, write_text_atomic
from ..judge.base import JudgeItem, JudgeResult
from ..judge.loader import JudgeSource, LoadedJudge
from ..policy.audit import Auditor, JudgeAuditor
from ..policy.checkpoint import recorded_changes
from ..policy.config import SFTRunConfig
from ..policy.grpo import GRPORunConfig, train_grpo
from ..policy.sft import ensemble_rewards, library_texts, run_sft
from ..reward.config import RewardConfig
from ..reward.model import cpu_threads
from ..reward.store import CONFIG_FILE as REWARD_CONFIG
from ..reward.train import train_ensemble
from ..settings import added_defaults
from ..spawned import SPAWN, StageProcessError, sigint_ignored, watch_parent
from ..workflow.library import load_workflow_dir
from ..workflow.schema import Catalog
from ..workflow.textform import design_hash
from .choose import CHOICE, chosen
from .config import RefineStageConfig, SFTStageConfig
from .draws import PROMPT_CHUNK, Draw, RoundTools, draw, train_prompts
from .layout import GRPO_DIR, REFINE_SUMMARY, REWARD_DIR, SFT_DIR, round_dir
from .probes import PROBE_STREAM, probe_pairs

JUDGED = "judged.parquet"
PROBES = "probes.json"  # how many of a round's judged rows are library probes (their last)


@dataclass(frozen=True)
class RefinePaths:
    """What the round reads (the run's stages) and where it writes."""

    collect: Path
    sft: Path
    grpo: Path  # the run's GRPO policy, whose designs the first round judges
    library: Path  # the run's library (API JSON), for GRPO's novelty and the re-paired SFT
    object_info: Path  # the run's catalog (``library/object_info.json``)
    out: Path
    reward: Path | None = None  # the run's ensemble: the first round's probes ask it


@dataclass(frozen=True)
class AuditJudge:
    """What the rounds' GRPO audits need (`grpo.audit_every` > 0), in a form a spawned GRPO
    process can rebuild: the run's judge source and the negative prompt."""

    judge: JudgeSource
    negative: str = ""

    def auditor(self, reward_dir: Path) -> Auditor:
        """The audits' judge against the ensemble in `reward_dir` (its training score)."""
        return JudgeAuditor.for_ensemble(self.judge.load().judge, reward_dir, self.negative)


def policy_dir(index: int) -> str:
    """A round's GRPO run `index` (from 0, seed ``grpo.seed + index``): ``grpo``, ``grpo-2``."""
    return GRPO_DIR if index == 0 else f"{GRPO_DIR}-{index + 1}"


def refine(
    paths: RefinePaths,
    config: RefineStageConfig,
    reward: RewardConfig,
    grpo: GRPORunConfig,
    sft: SFTStageConfig,
    judge: LoadedJudge,
    catalog: Catalog,
    negative: str,
    say: Callable[[str], None] = print,
    audits: AuditJudge | None = None,
    processes: int = 1,
    sft_threads: int | None = None,
) -> dict[str, Any]:
    """`config.rounds` rounds of judge, refit, GRPO again (resuming whatever a killed run
    finished); the summary. Round k judges the policies of round k-1 (the run's GRPO for the
    first), and with `config.probes` the library workflows the ensemble round k-1 trained
    against rates best per train prompt and nobody judged (`judge_probes`; the run's
    ensemble, `paths.reward`, for the first), and refits on the triplets plus every round's
    judgements so far, so the ensemble keeps what earlier rounds showed it; it then trains
    `config.policies` GRPO runs at once.
    After the last round the judge chooses among them (`choose`). `audits` is needed only
    when ``grpo.audit_every > 0``; `processes` is how many processes sample designs (the
    run's `jobs`; the results do not depend on it). With `config.refit_sft` the last round's
    GRPO starts from an SFT re-paired by that round's ensemble (`refit_sft`), trained with
    the run's `sft` settings, on `sft_threads` torch threads (None: the caller's)."""
    if grpo.audit_every > 0 and audits is None:
        raise ValueError("the rounds' GRPO audits (audit_every > 0) need an AuditJudge")
    paths.out.mkdir(parents=True, exist_ok=True)
    tools = RoundTools(judge, catalog, negative, grpo.max_completion_length, processes, say)
    triplets, _ = run_table(paths.collect)
    data, policies, rounds = triplets, [paths.grpo], []
    spent = [paths.grpo]  # every GRPO run, in order (their audits are the method's calls)
    for number in range(1, config.rounds + 1):
        here = paths.out / round_dir(number)
        say(f"refine: round {number}/{config.rounds}")
        asked = paths.reward if number == 1 else paths.out / round_dir(number - 1) / REWARD_DIR
        probing = Probing(asked, paths.library) if config.probes else None
        judged = _judged(here, policies, data, config, number, tools, probing)
        data = pa.concat_tables([data, judged.select(data.column_names)])
        reward_dir = here / REWARD_DIR
        if not (reward_dir / REWARD_CONFIG).is_file():
            _refit(data, here, reward_dir, reward, catalog, say, processes)
        start, what = paths.sft, "SFT"
        if config.refit_sft and number == config.rounds:
            judged_so_far = range(1, number + 1) if config.sft_designs else range(0)
            designs = tuple(str(paths.out / round_dir(k) / JUDGED) for k in judged_so_far)
            start = refit_sft(
                here,
                reward_dir,
                repaired_sft(sft, config),
                paths,
                say,
                designs,
                config.sft_top_k,
                sft_threads,
                config.repaired_library_share,
            )
            what = "the re-paired SFT"
        runs = [
            replace(
                grpo,
                seed=grpo.seed + index,
                sft_dir=str(start),
                reward_dir=str(reward_dir),
                out=str(here / policy_dir(index)),
                library_dir=str(paths.library),
            )
            for index in range(config.policies)
        ]
        seeds = ", ".join(str(r.seed) for r in runs)
        say(
            f"refine: round {number}: GRPO again from {what} against the refitted ensemble "
            f"(seed{'s' if len(runs) > 1 else ''} {seeds})"
        )
        train_at_once(runs, audits, reward_dir)
        policies = [Path(r.out) for r in runs]
        spent += policies
        errors = judged.column("error").to_pylist()
        rounds.append(
            {
                "judge_calls": judged.num_rows,
                "probe_calls": _probe_calls(here),
                "judge_errors": sum(e is not None for e in errors),
                "distinct_designs": len(set(judged.column("workflow_hash").to_pylist())),
                "policies": len(runs),
            }
        )
    last = paths.out / round_dir(config.rounds)
    choice = None
    if len(policies) > 1:
        choice = chosen(last, policies, config, tools)
    final = last / (choice["chosen"] if choice is not None else policy_dir(0))
    # Every GRPO run but the kept one shaped it (through the designs the rounds judged) or
    # competed with it for the choice; their audits count like the judged designs. The
    # evaluation reads the kept run's audits from its own record (`audit_calls`).
    audit_total = sum(audit_calls(p) for p in spent if p != final)
    judged_calls = sum(r["judge_calls"] for r in rounds)
    choice_calls = 0 if choice is None else int(choice["judge_calls"])
    summary = {
        "judge_calls": judged_calls + audit_total + choice_calls,
        "judged_designs_calls": judged_calls,
        "earlier_audit_calls": audit_total,
        "choice_calls": choice_calls,
        "final": round_dir(config.rounds),
        "policy": final.name,
        "sft": SFT_DIR if config.refit_sft else None,
        "choice": choice,
        "rounds": rounds,
    }
    write_text_atomic(paths.out / REFINE_SUMMARY, json.dumps(summary, indent=1) + "\n")
    return summary


def repaired_sft(sft: SFTStageConfig, config: RefineStageConfig) -> SFTStageConfig:
    """The run's SFT settings as the re-paired SFT trains with them: its model replaced by
    `config.sft_model` (the kept policy's own width), all else the run's."""
    return replace(sft, train=replace(sft.train, model=config.sft_model))


def refit_sft(
    here: Path,
    reward_dir: Path,
    sft: SFTStageConfig,
    paths: RefinePaths,
    say: Callable[[str], None],
    designs: tuple[str, ...] = (),
    top_k: int = 0,
    threads: int | None = None,
    library_share: float = 1.0,
) -> Path:
    """SFT into ``here/sft`` (resumed from its checkpoints, returned if finished), each train
    prompt paired with library workflows the ensemble in `reward_dir` prefers for it, and
    with the judged designs in the `designs` tables (`SFTRunConfig.designs`), among its
    `top_k` best-predicted candidates (0: all), on `threads` torch threads (None: the
    caller's; nothing runs beside it, so the run's `sft_threads`); at most `library_share`
    of the pairs with library workflows (`RefineStageConfig.sft_library_share`).

    Why here and not in the SFT stage: the rounds' ensemble knows what the first one did
    not (its per-prompt pick from the library beat the best fixed workflow on 71% of
    held-out prompts on both sim worlds, the first one's on 66% and 55%), and GRPO from a
    policy that already reads its prompt that way keeps reading it."""
    out = here / SFT_DIR
    among = " among the library and the judged designs" if designs else ""
    if library_share == 0:
        among = " among the judged designs not in the library"
    elif library_share < 1:
        among += f" (at most {library_share:.0%} library workflows)"
    say(f"refine: SFT again, {sft.pairs:,} pairs chosen by the refitted ensemble{among} -> {out}")
    library, object_info = paths.library, paths.object_info
    config = sft.run_config(
        out, library, object_info, reward_dir, "ensemble", designs, top_k, library_share
    )
    changed = recorded_changes(out, "sft", asdict(config), added_defaults(SFTRunConfig), "out_dir")
    if changed:  # only settings the runner lets the stage recheck (`Stage.rechecked`)
        say(
            f"refine: the re-paired SFT's settings changed ({', '.join(changed)}): training "
            "it again, and the last round's GRPO and choice after it"
        )
        for stale in (out, *sorted(here.glob(f"{GRPO_DIR}*")), here / CHOICE):
            remove(stale)
    with cpu_threads(threads or torch.get_num_threads()):
        run_sft(config, progress=False, say=lambda line: say(f"refine: sft {line}"))
    return out


def train_at_once(
    runs: Sequence[GRPORunConfig], audits: AuditJudge | None, reward_dir: Path
) -> None:
    """Train ``runs[0]`` in this process and every other run in a spawned process of its own,
    all at once (each resumes from its checkpoints); a failed run is an error naming it.

    The helpers ignore Ctrl-C and exit when this process dies (`flowforge.spawned`); if this
    process stops for any reason (an error, SIGTERM from the runner, Ctrl-C with ``jobs =
    1``) they are terminated, and the next call resumes them."""
    helpers = []
    with sigint_ignored():
        for run in runs[1:]:
            helper = SPAWN.Process(
                target=_train_helper,
                args=(run, audits, reward_dir, os.getpid()),
                name=f"flowforge-grpo-seed-{run.seed}",
            )
            helper.start()
            helpers.append(helper)
    try:
        first = runs[0]
        train_grpo(first, auditor=_auditor(first, audits, reward_dir))
        for helper in helpers:
            helper.join()
    finally:
        for helper in helpers:
            if helper.is_alive():
                helper.terminate()
                helper.join(timeout=30)
    failed = [(r, h.exitcode) for r, h in zip(runs[1:], helpers, strict=True) if h.exitcode]
    if failed:
        names = ", ".join(f"{r.out} (exit code {code})" for r, code in failed)
        raise StageProcessError(
            f"refine: GRPO in {names} failed in its process; its traceback is in the stage's "
            "log (RUN/stages/refine.log) or above. Run the same command again to resume."
        )


def _auditor(run: GRPORunConfig, audits: AuditJudge | None, reward_dir: Path) -> Auditor | None:
    return audits.auditor(reward_dir) if audits is not None and run.audit_every > 0 else None


def _train_helper(
    run: GRPORunConfig, audits: AuditJudge | None, reward_dir: Path, parent: int
) -> None:
    """A spawned helper: one GRPO run (its output goes where the parent's goes)."""
    watch_parent(parent)
    train_grpo(run, auditor=_auditor(run, audits, reward_dir))


@dataclass(frozen=True)
class Probing:
    """Where a round's library probes come from: the ensemble that picks them (None: the
    run's was not given) and the library directory they are picked from."""

    reward: Path | None
    library: Path


def _judged(
    here: Path,
    policies: Sequence[Path],
    data: Any,
    config: RefineStageConfig,
    number: int,
    tools: RoundTools,
    probing: Probing | None = None,
) -> Any:
    """The round's judgements of the `policies`' designs, then of its library probes
    (`probing`, with `config.probes`): read back when a killed run had them (the file is
    written atomically, so a half-judged round judges again from the start)."""
    path = here / JUDGED
    if not path.is_file():
        here.mkdir(parents=True, exist_ok=True)
        table = judge_designs(policies, data, config, tools, number)
        if probing is not None:
            if probing.reward is None:
                raise ValueError("refine: library probes need the run's ensemble (paths.reward)")
            workflows = load_workflow_dir(probing.library).values()
            library = library_texts(workflows, tools.catalog)
            so_far = pa.concat_tables([data, table.select(data.column_names)])
            probes = judge_probes(probing.reward, library, so_far, config, tools, number)
            table = pa.concat_tables([table, probes.select(table.column_names)])
            texts = set(probes.column("workflow_text").to_pylist())
            record = {"calls": probes.num_rows, "workflows": len(texts)}
            write_text_atomic(here / PROBES, json.dumps(record) + "\n")
        partial = path.with_name(path.name + ".partial")
        pq.write_table(table, partial)
        os.replace(partial, path)
    return pq.read_table(path)


def _probe_calls(here: Path) -> int:
    """The judge calls of the round in `here` that were library probes (its last rows)."""
    path = here / PROBES
    return int(json.loads(path.read_text())["calls"]) if path.is_file() else 0


def _refit(
    data: Any,
    here: Path,
    reward_dir: Path,
    reward: RewardConfig,
    catalog: Catalog,
    say: Callable[[str], None],
    processes: int,
) -> None:
    """Train the ensemble again from nothing on `data` (the run's reward settings), its
    members `processes` at once."""
    combined = here / "refit-data.parquet"  # the refit's data, removed afterwards
    pq.write_table(data, combined)
    say(f"refine: refitting the ensemble on {data.num_rows} judgements")
    started = time.perf_counter()
    try:
        train_ensemble(combined, reward_dir, reward, catalog=catalog, processes=processes)
    finally:
        combined.unlink(missing_ok=True)
    say(f"refine: ensemble refitted in {time.perf_counter() - started:.0f} s")


def judge_designs(
    policies: Sequence[Path],
    triplets: Any,
    config: RefineStageConfig,
    tools: RoundTools,
    round_number: int = 1,
) -> Any:
    """`config.samples` designs for each train prompt of `triplets` (a table with the
    export's columns), drawn in turn from `policies` (design j of prompt i from policy
    ``(i * samples + j) % len(policies)``: with 2 samples and 2 policies, one of each), each
    judged on `config.seeds` render seeds, as a table with the same columns (item numbers
    continue the triplets'; invalid designs are not judged). Sampling and render seeds follow
    `config.seed`, `round_number` and the policy's place, so rounds and policies draw
    independently (the first policy's draws are those of a round with one policy). The
    sampling runs over `tools.processes` processes (`draws.draw`: the same samples either
    way)."""
    catalog, negative, say = tools.catalog, tools.negative, tools.say
    prompts = train_prompts(triplets)
    ids = sorted(prompts)
    draws: list[tuple[int, tuple[str, ...], Draw]] = []  # (policy's place, prompt ids, draw)
    for place, policy in enumerate(policies):
        counts: dict[int, list[str]] = {}  # designs from this policy -> its prompts
        for position, prompt_id in enumerate(ids):
            turns = range(position * config.samples, (position + 1) * config.samples)
            n = sum(1 for g in turns if g % len(policies) == place)
            if n:
                counts.setdefault(n, []).append(prompt_id)
        for n, taking in sorted(counts.items()):
            for start in range(0, len(taking), PROMPT_CHUNK):
                chunk = tuple(taking[start : start + PROMPT_CHUNK])
                seeds = tuple(
                    derive_seed("refine", config.seed, round_number, i)
                    if place == 0
                    else derive_seed("refine", config.seed, round_number, i, "policy", place)
                    for i in chunk
                )
                draws.append(
                    (place, chunk, Draw(policy, tuple(prompts[i] for i in chunk), seeds, n))
                )
    totals = [sum(len(c) for p, c, _ in draws if p == place) for place in range(len(policies))]
    done = [0] * len(policies)
    places = {id(d): (p, len(c)) for p, c, d in draws}

    def progress(one: Draw) -> None:
        place, size = places[id(one)]
        done[place] += size
        which = f" of {one.policy.name}" if len(policies) > 1 else ""
        say(f"refine: sampled designs{which} for {done[place]}/{totals[place]} train prompts")

    settings = SamplingSettings(
        config.temperature, True, tools.max_new_tokens, PROMPT_CHUNK, negative
    )
    drawn = draw([d for _, _, d in draws], catalog, settings, tools.processes, progress)
    samples = [
        (chunk[k // one.n], sample)
        for (_, chunk, one), found in zip(draws, drawn, strict=True)
        for k, sample in enumerate(found)
    ]
    rng = np.random.default_rng([config.seed, round_number, 0x5EED])
    requests = [
        (prompt_id, sample.prompt, sample.text, design_hash(sample.workflow, catalog))
        for prompt_id, sample in samples
        if sample.valid and sample.workflow is not None
    ]
    table, calls = judge_requests(requests, config.seeds, rng, triplets, tools)
    say(f"refine: judged {calls} renders of {len(samples)} sampled designs")
    return table


def judge_probes(
    reward_dir: Path,
    library: Sequence[str],
    data: Any,
    config: RefineStageConfig,
    tools: RoundTools,
    round_number: int = 1,
) -> Any:
    """The round's library probes (`pipeline.probes`): for each train prompt of `data` (the
    triplets and earlier rounds' judgements), the `config.probes` `library` texts the
    ensemble in `reward_dir` rates best for it and `data` has not paired it with, each
    judged on `config.seeds` render seeds, as a table with `data`'s columns."""
    prompts = sorted(train_prompts(data).items())
    say = tools.say
    say(f"refine: probing the library: the ensemble's {config.probes} best unjudged per prompt")
    asked = [p for _, p in prompts]
    rewards = ensemble_rewards(reward_dir, tools.catalog, list(library), asked, progress=False)
    ids, texts = data.column("prompt_id").to_pylist(), data.column("workflow_text").to_pylist()
    judged = set(zip(ids, texts, strict=True))
    probes = probe_pairs(prompts, library, rewards, judged, config.probes)
    rng = np.random.default_rng([config.seed, round_number, PROBE_STREAM])
    requests = [(p.prompt_id, p.prompt, p.text, p.design_hash) for p in probes]
    table, calls = judge_requests(requests, config.seeds, rng, data, tools)
    distinct = len({p.text for p in probes})
    say(f"refine: judged {calls} renders of {len(probes)} library probes ({distinct} workflows)")
    return table


def judge_requests(
    requests: Sequence[tuple[str, str, str, str]],
    seeds: int,
    rng: np.random.Generator,
    like: Any,
    tools: RoundTools,
) -> tuple[Any, int]:
    """Judge each (prompt id, prompt, text form, design hash) of `requests` on `seeds` render
    seeds drawn from `rng`: a table of `like`'s columns (item numbers continue `like`'s) and
    the number of judge calls."""
    judge, negative = tools.judge, tools.negative
    rows: list[dict[str, Any]] = []
    items: list[JudgeItem] = []
    for prompt_id, prompt, text, digest in requests:
        template = RequestTemplate(text, negative)
        for seed in rng.integers(0, SEED_LIMIT, seeds):
            api = template.fill(prompt, int(seed))
            items.append(JudgeItem(prompt, api, int(seed)))
            rows.append(
                {
                    "prompt_id": prompt_id,
                    "prompt": prompt,
                    "negative": negative,
                    "workflow_hash": digest,
                    "workflow_api": json.dumps(api, separators=(",", ":"), ensure_ascii=False),
                    "workflow_text": text,
                    "seed": int(seed),
                    "judge_id": judge.judge_id,
                }
            )
    results: list[JudgeResult] = []
    for start in range(0, len(items), 256):
        batch = judge.judge.score(items[start : start + 256])
        check_results(judge.judge_id, batch, len(items[start : start + 256]))
        results += batch
    return _table(like, rows, results), len(items)


def _table(like: Any, rows: Sequence[dict[str, Any]], results: Sequence[JudgeResult]) -> Any:
    """Rows and their results as a table of `like`'s schema (the export's columns)."""
    first = (max(like.column("item").to_pylist()) + 1) if like.num_rows else 0
    names = [n for n in like.column_names if n.startswith("score_")]
    now = int(time.time() * 1e6)
    columns: dict[str, list[Any]] = {n: [] for n in like.column_names}
    for offset, (row, result) in enumerate(zip(rows, results, strict=True)):
        scores = result.scores or {}
        values = {
            **row,
            "item": first + offset,
            "error": result.error,
            "attempts": 1,
            "judged_at": now,
            **{name: scores.get(name.removeprefix("score_")) for name in names},
        }
        for name in like.column_names:
            columns[name].append(values[name])
    return pa.table(columns, schema=like.schema)
