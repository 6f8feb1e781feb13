"""``flowforge evaluate``: every designer on the same held-out prompts and seeds, one judge.

The story, top to bottom (docs/evaluation.md has the protocol and every definition):

1. **Prompts and seeds.** The first `prompts` held-out prompts in sha256(id) order; none
   may occur in the triplets (no stage has seen them). Each prompt gets `seeds` render
   seeds and one design seed, shared by all methods.
2. **What the methods know.** The library (canonical text forms and design keys), the
   judged train triplets reduced to training scores (the reward ensemble's definition when
   one is given, else the same definition fitted on the triplets), the ensemble itself.
3. **Each method designs** one workflow per prompt; every text is checked (parse,
   validate against the judge's catalog); valid designs are judged on the render seeds,
   invalid ones fail with their validation error; the ensemble predicts every valid design.
4. **The report** (`report.py`): per-method summaries, win rates, the guidance sweep,
   GRPO curves; ``report.md``, ``report.json``, ``designs.jsonl`` and PNG plots in `out`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.collect import judge_catalog
from ..data.export import load_triplets
from ..data.prompts import Prompt, fixed_sample, load_prompts
from ..judge.loader import LoadedJudge
from ..reward.config import RewardConfig
from ..reward.ensemble import RewardEnsemble, load_ensemble
from ..reward.model import cpu_threads
from ..reward.target import TrainingScore, fit_training_score
from ..workflow.library import load_workflow_dir
from ..workflow.schema import Catalog
from ..workflow.textform import to_text
from .baselines import scored_rows
from .config import EvalConfig, EvalError, EvalInputs
from .designers import FixedDesigner, SelectedWeightDesigner, TextEncoder, derive_seed
from .designing import Designed, Rebuild, design_all
from .handover import HandOver, judge_hand_over
from .judging import CheckedDesign, JudgeSession, check_design, judged_requests
from .methods import Method, MethodSources, build_methods
from .report import EvalReport, build_report, write_report
from .summary import LibraryIndex, MethodRun, Outcome

Progress = Callable[[str], None]


def heldout_prompts(count: int | None) -> list[Prompt]:
    """The first `count` held-out prompts in sha256(id) order (all when None)."""
    return fixed_sample(load_prompts("heldout"), count)


def default_encoder() -> TextEncoder:
    """The MiniLM sentence encoder (prompt embeddings cached on disk)."""
    from ..judge.sim.embed import PromptEncoder

    return PromptEncoder()


@dataclass
class _Context:
    config: EvalConfig
    catalog: Catalog
    prompts: list[Prompt]
    design_seeds: list[int]
    render_seeds: list[list[int]]
    session: JudgeSession
    ensemble: RewardEnsemble | None
    checked: dict[str, CheckedDesign]

    def check(self, text: str) -> CheckedDesign:
        found = self.checked.get(text)
        if found is None:
            found = self.checked[text] = check_design(text, self.catalog)
        return found


def evaluate(
    config: EvalConfig,
    inputs: EvalInputs,
    judge: LoadedJudge,
    out: Path,
    *,
    encoder: Callable[[], TextEncoder] = default_encoder,
    on_progress: Progress | None = None,
    processes: int = 1,
) -> EvalReport:
    """Compare every method the inputs allow and write the report into `out`.

    `encoder` makes the sentence encoder of retrieval and of the reward ensemble (MiniLM;
    tests pass a fake defined at module level when `processes` > 1). `processes` = 2 designs
    two methods at a time, one in a spawned helper (`designing`; the report is the same)."""
    say = on_progress or (lambda message: None)
    prompts = heldout_prompts(config.prompts)
    sources, index = load_sources(config, inputs, judge, encoder, prompts)
    session = sources.session
    renders = [[derive_seed(config.seed, "render", p.id, s) for s in range(config.seeds)]
               for p in prompts]  # fmt: skip
    designs = [derive_seed(config.seed, "design", p.id) for p in prompts]
    ctx = _Context(
        config, sources.catalog, prompts, designs, renders, session, sources.ensemble, {}
    )
    threads = config.threads or torch.get_num_threads()
    with cpu_threads(threads):
        say("building the methods (choosing the guidance weight on validation prompts)")
        methods, not_run = build_methods(sources)
        choices = [
            m.designer.choice for m in methods if isinstance(m.designer, SelectedWeightDesigner)
        ]
        choice = choices[0] if choices else None
        helper = Rebuild.of(config, inputs, judge, encoder, choice) if processes > 1 else None
        texts_of = [p.text for p in prompts]
        designed = design_all(methods, texts_of, designs, say, helper, threads)
        session.calls += sum(d.judge_calls for d in designed.values() if d.in_helper)
        runs = [_judge_method(ctx, method, designed[method.name]) for method in methods]
        guarded = config.guard_prompts != 0
        hand_over = guard_hand_over(ctx, methods, sources.training_score) if guarded else None
        if hand_over is not None:
            say(
                f"hand-over guard: {hand_over.method} {hand_over.policy_score:.3f}, best fixed "
                f"workflow {hand_over.fixed_score:.3f} on {hand_over.prompts} validation "
                f"prompts: `flowforge design --run` hands over the {hand_over.handed}"
            )
    report = build_report(
        config, inputs, judge, prompts, runs, not_run, index, sources.training_score,
        session.calls, choice, hand_over,
    )  # fmt: skip
    return write_report(out, report, runs, inputs.grpo)


def guard_hand_over(
    ctx: _Context, methods: Sequence[Method], score: TrainingScore
) -> HandOver | None:
    """The hand-over guard on the validation prompts (`evaluate.handover`), None without a
    policy method or a best fixed workflow. The policy method is what ``flowforge design
    --run`` does: best-of-N of the chosen w, else the chosen w, else GRPO."""
    by_name = {m.name: m for m in methods}
    fixed = by_name.get("best_fixed")
    c = ctx.config
    wanted = ([f"best_of_{c.best_of_n}"] if c.best_of_source == "selected" else []) + [
        "grpo_wsel",
        "grpo",
    ]
    policy = next((by_name[name] for name in wanted if name in by_name), None)
    if policy is None or fixed is None or not isinstance(fixed.designer, FixedDesigner):
        return None
    prompts = [p.text for p in fixed_sample(load_prompts("validation"), c.guard_prompts)]
    return judge_hand_over(
        policy.name, policy.designer, fixed.designer.text, prompts, ctx.check,
        ctx.session.score, ctx.session.item, score,
    )  # fmt: skip


def load_sources(
    config: EvalConfig,
    inputs: EvalInputs,
    judge: LoadedJudge,
    encoder: Callable[[], TextEncoder],
    prompts: Sequence[Prompt],
) -> tuple[MethodSources, LibraryIndex]:
    """What the methods are built from (`MethodSources`) and the library's novelty index;
    `prompts` (the held-out ones) must not occur in the triplets."""
    catalog = judge_catalog(judge.judge, judge.judge_id)
    triplets = load_triplets(inputs.triplets)
    _check_unseen(prompts, {t.prompt for t in triplets})
    text_encoder = encoder()
    ensemble = (
        load_ensemble(inputs.reward, catalog=catalog, encoder=text_encoder)
        if inputs.reward
        else None
    )
    score = _training_score(ensemble, [t.scores for t in triplets if t.scores], config)
    library, index = library_index(inputs.library, catalog)
    session = JudgeSession(judge, config.negative, config.judge_batch, config.max_attempts)
    sources = MethodSources(
        config, inputs, catalog, scored_rows(triplets, score), len(triplets),
        library, ensemble, score, session, text_encoder,
    )  # fmt: skip
    return sources, index


def _check_unseen(prompts: Sequence[Prompt], seen: set[str]) -> None:
    leaked = [p.id for p in prompts if p.text in seen]
    if leaked:
        raise EvalError(
            f"{len(leaked)} evaluation prompts occur in the training triplets "
            f"({', '.join(leaked[:3])}...); evaluate on prompts no stage has seen"
        )


def _training_score(
    ensemble: RewardEnsemble | None,
    rows: list[Mapping[str, float]],
    config: EvalConfig,
) -> TrainingScore:
    """The ensemble's training score, or the same definition fitted on the triplets."""
    if ensemble is not None:
        return ensemble.training_score
    return fit_training_score(rows, RewardConfig(heldout_scorer=config.heldout_scorer))


def library_index(folder: Path, catalog: Catalog) -> tuple[list[str], LibraryIndex]:
    """Canonical texts of the library's distinct designs, and the novelty index over them
    (its `keys` decide "not in library")."""
    designs: dict[str, CheckedDesign] = {}
    for workflow in load_workflow_dir(folder).values():
        checked = check_design(to_text(workflow, catalog)[0], catalog)
        if not checked.valid or checked.key is None or checked.canonical is None:
            raise EvalError(f"{folder}: a library workflow is invalid ({checked.error})")
        designs.setdefault(checked.key, checked)
    texts = [d.canonical for d in designs.values() if d.canonical is not None]
    return texts, LibraryIndex(texts, list(designs))


def _judge_method(ctx: _Context, method: Method, designed: Designed) -> MethodRun:
    """Check, judge and predict one method's designs on every prompt."""
    texts_of = [p.text for p in ctx.prompts]
    texts = designed.texts
    if len(texts) != len(texts_of):
        raise EvalError(f"{method.name} designed {len(texts)} workflows for {len(texts_of)}")
    designs = [ctx.check(text) for text in texts]
    requests = judged_requests(designs, texts_of, ctx.render_seeds)
    results = iter(ctx.session.judge_designs(requests))
    qualities = ctx.session.true_quality(requests)
    quality = iter(qualities) if qualities is not None else None
    predicted = _predicted(ctx, texts_of, designs)
    outcomes = []
    for prompt, design, guess, seed in zip(
        texts_of, designs, predicted, ctx.design_seeds, strict=True
    ):
        if not design.valid:
            outcomes.append(Outcome(prompt, design, (), design.error, design_seed=seed))
            continue
        judged = [next(results) for _ in ctx.render_seeds[0]]
        q = [next(quality) for _ in judged] if quality is not None else [None]
        error = next((r.error for r in judged if r.error is not None), None)
        scores = tuple(r.scores for r in judged if r.scores is not None) if error is None else ()
        outcomes.append(Outcome(prompt, design, scores, error, q[0], guess, seed))
    calls = len(requests) + designed.judge_calls
    return MethodRun(
        method.name, method.label, tuple(outcomes), calls, method.data_calls, designed.seconds
    )


def _predicted(
    ctx: _Context, prompts: Sequence[str], designs: Sequence[CheckedDesign]
) -> list[float | None]:
    """The ensemble's mean prediction for each valid design (None: invalid or no ensemble)."""
    if ctx.ensemble is None:
        return [None] * len(designs)
    index = [i for i, d in enumerate(designs) if d.judgeable]
    detail = ctx.ensemble.predict_detail(  # the text as written, as GRPO and best-of-N read it
        [prompts[i] for i in index], [designs[i].text for i in index]
    )
    found: list[float | None] = [None] * len(designs)
    for i, value, error in zip(index, detail.mean.tolist(), detail.errors, strict=True):
        found[i] = None if error is not None else float(value)
    return found
