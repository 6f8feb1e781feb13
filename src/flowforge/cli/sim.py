"""Commands about the simulated world (``--judge sim``)."""

from __future__ import annotations

from typing import Annotated

import typer

from ..judge.sim.audit import AuditConfig, audit
from .app import app, err, out, user_errors

sim_app = typer.Typer(
    help="The embedded simulated world that stands in for rendering + scoring.",
    no_args_is_help=True,
)
app.add_typer(sim_app, name="sim")


@sim_app.command("audit")
def audit_command(
    seed: Annotated[int, typer.Option("--seed", help="World seed (as in --judge sim:SEED).")] = 0,
    prompts: Annotated[
        int, typer.Option("--prompts", help="Held-out prompts to audit.", min=2)
    ] = 100,
    library_size: Annotated[
        int, typer.Option("--library-size", help="Size of the default library.", min=2)
    ] = 300,
) -> None:
    """Measure that the simulated world is a hard, honest learning problem. Exit 1 if not.

    (a) per-prompt best library workflow vs the best fixed one, (b) how often a search
    beyond the library finds better, (c) each scorer's correlation with the hidden quality,
    (d) paraphrase robustness. Definitions and results: docs/sim.md. The audit may read the
    simulator's noise-free quality; no training stage can.
    """
    with user_errors():
        config = AuditConfig(n_prompts=prompts, library_size=library_size)
    with err.status("auditing") as status:
        result = audit(seed, config, on_step=lambda step: status.update(f"auditing: {step}"))
    out.print(result.table())
    out.print(f"took {result.seconds:.1f} s")
    if not result.passed:
        raise typer.Exit(1)
