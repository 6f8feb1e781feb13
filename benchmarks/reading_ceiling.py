"""How much of what the final ensemble knows per prompt could a designer reach, and how much
does the run's policy reach? Judged on the simulated world's hidden quality q.

Usage: ``python benchmarks/reading_ceiling.py --run RUN --judge sim:W [--meaning 8x5]
[--clusters 16,32,64] [--policy NAME=DIR ...] [--no-run-policies]``.

For the run's held-out prompts (those of ``RUN/evaluate/designs.jsonl``) it picks one
workflow per prompt from the candidates the re-paired SFT pairs among (the library's
workflows and every refine round's judged designs) in several ways, and reports each pick's
mean q and its q-win rate against the best fixed workflow's design (from designs.jsonl):

- ``ensemble, per prompt``: the final ensemble's best-predicted candidate for the prompt
  itself (what ensemble pairing aims the re-paired SFT at);
- ``ensemble, k nearest train prompts``: the best candidate on average over the k train
  prompts nearest in MiniLM space (a designer that reads the prompt's meaning only as well
  as its neighbours allow);
- ``... in meaning tokens``: the same with "nearest" measured by the meaning tokens
  (`policy.meaning`: D components in B bins, Manhattan distance between codes), i.e. what
  the tokens carry at most;
- ``... in the prompt's cluster (K)``: the best candidate on average over the train prompts
  in the prompt's meaning cluster (`policy.meaning`, K spherical k-means clusters): what one
  cluster token carries at most;
- the run's own policies (the chosen GRPO policy and its start) sampled at ``design``'s
  temperature 0.7, one design per prompt, on the held-out prompts and on as many train
  prompts (where the SFT learnt its pairs), beside the ensemble's own pick for those train
  prompts; and for those train prompts, how often a policy writes one of the candidates, one
  of the prompt's own 16 best-predicted (the re-paired SFT's pairing support), and how often
  a design drawn from the pairing's mixture over all train prompts would (chance).

Why: it tells a gap in the ensemble (nothing here beats the best fixed workflow) from a gap
in the policy (the ensemble's picks do, the policy's designs do not). Uses the judge's
hidden q (`SimJudge.true_quality`): a benchmark, never a training signal.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from machine import command_line, describe_machine

from flowforge.data.plan import RequestTemplate
from flowforge.data.prompts import load_prompts
from flowforge.evaluate.designers import SamplingSettings
from flowforge.judge.base import JudgeItem
from flowforge.judge.loader import load_judge
from flowforge.pipeline.draws import Draw, draw
from flowforge.pipeline.layout import final_models
from flowforge.policy.examples import pairing_weights
from flowforge.policy.meaning import fit_meaning, shared_encoder
from flowforge.policy.sft import judged_designs
from flowforge.reward.ensemble import load_ensemble
from flowforge.workflow.library import load_workflow_dir
from flowforge.workflow.schema import load_catalog
from flowforge.workflow.textform import to_text

TOP_K = 16  # `[refine] sft_top_k`'s default
PAIRING_TEMPERATURE = 0.15  # `[sft] pairing_temperature`'s default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    parser.add_argument("--judge", default="sim", help="the run's sim world, e.g. sim:1")
    parser.add_argument("--meaning", default="8x5", help="meaning tokens DIMSxBINS")
    parser.add_argument("--clusters", default="16,32,64", help="meaning cluster counts K")
    parser.add_argument("--train-prompts", type=int, default=300, help="train prompts sampled")
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="another policy directory to sample beside the run's (e.g. a variant SFT)",
    )
    parser.add_argument(
        "--no-run-policies", action="store_true", help="sample only the --policy directories"
    )
    args = parser.parse_args()
    extra = [text.partition("=")[::2] for text in args.policy]
    if any(not name or not folder for name, folder in extra):
        parser.error("--policy takes NAME=DIR, e.g. --policy 'variant SFT=runs/x/sft'")
    run: Path = args.run
    judge = load_judge(args.judge).judge
    if not hasattr(judge, "true_quality"):
        parser.error("--judge must be a simulated world (sim or sim:SEED): q is its hidden quality")
    catalog = load_catalog(run / "library" / "object_info.json")
    negative = json.loads((run / "config.json").read_text())["collect"]["negative"]
    library = load_workflow_dir(run / "library" / "workflows").values()
    texts = list(dict.fromkeys(to_text(w, catalog)[0] for w in library))
    rounds = sorted(str(p) for p in (run / "refine").glob("round-*/judged.parquet"))
    candidates = list(dict.fromkeys([*texts, *judged_designs(rounds)]))
    fixed: dict[str, float] = {}
    for line in (run / "evaluate" / "designs.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["method"] == "best_fixed" and row["quality"] is not None:
            fixed[row["prompt"]] = float(row["quality"])
    held = sorted(fixed)
    train = sorted({p.text for p in load_prompts("train")})
    baseline = np.array([fixed[p] for p in held])

    def quality(prompts: list[str], designs: list[str | None]) -> np.ndarray:
        """q of each (prompt, design); 0 for an invalid sample (None)."""
        pairs = [(p, d) for p, d in zip(prompts, designs, strict=True) if d is not None]
        items = [JudgeItem(p, RequestTemplate(d, negative).fill(p, 1), 1) for p, d in pairs]
        found = iter(judge.true_quality(items))  # type: ignore[attr-defined]
        q = [0.0 if d is None else (next(found) or 0.0) for d in designs]
        return np.array(q)

    rows: list[tuple[str, float, float, int]] = []

    def report(
        name: str, prompts: list[str], designs: list[str | None], against: bool = True
    ) -> None:
        q = quality(prompts, designs)
        win = float(np.mean(q > baseline)) if against else float("nan")
        rows.append((name, float(q.mean()), win, len({d for d in designs if d is not None})))

    models = final_models(run)
    ensemble = load_ensemble(models.reward, catalog=catalog)
    held_table = ensemble.predict_table(held, candidates)
    report("ensemble, per prompt", held, [candidates[i] for i in held_table.argmax(1)])
    train_table = ensemble.predict_table(train, candidates)
    encoder = shared_encoder()

    def unit(prompts: list[str]) -> np.ndarray:  # MiniLM's vectors are unit vectors already
        return np.asarray(encoder.encode(prompts), np.float64)

    train_vectors, held_vectors = unit(train), unit(held)
    near = (held_vectors @ train_vectors.T).argsort(axis=1)[:, ::-1]
    for k in (1, 10):
        picks = [int(train_table[near[i, :k]].mean(0).argmax()) for i in range(len(held))]
        report(f"ensemble, {k} nearest train prompts", held, [candidates[j] for j in picks])
    dims, bins = (int(x) for x in args.meaning.split("x"))
    codec = fit_meaning(train, dims, bins, encoder)
    train_codes = np.array([codec.code(v) for v in train_vectors])
    held_codes = np.array([codec.code(v) for v in held_vectors])
    jitter = np.random.default_rng(0).random((len(held), len(train))) * 1e-3  # ties at random
    distance = np.abs(held_codes[:, None, :] - train_codes[None, :, :]).sum(2) + jitter
    close = distance.argsort(axis=1)
    picks = [int(train_table[close[i, :10]].mean(0).argmax()) for i in range(len(held))]
    report(
        f"ensemble, 10 nearest in meaning tokens ({dims}x{bins})",
        held,
        [candidates[j] for j in picks],
    )
    for clusters in (int(k) for k in args.clusters.split(",") if k):
        grouped = fit_meaning(train, 0, 2, encoder, clusters)
        train_of = np.array([grouped.cluster(v) for v in train_vectors])
        by_cluster = {
            k: int(train_table[train_of == k].mean(0).argmax()) for k in set(train_of.tolist())
        }
        picks = [by_cluster[grouped.cluster(v)] for v in held_vectors]
        report(
            f"ensemble, train prompts in the prompt's cluster ({clusters})",
            held,
            [candidates[j] for j in picks],
        )
    some_train = [train[i] for i in np.random.default_rng(0).permutation(len(train))]
    some_train = some_train[: args.train_prompts]
    index = {p: i for i, p in enumerate(train)}
    own = [candidates[int(train_table[index[p]].argmax())] for p in some_train]
    report(
        "ensemble, per prompt, train prompts (what the SFT was paired towards)",
        some_train,
        own,
        False,
    )
    # Does a policy write, for a train prompt, one of the designs that prompt was paired with
    # (its `TOP_K` best-predicted candidates, ensemble pairing's support), more often than a
    # design drawn from the pairing's mixture over all train prompts would by chance?
    weights = pairing_weights(train_table, PAIRING_TEMPERATURE, TOP_K)
    mixture = weights.mean(axis=0)
    support = np.argsort(-train_table, axis=1)[:, :TOP_K]
    position = {text: j for j, text in enumerate(candidates)}

    def support_share(prompts: list[str], designs: list[str | None]) -> tuple[float, float, float]:
        own = [set(support[index[p]].tolist()) for p in prompts]
        known = [None if d is None else position.get(d) for d in designs]
        in_own = np.mean([k is not None and k in o for k, o in zip(known, own, strict=True)])
        chance = np.mean([mixture[support[index[p]]].sum() for p in prompts])
        return float(np.mean([k is not None for k in known])), float(in_own), float(chance)

    fits: list[tuple[str, tuple[float, float, float]]] = []
    settings = SamplingSettings(0.7, True, 384, 64, negative)
    policies = [] if args.no_run_policies else [("GRPO (kept)", models.policy)]
    policies += [] if args.no_run_policies else [("its start", models.start)]
    policies += [(name, Path(folder)) for name, folder in extra]
    for name, policy in policies:
        for where, prompts in (("held-out", held), ("train", some_train)):
            chunks = [prompts[i : i + 64] for i in range(0, len(prompts), 64)]
            draws = [
                Draw(policy, tuple(c), tuple(range(i, i + len(c))), 1)
                for i, c in zip(range(0, len(prompts), 64), chunks, strict=True)
            ]
            samples = [s for found in draw(draws, catalog, settings, 2) for s in found]
            designs: list[str | None] = [s.text if s.valid else None for s in samples]
            report(f"{name} at 0.7, {where} prompts", prompts, designs, where == "held-out")
            if where == "train":
                fits.append((name, support_share(some_train, designs)))
    print("| pick | mean q | q-win vs best fixed | distinct |")
    print("|---|---|---|---|")
    print(f"| best fixed workflow | {baseline.mean():.3f} | - | 1 |")
    for name, q, win, distinct in rows:
        shown = "-" if np.isnan(win) else f"{win:.0%}"
        print(f"| {name} | {q:.3f} | {shown} | {distinct} |")
    print(f"\n| policy, train prompts | a candidate | in the prompt's top {TOP_K} | by chance |")
    print("|---|---|---|---|")
    for name, (candidate, in_own, chance) in fits:
        print(f"| {name} | {candidate:.0%} | {in_own:.0%} | {chance:.0%} |")
    print(f"\nrun: {run}\nmachine: {describe_machine()}\ncommand: {command_line()}")


if __name__ == "__main__":
    main()
