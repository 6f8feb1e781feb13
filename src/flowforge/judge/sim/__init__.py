"""The embedded simulated world: a stand-in for "render with ComfyUI, score with preference
models", so every stage runs on a CPU (``--judge sim`` / ``sim:SEED``).

Modules: `embed` (prompt meaning: MiniLM embeddings, cached), `traits` (what a prompt asks
for), `pipeline` (what a workflow does), `priors` (the world's structure), `world` (one seed's
hidden parameters), `terms` (the hidden quality), `scorers` (noisy views of it, one held out),
`judge` (the Judge), `audit` (measures that the world is a hard, honest problem).
See docs/sim.md.
"""

from .judge import SimJudge, make_sim_judge

__all__ = ["SimJudge", "make_sim_judge"]
