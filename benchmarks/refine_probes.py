"""What the refine rounds' library probes cost (`[refine] probes`, `pipeline.probes`): the
first round's probe step on a finished run, timed part by part, nothing written.

Usage: ``python benchmarks/refine_probes.py --run RUN [--probes K]``. RUN is a finished
``flowforge run`` with refine rounds; K (default 2) probes per train prompt. Its first round
is redone in memory exactly as the rounds do it: the run's ensemble scores every train
prompt against the library (`ensemble_rewards`), each prompt's K best pairs that the triplets
and the round's judged designs never paired are chosen (`probe_pairs`) and judged with the
run's judge (`judge_requests`). Prints the seconds of each part, the judge calls and the
distinct workflows probed, with the machine and the command. Run it alone: its times are
what the rounds add per round. Results: docs/benchmarks.md ("Library probes").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from machine import stamped

from flowforge.data.export import run_table
from flowforge.judge.loader import load_judge
from flowforge.pipeline.config import load_run_config
from flowforge.pipeline.draws import RoundTools, train_prompts
from flowforge.pipeline.layout import REFINE, REWARD_DIR, round_dir
from flowforge.pipeline.probes import PROBE_STREAM, probe_pairs
from flowforge.pipeline.refine import JUDGED, PROBES, judge_requests
from flowforge.policy.sft import ensemble_rewards, library_texts
from flowforge.workflow.library import load_workflow_dir
from flowforge.workflow.schema import load_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    parser.add_argument("--probes", type=int, default=2, help="probes per train prompt")
    args = parser.parse_args()
    config = load_run_config(args.run / "config.json")
    catalog = load_catalog(args.run / "library" / "object_info.json")
    judge = load_judge(config.judge, dict(config.judge_opt))
    tools = RoundTools(judge, catalog, config.collect.negative, config.grpo.max_completion_length)

    started = time.perf_counter()
    triplets, _ = run_table(args.run / "collect")
    round_one = args.run / REFINE / round_dir(1)
    judged = pq.read_table(round_one / JUDGED)
    probed = round_one / PROBES
    if probed.is_file():  # the round's own probes are its last rows: keep its designs only
        judged = judged.slice(0, judged.num_rows - json.loads(probed.read_text())["calls"])
    data = pa.concat_tables([triplets, judged.select(triplets.column_names)])
    library = library_texts(load_workflow_dir(args.run / "library" / "workflows").values(), catalog)
    prompts = sorted(train_prompts(data).items())
    read_seconds = time.perf_counter() - started

    started = time.perf_counter()
    asked = [p for _, p in prompts]
    table = ensemble_rewards(args.run / REWARD_DIR, catalog, library, asked, progress=False)
    table_seconds = time.perf_counter() - started

    started = time.perf_counter()
    ids, texts = data.column("prompt_id").to_pylist(), data.column("workflow_text").to_pylist()
    probes = probe_pairs(prompts, library, table, set(zip(ids, texts, strict=True)), args.probes)
    pick_seconds = time.perf_counter() - started

    started = time.perf_counter()
    rng = np.random.default_rng([config.refine.seed, 1, PROBE_STREAM])
    requests = [(p.prompt_id, p.prompt, p.text, p.design_hash) for p in probes]
    result, calls = judge_requests(requests, config.refine.seeds, rng, data, tools)
    judge_seconds = time.perf_counter() - started
    errors = sum(e is not None for e in result.column("error").to_pylist())

    results = {
        "run": str(args.run),
        "judge": judge.judge_id,
        "train_prompts": len(prompts),
        "library_workflows": len(library),
        "probes_per_prompt": args.probes,
        "judge_calls": calls,
        "judge_errors": errors,
        "distinct_workflows_probed": len({p.text for p in probes}),
        "read_seconds": round(read_seconds, 1),
        "ensemble_table_seconds": round(table_seconds, 1),
        "pick_seconds": round(pick_seconds, 1),
        "judge_seconds": round(judge_seconds, 1),
    }
    print(json.dumps(stamped(results), indent=1))


if __name__ == "__main__":
    main()
