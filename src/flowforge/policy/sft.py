"""Supervised fine-tuning of the policy with TRL's SFTTrainer, and the ComfyGen-FT baseline.

Phase 1 of the method (`run_sft`): teach the policy the language of workflows from
(prompt, workflow) pairs of an augmented library, no rendering needed (``examples.py`` says
why the pairing is random). The ComfyGen-FT baseline (`run_comfygen_ft`) is the same
training on a different input: (prompt, score bin) -> workflow from judged triplets.

The story of one run, top to bottom:
1. the run directory: created with the resolved config, or resumed (same config required);
2. the data: library (built or read) or triplets -> examples -> token ids;
3. the tokenizer, fitted on the run's own workflow texts, train prompts and the catalog,
   saved before training so a resumed run uses the same ids;
4. the model: a tiny Llama from `PolicyModelConfig`, or a pretrained LLM with LoRA;
5. TRL's SFTTrainer, loss on the completion (workflow + ``<eos>``) only, checkpoints every
   ``save_steps`` in ``OUT/checkpoints`` (resumed from the last one after a kill);
6. the policy directory: ``OUT`` itself gets the model (safetensors), tokenizer and
   ``flowforge_run.json`` (config, data stats, versions, final loss).

Checkpoints: model weights are safetensors; the Trainer's optimizer, scheduler and RNG states
(needed to resume exactly) are torch files that it reads back with ``weights_only=True``
(torch's restricted loader: tensors and plain containers, no code).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainerState
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint
from trl.trainer.callbacks import RichProgressCallback
from trl.trainer.sft_config import SFTConfig
from trl.trainer.sft_trainer import SFTTrainer

from flowforge.data.prompts import load_prompts
from flowforge.files import write_text_atomic
from flowforge.reward.backbone import TextEncoder, default_encoder
from flowforge.settings import added_defaults
from flowforge.workflow.graph import Workflow
from flowforge.workflow.library import build_library, load_seed_library, load_workflow_dir
from flowforge.workflow.schema import Catalog, load_catalog
from flowforge.workflow.textform import to_text

from .checkpoint import RunDirError, open_run, versions
from .config import ComfyGenFTConfig, SFTError, SFTRunConfig, TrainSettings
from .directory import RUN_FILE
from .examples import (
    Example,
    TokenizedExamples,
    capped_pairs,
    effective_choices,
    library_pairs,
    preferred_pairs,
    scored_examples,
    seed_means,
    tokenize_examples,
)
from .model import (
    build_tiny_model,
    load_policy,
    merge_adapters,
    no_progress_bars,
    parameter_count,
    prepare_pretrained,
    save_policy,
)
from .tokenizer import PolicyTokenizer, load_tokenizer, new_tokenizer
from .vocab import VocabError, fit_vocab
from .word_init import init_prompt_word_embeddings

if TYPE_CHECKING:
    from peft import PeftModel

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class SFTResult:
    """What a finished run left in its policy directory."""

    policy_dir: Path
    examples: int
    steps: int
    train_loss: float
    seconds: float
    parameters: int
    resumed: bool


# --- 1. the run directory -----------------------------------------------------------------
def _open_run(
    out_dir: Path,
    kind: str,
    config: dict[str, Any],
    added: dict[str, Any] | None = None,
    *,
    create: bool = True,
) -> dict[str, Any] | None:
    """`checkpoint.open_run` for a policy run (its directory setting is ``out_dir``), its
    refusals as `SFTError`s."""
    try:
        return open_run(out_dir, kind, config, added, create=create, out_key="out_dir")
    except RunDirError as err:
        raise SFTError(str(err)) from None


def _write_record(out_dir: Path, record: dict[str, Any]) -> None:
    write_text_atomic(out_dir / RUN_FILE, json.dumps(record, indent=2, ensure_ascii=False))


# --- 2-4. data, tokenizer, model ----------------------------------------------------------------
def _library_texts(config: SFTRunConfig, catalog: Catalog) -> list[str]:
    if config.library_dir is not None:
        workflows = list(load_workflow_dir(config.library_dir).values())
    else:
        entries = build_library(
            load_seed_library(), catalog, config.library_size, config.library_seed
        )
        workflows = [entry.workflow for entry in entries]
    return library_texts(workflows, catalog)


def library_texts(workflows: Iterable[Workflow], catalog: Catalog) -> list[str]:
    """The distinct text forms of library workflows, in order of first appearance."""
    return list(dict.fromkeys(to_text(workflow, catalog)[0] for workflow in workflows))


def pairing_candidates(
    library: Sequence[str], designs: Sequence[str], with_library: bool = True
) -> list[str]:
    """What SFT pairs prompts with: the `library` texts, then the judged designs of the
    Parquet tables `designs` (`judged_designs`) not among them, each once and in this order
    (the order pairing's seeded draws index, so a benchmark that rebuilds it gets the same
    pairs); without `with_library`, those judged designs alone
    (`SFTRunConfig.library_share` 0)."""
    candidates = list(dict.fromkeys([*library, *judged_designs(designs)]))
    return candidates if with_library else candidates[len(set(library)) :]


def judged_designs(paths: Sequence[str]) -> list[str]:
    """The distinct ``workflow_text`` of the rows judged without error in Parquet tables
    with the export's columns (`SFTRunConfig.designs`), in order of first appearance."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    texts: list[str] = []
    for path in paths:
        if not Path(path).is_file():
            raise SFTError(f"judged designs: {path} is not a file")
        table = pq.read_table(path, columns=["workflow_text", "error"])
        errors = table.column("error").to_pylist()
        found = table.column("workflow_text").to_pylist()
        texts += [t for t, e in zip(found, errors, strict=True) if e is None and t]
    return list(dict.fromkeys(texts))


def _tokenizer_and_model(
    out_dir: Path,
    texts: list[str],
    catalog: Catalog,
    train: TrainSettings,
    init_from: Path | None = None,
) -> tuple[PolicyTokenizer, PreTrainedModel | PeftModel, bool]:
    """The run's tokenizer (fitted on first start, read back on resume), model, and whether
    `out_dir` holds the tokenizer already; with `init_from`, that policy's model and
    tokenizer (a resumed run then loads its last checkpoint's weights over them). A new
    run's tokenizer is saved by the caller, once the examples have tokenized and the run's
    record is written: an input that fails leaves `out_dir` as it was."""
    saved = (out_dir / "tokenizer.json").is_file()
    if init_from is not None:
        start, tokenizer = load_policy(init_from)
        if saved and load_tokenizer(out_dir).vocab != tokenizer.vocab:
            raise SFTError(
                f"{out_dir} was started with another tokenizer than {init_from}'s; use a new --out"
            )
        start.train()
        return tokenizer, start, saved
    if saved:
        vocab = load_tokenizer(out_dir).vocab
    else:
        prompts = [prompt.text for prompt in load_prompts("train")]
        vocab = fit_vocab(texts, prompts, catalog, train.vocab)
    if train.base_model is None:
        tokenizer = new_tokenizer(vocab)
        tiny = build_tiny_model(tokenizer, train.model, train.seed)
        if train.model.prompt_word_init == "minilm":
            init_prompt_word_embeddings(
                tiny, tokenizer, default_encoder(), train.model.initializer_range
            )
        model: PreTrainedModel | PeftModel = tiny
    else:
        model, tokenizer = prepare_pretrained(Path(train.base_model), vocab, train.lora)
    return tokenizer, model, saved


# --- 5-6. trainer, policy directory ---------------------------------------------------------
class PlainLossSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss is the model's own cross-entropy on TRL's labels.

    TRL scores every position through its chunked "fused LM head" (log-probs plus entropy
    and top-1 metrics) unless a Triton GPU lets it score only the labelled ones. On CPU with
    the tiny model that took 35% of the CPU time of a step (1.6 s vs 1.0 s, same loss to the
    last digit). The loss is the same: summed over completion tokens, divided by their count.
    """

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


def _train(
    model: PreTrainedModel | PeftModel,
    tokenizer: PolicyTokenizer,
    data: TokenizedExamples,
    train: TrainSettings,
    out_dir: Path,
    progress: bool,
    say: Callable[[str], None] | None = None,
) -> tuple[int, float, bool]:
    """Train `model` in place with SFTTrainer, resuming from the last checkpoint if any;
    returns steps, mean training loss and whether it resumed. `progress` draws a Rich bar;
    `say` gets about 20 lines of progress instead (`flowforge run`'s log)."""
    from datasets import Dataset  # type: ignore[import-untyped]
    from datasets.utils import logging as datasets_logging  # type: ignore[import-untyped]

    datasets_logging.disable_progress_bar()  # TRL's preparation passes are quick; one bar
    dataset = Dataset.from_dict(
        {"input_ids": data.input_ids, "completion_mask": data.completion_mask}
    )
    checkpoints = out_dir / CHECKPOINTS
    args = SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=train.epochs,
        per_device_train_batch_size=train.batch_size,
        learning_rate=train.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=train.warmup_ratio,
        weight_decay=train.weight_decay,
        logging_steps=train.logging_steps,
        save_steps=train.save_steps,
        save_total_limit=2,
        seed=train.seed,
        data_seed=train.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=train.bf16,
        activation_checkpointing=train.activation_checkpointing,
        max_length=train.max_length,
        completion_only_loss=True,
        report_to="none",
        disable_tqdm=True,  # the Rich bar or `say` lines instead
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
    )
    trainer_class = SFTTrainer if train.fused_lm_head else PlainLossSFTTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer.hf,
        callbacks=_progress_callbacks(progress, say),
    )
    if progress or say:  # they show the logs; the printer would repeat them on stdout
        trainer.remove_callback(PrinterCallback)
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None  # type: ignore[no-untyped-call]
    with no_progress_bars():  # "Writing model shards" at every checkpoint
        output = trainer.train(resume_from_checkpoint=last)
    return output.global_step, float(output.training_loss), last is not None


def _progress_callbacks(
    progress: bool, say: Callable[[str], None] | None
) -> list[TrainerCallback] | None:
    callbacks: list[TrainerCallback] = []
    if progress:
        callbacks.append(RichProgressCallback())  # type: ignore[no-untyped-call]
    if say is not None:
        callbacks.append(SayProgress(say))
    return callbacks or None


class SayProgress(TrainerCallback):
    """The training loss about every 5% of the steps as one line of text: progress for a
    log or a process whose output is not a terminal (a stage of ``flowforge run``)."""

    def __init__(self, say: Callable[[str], None], lines: int = 20) -> None:
        self.say = say
        self.lines = lines
        self.said = 0  # the step of the last line

    def on_log(
        self,
        args: Any,
        state: TrainerState,
        control: Any,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "loss" not in logs:
            return
        every = max(1, state.max_steps // self.lines)
        step = state.global_step
        if step // every > self.said // every or step == state.max_steps:
            self.said = step
            self.say(f"step {step}/{state.max_steps}: loss {logs['loss']:.3f}")


def _finish(
    model: PreTrainedModel | PeftModel,
    tokenizer: PolicyTokenizer,
    out_dir: Path,
    record: dict[str, Any],
) -> None:
    plain = merge_adapters(model)
    save_policy(plain, tokenizer, out_dir)
    _write_record(out_dir, {**record, "finished": True})


def _run(
    kind: str,
    config_json: dict[str, Any],
    examples_of: Callable[[Catalog], tuple[list[str], list[Example], dict[str, Any]]],
    out_dir: Path,
    catalog: Catalog,
    train: TrainSettings,
    progress: bool,
    init_from: Path | None = None,
    say: Callable[[str], None] | None = None,
) -> SFTResult:
    """Steps 1-6 for either kind; `examples_of(catalog)` -> (texts, examples, data stats)."""
    added = added_defaults(SFTRunConfig) if kind == "sft" else None
    done = _open_run(out_dir, kind, config_json, added, create=False)
    if done is not None:
        return _result(out_dir, done, resumed=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    texts, examples, stats = examples_of(catalog)  # reads the inputs: a bad one fails here,
    if init_from is not None and not (init_from / "config.json").is_file():
        raise SFTError(f"{init_from}: no policy to start from (no config.json)")
    tokenizer, model, saved = _tokenizer_and_model(out_dir, texts, catalog, train, init_from)
    try:
        data = tokenize_examples(tokenizer, examples, train.max_length)
    except VocabError as err:  # only a started-from tokenizer can miss a training workflow
        raise SFTError(
            f"the policy's vocabulary cannot write a training workflow ({err}); "
            "fine-tune a policy trained on the library these examples were drawn from"
        ) from None
    _open_run(out_dir, kind, config_json, added)  # only now is a new run's record written
    if not saved:
        tokenizer.save(out_dir)
    steps, loss, resumed = _train(model, tokenizer, data, train, out_dir, progress, say)
    record = {
        "kind": kind,
        "config": config_json,
        "data": {
            **stats,
            "examples": len(examples),
            "tokens": data.tokens,
            "longest": data.longest,
            "vocab_size": len(tokenizer),
        },
        "result": {
            "steps": steps,
            "train_loss": loss,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu_start,
            "parameters": parameter_count(merge_adapters(model)),
            "resumed": resumed,
        },
        "versions": versions("trl", "tokenizers", "peft"),
    }
    _finish(model, tokenizer, out_dir, record)
    return _result(out_dir, record, resumed)


def _result(out_dir: Path, record: dict[str, Any], resumed: bool) -> SFTResult:
    result = record["result"]
    return SFTResult(
        out_dir,
        int(record["data"]["examples"]),
        int(result["steps"]),
        float(result["train_loss"]),
        float(result["seconds"]),
        int(result["parameters"]),
        resumed,
    )


def run_sft(
    config: SFTRunConfig, progress: bool = True, say: Callable[[str], None] | None = None
) -> SFTResult:
    """Phase-1 SFT into ``config.out_dir`` (created, resumed, or returned if finished);
    `progress` draws Rich bars, `say` gets lines of progress instead."""
    catalog = load_catalog(config.object_info)

    def examples_of(catalog: Catalog) -> tuple[list[str], list[Example], dict[str, Any]]:
        return sft_examples(config, catalog, progress)

    out_dir = Path(config.out_dir)
    train = config.train
    return _run("sft", asdict(config), examples_of, out_dir, catalog, train, progress, say=say)


def sft_examples(
    config: SFTRunConfig, catalog: Catalog, progress: bool = False
) -> tuple[list[str], list[Example], dict[str, Any]]:
    """What `run_sft` trains on: the pairing candidates (`pairing_candidates`), the
    (prompt, workflow) examples its `pairing` draws, and the data stats its run record
    keeps. Public so a benchmark can ask of a finished run what its SFT learnt from
    (`benchmarks/pairing_sources.py`) without training it again."""
    library = _library_texts(config, catalog)
    texts = pairing_candidates(library, config.designs, config.library_share > 0)
    new_designs = texts[len(library) :] if config.library_share > 0 else texts
    if not new_designs and config.library_share < 1:
        raise SFTError("no workflow to pair with: the judged designs are all library workflows")
    prompts = [prompt.text for prompt in load_prompts("train")]
    stats: dict[str, Any] = {"library_workflows": len(library), "train_prompts": len(prompts)}
    if config.designs:  # the judged designs not in the library
        stats["judged_designs"] = len(new_designs)
        stats["library_share"] = config.library_share
    if config.pairing == "random":
        return texts, library_pairs(texts, prompts, config.pairs, config.train.seed), stats
    assert config.reward_dir is not None  # SFTRunConfig checks it
    rewards = ensemble_rewards(config.reward_dir, catalog, texts, prompts, progress)
    temperature, top_k, seed = config.pairing_temperature, config.pairing_top_k, config.train.seed
    examples = preferred_pairs(texts, prompts, rewards, config.pairs, temperature, seed, top_k)
    known = set(library)
    if 0 < config.library_share < 1:  # the same prompts drawn again among the new designs
        designs_only = rewards[:, len(library) :]
        fallback = preferred_pairs(
            new_designs, prompts, designs_only, config.pairs, temperature, seed, top_k
        )
        examples = capped_pairs(examples, fallback, known, config.library_share, seed)
    effective = effective_choices(rewards, temperature, top_k)
    stats |= {
        "paired_workflows": len({e.workflow_text for e in examples}),
        # how much of what SFT learns is the library (the rest: judged designs): what a
        # policy started from it can copy (docs/evaluation.md, "What was tried")
        "library_pair_share": float(np.mean([e.workflow_text in known for e in examples])),
        "effective_workflows_per_prompt": {
            q: float(np.percentile(effective, int(q[1:]))) for q in ("p10", "p50", "p90")
        },
    }
    return texts, examples, stats


def ensemble_rewards(
    reward_dir: str | Path,
    catalog: Catalog,
    texts: list[str],
    prompts: list[str],
    progress: bool = True,
    encoder: TextEncoder | None = None,
) -> NDArray[np.float64]:
    """(prompts, workflows) rewards of the ensemble in `reward_dir` (``mean - kappa * std``,
    its floor for a workflow it cannot read): what ensemble pairing samples from. `encoder`
    replaces the ensemble's MiniLM prompt encoder (tests)."""
    from flowforge.reward.ensemble import load_ensemble

    ensemble = load_ensemble(reward_dir, catalog=catalog, encoder=encoder)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("ensemble pairing: prompts scored", total=len(prompts))
        return ensemble.predict_table(prompts, texts, progress=lambda n: bar.advance(task, n))


def run_comfygen_ft(
    config: ComfyGenFTConfig, progress: bool = True, say: Callable[[str], None] | None = None
) -> SFTResult:
    """The ComfyGen-FT baseline into ``config.out_dir``; bins saved in its run record
    (`progress` and `say` as in `run_sft`)."""
    from flowforge.data.export import load_triplets

    catalog = load_catalog(config.object_info)

    def examples_of(catalog: Catalog) -> tuple[list[str], list[Example], dict[str, Any]]:
        triplets = load_triplets(Path(config.triplets))
        judged = [(t.prompt, t.workflow_text, dict(t.scores)) for t in triplets if t.scores]
        rows = seed_means(judged)
        examples, bins = scored_examples(rows, config.score_names, config.train.vocab.score_bins)
        texts = list(dict.fromkeys(text for _, text, _ in rows))
        stats = {
            "triplets": len(triplets),
            "failed_renders": len(triplets) - len(judged),
            "pairs": len(rows),
            "score_bin_edges": list(bins.edges),
            "library_workflows": len(texts),
        }
        return texts, examples, stats

    return _run(
        "comfygen_ft",
        asdict(config),
        examples_of,
        Path(config.out_dir),
        catalog,
        config.train,
        progress,
        None if config.init_from is None else Path(config.init_from),
        say,
    )
