"""The one config of ``flowforge run``: a frozen dataclass per stage, one `RunConfig` of them.

Sections reuse the stages' own configs where those have no paths (`RewardConfig`,
`TrainSettings`, `GRPORunConfig`, `EvalConfig`), so a setting has one name everywhere; the
small `*StageConfig` classes here hold what a stage needs besides its paths. Paths are
the run's: every stage writes into ``RUN/<stage>`` (the GRPO section's path fields must keep
their run-relative defaults). `quick_config` is the ``--quick`` preset (tests and CI: a few
minutes on 2 cores); `RunConfig()` is the default run (targets <= 45 minutes there).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..data.prompts import sample_count_problem
from ..evaluate.config import EvalConfig
from ..judge.loader import JudgeLoadError, judge_id
from ..policy.config import SFTRunConfig, TrainSettings, pairing_problem
from ..policy.grpo import QUICK as GRPO_QUICK
from ..policy.grpo import GRPORunConfig
from ..policy.model import PolicyModelConfig
from ..reward.config import RewardConfig
from ..settings import to_json
from .layout import GRPO_DIR, REWARD_DIR, SFT_DIR
from .overrides import apply, read_config_file


class RunConfigError(ValueError):
    """Settings that cannot make a run together; the message says what to change."""


@dataclass(frozen=True)
class LibraryStageConfig:
    """The workflow library every later stage draws from (augmented from the seeds)."""

    #: Distinct workflows (collection samples from them, SFT trains on all of them).
    size: int = 2_000
    #: Seed of the augmentation walk.
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 32:
            raise RunConfigError(f"library.size must be >= 32 (the seeds), got {self.size}")


@dataclass(frozen=True)
class CollectStageConfig:
    """Judged (prompt, workflow, seed) triplets on train prompts (docs/collection.md)."""

    #: (prompt, workflow) pairs, spread evenly over the prompts.
    pairs: int = 10_000
    #: Render seeds per pair.
    seeds: int = 2
    #: Train prompts used: the first N in sha256(id) order; None: every train prompt.
    prompts: int | None = None
    #: The plan's random seed.
    seed: int = 0
    #: Written into every workflow's $NEGATIVE (evaluation must use the same).
    negative: str = ""
    #: Items per judge call.
    batch_size: int = 256
    #: Tries per item for transient judge errors.
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.pairs < 1 or self.seeds < 1 or (self.prompts is not None and self.prompts < 2):
            raise RunConfigError("collect: pairs and seeds must be >= 1, prompts >= 2 or unset")


#: The `RefineStageConfig` settings only the last round's re-paired SFT reads (and so the
#: last round's GRPO and the judge's choice, which start from it): a change in only these
#: keeps every round before it (`Stage.rechecked`; `refine.refit_sft` redoes that SFT and
#: what follows it), ~20 minutes of a default run.
REPAIRED_SFT_SETTINGS = ("sft_designs", "sft_top_k", "sft_library_share", "sft_model")

#: The model of the policy a run keeps (`RefineStageConfig.sft_model`): the run's SFT model
#: (`PolicyModelConfig`'s defaults) 160 wide instead of 128, head dim 32 as there.
KEPT_POLICY_MODEL = PolicyModelConfig(hidden_size=160, intermediate_size=480, num_attention_heads=5)


@dataclass(frozen=True)
class RefineStageConfig:
    """Active-learning rounds after GRPO (`pipeline.refine`, docs/evaluation.md): judge the
    policies' own designs, refit the ensemble, GRPO again from SFT with two seeds at once (in
    the last round from an SFT re-paired by the refitted ensemble, `refit_sft`); after the
    last round the judge keeps the better of the two. On by default, two rounds:
    with one seed per round they took GRPO seeds 0-2 on sim world 0 from 0.479 / 0.305 /
    0.030 held-out to 0.504 / 0.377 / 0.509 (the collapses gone); with two seeds and the
    judge's choice, 0.508 on world 0 and 0.500 on world 1 (best-of-8 0.514 / 0.516; was 0.504
    / 0.463 and 0.507 / 0.506; docs/benchmarks.md, "Two GRPO seeds per round"). The rounds
    take ~24 minutes (1,426 s at session 22's default on the 2-core EPYC) and 24,474 judge
    calls with the library probes of session 31 (1,199 train prompts: 2 x (9,592 designs +
    2,398 probes) and the choice's 494), 122% of the collection's 20,000."""

    #: Run the rounds; the evaluation then compares the last round's GRPO policy.
    enabled: bool = True
    #: Rounds, each judging the previous round's policy (the first: the run's GRPO).
    rounds: int = 2
    #: Designs sampled per train prompt from the previous policy, each round. Why 8: the
    #: refit learns where GRPO goes only from these judgements; with 4 instead of 2 the last
    #: round's GRPO rose from 0.511 to 0.575 held-out on sim world 1 (49% -> 66% against the
    #: best fixed workflow) and held world 0 (0.552 -> 0.555); with 8 instead of 4
    #: (measured in session 21, two samples per world) best-of-8 beat the best fixed
    #: workflow on 69-75% of held-out prompts in all four runs (51-73% with 4), and from
    #: nothing at 2da1f5f on 67% (world 0) and 72% (world 1), for 10,640 more judge calls
    #: (docs/evaluation.md, "What was tried").
    samples: int = 8
    #: Render seeds per design (one judge call each).
    seeds: int = 1
    #: Sampling temperature: GRPO's own (1.0), so the judged designs are where it explores.
    temperature: float = 1.0
    #: Seed of the sampling and of the render seeds.
    seed: int = 0
    #: GRPO runs per round, with GRPO seeds `grpo.seed`, `grpo.seed` + 1, ..., trained at
    #: once (each extra run in a process of its own, so two use this machine's two cores in
    #: the time of one). The next round judges designs of all of them (its `samples` per
    #: prompt taken in turn); after the last round the judge chooses which one the run keeps
    #: (`choose_prompts`). Why: the GRPO seed moved the held-out score more than any setting
    #: (docs/evaluation.md, "What was tried"), and only the judge can tell a good seed from
    #: one that climbed into the ensemble's errors.
    policies: int = 2
    #: Validation prompts on which the judge compares the last round's policies (one design
    #: per prompt and policy at `choose_temperature`, one render each; the best mean
    #: training score is kept): the first N in sha256(id) order; None: all 247. Only with
    #: `policies` > 1. Validation, not train, prompts since session 27: on the train prompts
    #: GRPO optimised, the choice kept a policy scoring 1.14 there and 0.00 on held-out
    #: PartiPrompts.
    choose_prompts: int | None = None
    #: Sampling temperature of the designs the choice judges: `flowforge design`'s.
    choose_temperature: float = 0.7
    #: Train SFT again after the last round's refit, each train prompt paired with
    #: workflows the refitted ensemble prefers for it (from the library, and with
    #: `sft_designs` the rounds' judged designs; the `sft` section's pairs, training
    #: settings and `pairing_temperature`), and start the last round's GRPO from it (its
    #: KL tether, and guidance's w = 0). Why: the refitted ensemble's own per-prompt pick
    #: from the library beats the best fixed workflow on 71% of held-out prompts on both
    #: sim worlds, but GRPO from the random-paired SFT hardly reads its prompt; from the
    #: re-paired SFT it reached 0.557 / 0.511 held-out (73% / 49% against the best fixed
    #: workflow) where it reached 0.503 / 0.497 (59% / 49%) (docs/evaluation.md, "What was
    #: tried"). Costs one SFT run (~7 minutes by default). The first ensemble was too wrong
    #: for this (`sft.pairing = "ensemble"`: GRPO 0.203 on world 1).
    refit_sft: bool = True
    #: With `refit_sft`: the re-paired SFT also pairs prompts with the designs every round
    #: judged (each distinct design judged without error), which the refitted ensemble
    #: learnt from, beside the library's workflows; those it prefers for a prompt become
    #: SFT targets, so the last round's GRPO can start from new designs the judge saw.
    #: On (with `sft_top_k = 16`) since session 20: measured on one CPU, two samples per
    #: world (docs/evaluation.md, "What was tried"), it lifts world 1 from 0.452 to 0.553
    #: held-out (36% to 58% against the best fixed workflow) and costs world 0 0.012 (0.548
    #: to 0.536, 68% to 66%): the better choice on both worlds together, and the one whose
    #: worse world is far better. Alone (`sft_top_k = 0`) it lowered world 0 to 0.500.
    sft_designs: bool = True
    #: The re-paired SFT draws a prompt's workflow only among its this many best-predicted
    #: candidates (`SFTRunConfig.pairing_top_k`); 0: among all. Why: with `sft_designs` the
    #: temperature alone paired a prompt with ~700 of the ~4,400 candidates effectively
    #: (median), against 31-95 of the library's 2,000 (docs/evaluation.md, "What was tried").
    #: It applies with `sft_designs` off too: the default before session 20 is both off
    #: (`sft_designs = false`, `sft_top_k = 0`).
    sft_top_k: int = 16
    #: With `refit_sft` and `sft_designs` (ignored without them): the largest share of the
    #: re-paired SFT's pairs that may pair a library workflow (`SFTRunConfig.library_share`).
    #: 0 (the default since session 38): only the judged designs that are not library
    #: workflows, so the kept policy starts from new designs alone; 1: no cap (the default
    #: before); in between, the library pairs beyond the share are drawn again among those
    #: designs. Why: a kept policy wider than 128 (`sft_model`) copies what it is paired
    #: with, and about half the re-paired SFT's pairs are library workflows (47% on sim
    #: world 0, `benchmarks/pairing_sources.py`): at 160 wide with them its designs went back
    #: to the library on world 0 (37% new); without them 0.566 / 72% against the best fixed
    #: workflow there with 56% new, and 0.600 / 94% with 100% new on world 1. At 192 wide,
    #: world 0: share 1 0.587 / 80%, 37% new; 0.25 0.549 / 70%, 64% new; 0 0.552 / 70%, 97%
    #: new: no middle way in one draw (docs/evaluation.md, "What was tried").
    sft_library_share: float = 0.0
    #: With `refit_sft`: the re-paired SFT's model (``[refine.sft_model]``, the keys of
    #: ``[sft.train.model]``; a key left out keeps this default's value), and so the last
    #: round's GRPO policies' and the run's designer's. It does not follow
    #: ``[sft.train.model]``, which shapes only the policies the run does not keep
    #: (phase-1 SFT and GRPO, the first rounds' GRPO): a run scaled up sets both. Why 160
    #: wide (MLP 480, 5 heads, head dim 32 as at 128; since session 38, with
    #: `sft_library_share = 0`): over the run's 128 it lifted world 1 from the 128-wide
    #: draws' 0.480-0.555 (81-91% against the best fixed workflow) to 0.600 (94%) and held
    #: world 0 inside their spread (0.566 / 72% against 0.526-0.603 / 69-77%), in one draw per
    #: world, for ~5 more minutes, spent only on the policy the run keeps; 256 wide
    #: everywhere scored 0.599 / 0.619 but costs ~35 minutes more (docs/evaluation.md,
    #: "What was tried").
    sft_model: PolicyModelConfig = KEPT_POLICY_MODEL
    #: Library probes per train prompt and round (`pipeline.probes`): the library workflows
    #: the ensemble of the moment (round 1: the run's; round k: round k-1's refit) predicts
    #: best for the prompt among those never judged with it, each judged on `seeds` render
    #: seeds beside the round's designs, so the refit learns what its own per-prompt picks
    #: are worth (it had underrated them, and GRPO then gained little by reading the
    #: prompt). 2 since session 31: over two draws per sim world (`seed` 0 and 1, on copies
    #: of the same runs up to GRPO) the chosen method rose from 0.542 / 0.504 to 0.533 /
    #: 0.608 held-out on world 0 (67% / 61% -> 68% / 77% against the best fixed workflow)
    #: and from 0.465 / 0.576 to 0.526 / 0.555 on world 1 (80% / 87% -> 91% / 87%), for
    #: 2,398 more judge calls and ~20 s per round (docs/evaluation.md, "What was tried").
    #: 0: none, the rounds before session 31.
    probes: int = 2

    def __post_init__(self) -> None:
        if self.probes < 0:
            raise RunConfigError(f"refine: probes must be >= 0 (0: none), got {self.probes}")
        if self.rounds < 1 or self.samples < 1 or self.seeds < 1 or not self.temperature > 0:
            raise RunConfigError("refine: rounds, samples and seeds must be >= 1, temperature > 0")
        if self.policies < 1 or not self.choose_temperature > 0:
            raise RunConfigError("refine: policies must be >= 1, choose_temperature > 0")
        if self.sft_top_k < 0:
            raise RunConfigError(f"refine: sft_top_k must be >= 0 (0: all), got {self.sft_top_k}")
        if not 0 <= self.sft_library_share <= 1:
            raise RunConfigError(
                f"refine: sft_library_share must be in [0, 1], got {self.sft_library_share}"
            )
        problem = sample_count_problem("choose_prompts", self.choose_prompts, "validation")
        if problem is not None:
            raise RunConfigError(f"refine: {problem}")

    @property
    def repaired_library_share(self) -> float:
        """The library share the re-paired SFT trains with: `sft_library_share`, or 1 (no
        cap) without `sft_designs`, whose library is then its only candidates."""
        return self.sft_library_share if self.sft_designs else 1.0


def _small_model() -> TrainSettings:
    """SFT's default: the tiny Llama of docs/policy.md."""
    return TrainSettings()


@dataclass(frozen=True)
class SFTStageConfig:
    """Phase-1 SFT on (train prompt, library workflow) pairs of the run's library."""

    #: Training pairs (paper: 500K).
    pairs: int = 30_000
    #: How the policy is trained (model shape, vocabulary, optimiser).
    train: TrainSettings = field(default_factory=_small_model)
    #: "random" (any train prompt with any library workflow) or "ensemble" (each prompt with
    #: workflows the run's reward ensemble prefers for it): `SFTRunConfig.pairing`.
    pairing: str = "random"
    #: Softmax temperature of ensemble pairing (`SFTRunConfig.pairing_temperature`).
    pairing_temperature: float = 0.15

    def __post_init__(self) -> None:
        problem = pairing_problem(self.pairing, self.pairing_temperature)
        if problem is not None:
            raise RunConfigError(f"sft.{problem}")

    def run_config(
        self,
        out_dir: Path,
        library: Path,
        object_info: Path,
        reward_dir: Path,
        pairing: str | None = None,
        designs: tuple[str, ...] = (),
        top_k: int = 0,
        library_share: float = 1.0,
    ) -> SFTRunConfig:
        """This section as an SFT run into `out_dir` on the run's library; `pairing` overrides
        the section's (the refine rounds' re-paired SFT asks for "ensemble" on their own
        ensemble in `reward_dir`); `designs`: judged designs that join the library's
        workflows as candidates (`SFTRunConfig.designs`); `top_k`: the candidates a prompt
        is paired among (`SFTRunConfig.pairing_top_k`); `library_share`: the largest share
        of pairs with a library workflow (`SFTRunConfig.library_share`)."""
        return SFTRunConfig(
            out_dir=str(out_dir),
            pairs=self.pairs,
            library_dir=str(library),
            object_info=str(object_info),
            train=self.train,
            pairing=pairing or self.pairing,
            reward_dir=str(reward_dir),
            pairing_temperature=self.pairing_temperature,
            pairing_top_k=top_k,
            designs=designs,
            library_share=library_share,
        )


def _comfygen_ft_train() -> TrainSettings:
    """Three epochs at 3e-3 over the judged pairs: one epoch (from scratch or from SFT) left
    the policy deaf to its score token; these settings measured it listening
    (docs/evaluation.md, ``benchmarks/comfygen_ft_bins.py``)."""
    return replace(TrainSettings(), epochs=3.0, learning_rate=3e-3)


#: Where ComfyGen-FT's judged examples come from (`ComfyGenFTStageConfig.data`).
COMFYGEN_DATA_SOURCES = ("grid", "triplets")


@dataclass(frozen=True)
class ComfyGenGridConfig:
    """ComfyGen's data shape at the collection's budget: `workflows` of the library (a
    uniform sample, as ComfyGen's 310 flows were chosen without scores), each judged on the
    same `prompts` train prompts (the first in sha256 order) with ``[collect]``'s seeds.

    Why: ComfyGen judged every one of 310 flows on each of 500 prompts, and its fine-tuned
    baseline learned to copy them (79 distinct over 500 prompts, similarity 0.9995 to its
    training set). The run's triplets are another shape (10,000 random pairs over ~2,000
    workflows, ~5 prompts per workflow), on which the analogue did not copy. 80 x 125 keeps
    ComfyGen's ratio (310 / 500 = 0.62) and the triplets' 10,000 pairs (docs/evaluation.md).
    """

    workflows: int = 80
    prompts: int = 125

    def __post_init__(self) -> None:
        if self.workflows < 1:
            raise RunConfigError(f"comfygen_ft.grid: workflows must be >= 1, got {self.workflows}")
        problem = sample_count_problem("comfygen_ft.grid.prompts", self.prompts, "train")
        if problem:
            raise RunConfigError(problem)


@dataclass(frozen=True)
class ComfyGenFTStageConfig:
    """The ComfyGen-FT baseline: (prompt, score bin) -> workflow on judged pairs."""

    #: Train it (off: the evaluation reports the baseline as not run).
    enabled: bool = True
    #: Its judged pairs: ``grid``, a ComfyGen-shaped collection of its own (`grid`, the
    #: ``comfygen_data`` stage; its judge calls are the baseline's data cost), or
    #: ``triplets``, the run's collection (no judge call more; what it learned before
    #: session 39, when it wrote a new design for most prompts instead of copying).
    data: str = "grid"
    #: The grid's size (``data = "grid"``).
    grid: ComfyGenGridConfig = field(default_factory=ComfyGenGridConfig)
    #: Scores averaged into its conditioning score; None: the training scorers (every score
    #: of the triplets except the held-out scorer).
    score_names: tuple[str, ...] | None = None
    #: How the policy is trained (`train.model` is unused with `from_sft`).
    train: TrainSettings = field(default_factory=_comfygen_ft_train)
    #: Fine-tune the run's phase-1 SFT policy instead of a new model: ComfyGen fine-tunes an
    #: LLM that already knows language, and FlowRL's GRPO starts from this same policy, so
    #: the two differ only in how they use the judged data (docs/evaluation.md).
    from_sft: bool = True

    def __post_init__(self) -> None:
        if self.data not in COMFYGEN_DATA_SOURCES:
            raise RunConfigError(
                f"comfygen_ft.data must be one of {', '.join(COMFYGEN_DATA_SOURCES)}, "
                f"got {self.data!r}"
            )


def _reward() -> RewardConfig:
    """Ten members rather than `RewardConfig`'s five: on both sim worlds, with the same data,
    GRPO against ten scored 0.479 / 0.497 held-out against 0.429 / 0.433 with five, and the
    ensemble's own per-prompt library pick rose too (docs/evaluation.md); +1 min of training."""
    return RewardConfig(members=10)


def _grpo() -> GRPORunConfig:
    return GRPORunConfig(sft_dir=SFT_DIR, reward_dir=REWARD_DIR, out=GRPO_DIR)


@dataclass(frozen=True)
class RunConfig:
    """Everything ``flowforge run`` does, stage by stage; saved as ``RUN/config.json``."""

    #: The judge of collection and evaluation: sim, sim:SEED or package.module:factory.
    judge: str = "sim"
    #: Options for the judge, as (key, value) strings (``--judge-opt key=value``).
    judge_opt: tuple[tuple[str, str], ...] = ()
    #: torch intra-op threads while a stage runs (restored afterwards; a stage's own
    #: ``threads`` setting wins inside it); None keeps torch's. On a shared 2-core machine
    #: the tiny models measured up to 10x faster with 1 thread than with 2.
    threads: int | None = 1
    #: torch threads of phase-1 SFT and of the refine rounds' re-paired SFT instead of
    #: `threads`: each runs while the other core is mostly idle (reward ends in SFT's first
    #: two minutes; nothing can start beside the re-paired SFT), and there the tiny model
    #: trained 1.58x faster on two threads than on one (94 steps: 44.6 s against 70.6 s, the
    #: same loss). None: `threads`. In no stage's key, like `threads`.
    sft_threads: int | None = 2
    #: Stages run at once, each in a process of its own, when the stages they read are
    #: done (reward beside SFT, ComfyGen-FT beside GRPO and refine); 1 runs them one after
    #: another in this process. Results do not depend on it; with `threads` 1, 2 keeps
    #: both cores of this machine busy. Not part of any stage's key.
    jobs: int = 2
    library: LibraryStageConfig = field(default_factory=LibraryStageConfig)
    collect: CollectStageConfig = field(default_factory=CollectStageConfig)
    reward: RewardConfig = field(default_factory=_reward)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    comfygen_ft: ComfyGenFTStageConfig = field(default_factory=ComfyGenFTStageConfig)
    grpo: GRPORunConfig = field(default_factory=_grpo)
    refine: RefineStageConfig = field(default_factory=RefineStageConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        fixed = {"sft_dir": SFT_DIR, "reward_dir": REWARD_DIR, "out": GRPO_DIR}
        moved = [k for k, v in fixed.items() if getattr(self.grpo, k) != v]
        problems = (
            [f"grpo.{', grpo.'.join(moved)}: paths are the run's; remove them"] if moved else []
        )
        if self.grpo.library_dir is not None:
            problems.append("grpo.library_dir: the run's library is used; remove it")
        if self.collect.negative != self.evaluate.negative:
            problems.append("collect.negative and evaluate.negative must be equal")
        if self.reward.heldout_scorer != self.evaluate.heldout_scorer:
            problems.append("reward.heldout_scorer and evaluate.heldout_scorer must be equal")
        grid = self.comfygen_ft.grid
        if self.comfygen_ft.data == "grid" and grid.workflows > self.library.size:
            problems.append(
                f"comfygen_ft.grid.workflows is {grid.workflows}: at most library.size "
                f"({self.library.size}), the workflows there are to sample from"
            )
        for name, value in (("threads", self.threads), ("sft_threads", self.sft_threads)):
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1 or unset, got {value}")
        if self.jobs < 1:
            problems.append(f"jobs must be >= 1, got {self.jobs}")
        if problems:
            raise RunConfigError("; ".join(problems))

    def section(self, name: str) -> Any:
        """A section (or a dotted setting) as JSON, as it identifies the stages that read it
        (`flowforge.settings.to_json` with `identity`: a setting added later is left out
        while at its default, so runs made before it resume). ``judge`` is the judge's id
        (`judge_id`), which names what changes scores and nothing else, so a run resumes
        under ``sim`` for ``sim:0``, another cache_dir or other ComfyUI servers without
        redoing its stages."""
        if name == "judge":
            return _judge_section(self.judge, self.judge_opt)
        value: Any = self
        for part in name.split("."):
            value = getattr(value, part)
        return to_json(value, identity=True)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = to_json(self)
        return data


def _judge_section(spec: str, options: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The judge's part of the stage keys: its id, the simulator's default world spelled
    ``sim`` as stage keys written before the id was used spell it (so those runs still
    resume). A spec that names no judge keeps its spelling; loading it fails first."""
    try:
        key = judge_id(spec, dict(options))
    except JudgeLoadError:
        return {"judge": spec, "judge_opt": to_json(options)}
    return {"judge": "sim" if key == "sim:0" else key, "judge_opt": []}


#: The quick model: a step costs milliseconds of compute (most of it the 3.3K-token output
#: layer); it learns a little of the text form, which is all a pipeline test needs.
QUICK_MODEL = PolicyModelConfig(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
)


def quick_config() -> RunConfig:
    """The ``--quick`` preset: tiny sizes everywhere, ~30 held-out prompts (tests, CI)."""
    train = TrainSettings(model=QUICK_MODEL, learning_rate=3e-3, save_steps=50, logging_steps=10)
    return RunConfig(
        library=LibraryStageConfig(size=200),
        collect=CollectStageConfig(pairs=1_500, seeds=2, prompts=300),
        reward=RewardConfig(members=3, epochs=6),
        sft=SFTStageConfig(pairs=800, train=train),
        # the grid at the collection's 1,500 pairs, ComfyGen's ratio
        comfygen_ft=ComfyGenFTStageConfig(
            train=replace(train, epochs=0.3), grid=ComfyGenGridConfig(workflows=30, prompts=50)
        ),
        grpo=apply(_grpo(), GRPO_QUICK),
        # two rounds of one design per train prompt, two policies each, chosen on 20 prompts;
        # the kept policy as small as the others
        refine=RefineStageConfig(samples=1, choose_prompts=20, sft_model=QUICK_MODEL),
        evaluate=EvalConfig(
            prompts=30,
            seeds=1,
            best_of_n=4,
            select_prompts=10,
            guard_prompts=20,
            max_new_tokens=GRPO_QUICK["max_completion_length"],
        ),
    )


def _without_null_sft_model(changes: dict[str, Any]) -> dict[str, Any]:
    """A config file's settings without ``refine.sft_model = null``, which a run's saved
    ``config.json`` from sessions 35 to 37 holds: then it meant the run's SFT model, and
    `load_run_config` reads it so (the default since session 38 is a model of its own), so
    an old run's config file still makes that run."""
    refine = changes.get("refine")
    if not isinstance(refine, dict) or "sft_model" not in refine or refine["sft_model"] is not None:
        return changes
    return {**changes, "refine": {k: v for k, v in refine.items() if k != "sft_model"}}


def load_run_config(
    path: Path | None = None, *, quick: bool = False, judge: str | None = None
) -> RunConfig:
    """The defaults (or the quick preset), the file's settings over them, then ``--judge``."""
    config = quick_config() if quick else RunConfig()
    if path is not None:
        changes = read_config_file(path)
        wanted = _without_null_sft_model(changes)
        config = apply(config, wanted)
        if wanted is not changes:  # an old run's "the run's SFT model"
            kept = dataclasses.replace(config.refine, sft_model=config.sft.train.model)
            config = dataclasses.replace(config, refine=kept)
    if judge is not None:
        config = dataclasses.replace(config, judge=judge)
    return config


def load_eval_config(path: Path | None = None) -> EvalConfig:
    """``flowforge evaluate --config FILE``: an `EvalConfig` file (TOML or JSON, the keys of
    a run config's ``[evaluate]`` table) over the defaults."""
    config = EvalConfig()
    return config if path is None else apply(config, read_config_file(path))
