"""`--executor ray`: one Ray actor per ComfyUI server, the driver alone writes the journal.

A local Ray instance (2 CPUs) and two fake servers, one of which dies mid-run: the run
finishes the plan with every item scored once, the same scores as the threaded executor.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_comfyui import FakeServer
from test_comfyui_collect import FAST, PROMPTS, assert_same_scores, run
from tiny_scorers import write_scorers_file

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_collection_survives_a_dying_server_and_matches_local_judging(
    local_ray: None, tmp_path: Path
) -> None:
    scorers = write_scorers_file(tmp_path / "scorers")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    steady = FakeServer(tmp_path / "steady")
    dying = FakeServer(tmp_path / "dying", "--die-after", "3")
    try:
        options = {**FAST, "servers": f"{dying.url},{steady.url}", "scorers_file": str(scorers),
                   "executor": "ray", "cpus_per_actor": "0.5"}  # fmt: skip
        on_ray = run(tmp_path / "ray", prompts, options)
        assert dying.process.wait(timeout=5) == 1
        local = {**options, "executor": "local", "servers": steady.url}
        assert_same_scores(run(tmp_path / "local", prompts, local), on_ray)
    finally:
        steady.kill()
        dying.kill()
