"""Data commands: collect triplets through a judge, export them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from ..data.collect import CollectConfig, collect
from ..data.export import export_run
from ..judge.loader import load_judge, parse_judge_options
from .app import app, fail, out, progress_bar, user_errors

data_app = typer.Typer(help="Collected data: export triplets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command("collect")
def collect_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory (resumed if it exists).")],
    judge: Annotated[
        str, typer.Option("--judge", help="sim, sim:SEED or package.module:factory.")
    ] = "sim",
    judge_opt: Annotated[
        list[str] | None,
        typer.Option("--judge-opt", help="KEY=VALUE for the judge (repeatable; strings)."),
    ] = None,
    prompts: Annotated[
        str, typer.Option("--prompts", help="train, heldout, all, or a .txt/.jsonl file.")
    ] = "train",
    library: Annotated[
        Path | None,
        typer.Option(
            "--library",
            help="Directory of API-JSON workflows. Default: build one from the shipped seeds.",
            file_okay=False,
        ),
    ] = None,
    library_size: Annotated[
        int, typer.Option("--library-size", help="Size of the built default library.", min=1)
    ] = 200,
    library_sample: Annotated[
        int | None,
        typer.Option(
            "--library-sample",
            help="Judge a seeded sample of N of the library's distinct workflows "
            "(with --grid: ComfyGen's data shape, few workflows on every prompt).",
            min=1,
        ),
    ] = None,
    pairs: Annotated[
        int | None,
        typer.Option("--pairs", help="Random (prompt, workflow) pairs to judge.", min=1),
    ] = None,
    grid: Annotated[
        bool, typer.Option("--grid", help="Every prompt with every workflow instead of --pairs.")
    ] = False,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per pair.", min=1)] = 1,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed of the plan and the default library.")
    ] = 0,
    negative: Annotated[
        str, typer.Option("--negative", help="Negative prompt written into every workflow.")
    ] = "",
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", help="Items per judge call and per journal write.", min=1),
    ] = 256,
    max_attempts: Annotated[
        int, typer.Option("--max-attempts", help="Tries per item for transient errors.", min=1)
    ] = 3,
    backoff_seconds: Annotated[
        float, typer.Option("--backoff-seconds", help="First retry wait; doubles each retry.")
    ] = 1.0,
    retry_transient: Annotated[
        bool,
        typer.Option(
            "--retry-transient", help="Judge again items whose recorded error was transient."
        ),
    ] = False,
    server: Annotated[
        list[str] | None,
        typer.Option("--server", help="--judge comfyui: a server URL (repeatable)."),
    ] = None,
    servers: Annotated[
        Path | None,
        typer.Option("--servers", help="--judge comfyui: a file of server URLs, one per line."),
    ] = None,
    executor: Annotated[
        str,
        typer.Option("--executor", help="--judge comfyui: local, or ray (one actor per server)."),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="--executor ray: cluster address (default: local)."),
    ] = None,
) -> None:
    """Judge (prompt, workflow, seed) items into a resumable journal in --out.

    The plan is chosen once and stored; kill this at any time (even with SIGKILL) and run
    the same command to finish it: nothing is lost or judged twice. See docs/collection.md;
    real rendering with --judge comfyui --server URL ...: docs/comfyui.md.
    """
    with user_errors():
        options = parse_judge_options(judge_opt or [])
        options.update(_comfyui_options(judge, server, servers, executor, ray_address))
        config = CollectConfig(
            out=out_dir,
            judge=judge,
            judge_opt=tuple(sorted(options.items())),
            prompts=prompts,
            library=library,
            library_size=library_size,
            library_sample=library_sample,
            pairs=pairs,
            seeds=seeds,
            grid=grid,
            seed=seed,
            negative=negative,
            batch_size=batch_size,
            max_attempts=max_attempts,
            backoff_seconds=backoff_seconds,
            retry_transient=retry_transient,
        )
        loaded = load_judge(judge, options)
    # The bar starts on the first report, so settings errors are not printed under a bar.
    progress = progress_bar()
    task = progress.add_task("judging", total=None, start=False)

    def on_progress(done: int, total: int) -> None:
        if not progress.tasks[0].started:  # first call: what a resumed run already had
            progress.start()
            progress.start_task(task)
            progress.reset(task, total=total, completed=done)
        else:
            progress.update(task, completed=done)

    try:
        with user_errors():
            summary = collect(config, loaded, on_progress)
    except KeyboardInterrupt:
        progress.stop()
        fail(f"interrupted; run the same command to resume {out_dir}")
    finally:
        progress.stop()
    errors = ", ".join(f"{k} {v:,}" for k, v in sorted(summary.run_errors_by_kind.items()))
    out.print(
        f"{'created' if summary.created else 'resumed'} {summary.run}: judged "
        f"{summary.judged:,} ({summary.scored:,} scored) of {summary.total:,}, "
        f"{summary.skipped_done:,} already done; {summary.rate:,.0f}/s; "
        f"errors in run: {errors or 'none'}",
        highlight=False,
        soft_wrap=True,
    )


def _comfyui_options(
    judge: str,
    server: list[str] | None,
    servers: Path | None,
    executor: str,
    ray_address: str | None,
) -> dict[str, str]:
    """The ComfyUI flags as the judge's options (they do not change the judge id)."""
    given = bool(server or servers or ray_address or executor != "local")
    if judge != "comfyui":
        if given:
            fail("--server, --servers, --executor and --ray-address need --judge comfyui")
        return {}
    if executor not in ("local", "ray"):
        fail(f"--executor must be local or ray, not {executor!r}")
    if ray_address and executor != "ray":
        fail("--ray-address needs --executor ray")
    options = {"executor": executor}
    if server:
        options["servers"] = ",".join(server)
    if servers:
        options["servers_file"] = str(servers)
    if ray_address:
        options["ray_address"] = ray_address
    return options


@data_app.command("export")
def data_export_command(
    run: Annotated[
        Path, typer.Option("--run", help="A collection run directory.", file_okay=False)
    ],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="FILE.parquet, or a directory for a HF dataset."),
    ],
    format: Annotated[
        str | None, typer.Option("--format", help="parquet or hf (default: from -o).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace -o if it exists.")
    ] = False,
) -> None:
    """Write a run's triplets (one row per judged item) to Parquet or a HF dataset."""
    formats: dict[str | None, Literal["parquet", "hf"] | None] = {
        None: None,
        "parquet": "parquet",
        "hf": "hf",
    }
    if format not in formats:
        fail(f"--format must be parquet or hf, not {format!r}")
    chosen = formats[format]
    with user_errors():
        result = export_run(run, output, chosen, overwrite)
    pending = f"; {result.pending:,} plan items not judged yet" if result.pending else ""
    out.print(
        f"wrote {result.rows:,} rows ({result.format}) to {result.path}{pending}",
        highlight=False,
    )
