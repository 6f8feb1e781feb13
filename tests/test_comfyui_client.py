"""The ComfyUI client, pool and judge against a real HTTP server on loopback (fake renders).

`fake_comfyui.FakeServer` runs the test server in a subprocess: real sockets, real
websocket, faults on demand, and a process a test can kill.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_comfyui import FakeServer

from flowforge.judge import JudgeItem
from flowforge.judge.comfyui import (
    ComfyUIClient,
    PoolConfig,
    PromptRejectedError,
    ServerPool,
    make_comfyui_judge,
    pull_catalog,
    with_seed,
)
from flowforge.judge.comfyui.png import text_chunks
from flowforge.workflow.api import from_api
from flowforge.workflow.canonical import canonicalize
from flowforge.workflow.schema import default_catalog, load_catalog
from flowforge.workflow.ui import from_ui_strict

SAMPLE = Path(__file__).parent / "data" / "library_sample"
FAST = {"request_timeout": "2", "poll_seconds": "0.05", "backoff_seconds": "0.05",
        "down_seconds": "0.3", "render_timeout": "10"}  # fmt: skip


def sample_workflow(index: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sorted(SAMPLE.glob("*.json"))[index].read_text())
    return data


def sampler_id(workflow: dict[str, Any]) -> str:
    return next(
        k for k, v in workflow.items() if v["class_type"] in ("KSampler", "KSamplerAdvanced")
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeServer]:
    fake = FakeServer(tmp_path / "server")
    yield fake
    fake.kill()


def test_rejected_prompt_reports_every_node_and_input(server: FakeServer) -> None:
    workflow = sample_workflow()
    node = sampler_id(workflow)
    workflow[node]["inputs"] |= {"steps": 100_000, "sampler_name": "no_such_sampler"}
    client = ComfyUIClient(server.url, timeout=5)
    with pytest.raises(PromptRejectedError) as caught:
        client.queue_prompt(workflow)
    found = {(e.node_id, e.class_type, e.input_name, e.type) for e in caught.value.node_errors}
    assert found == {
        (node, "KSampler", "steps", "value_bigger_than_max"),
        (node, "KSampler", "sampler_name", "value_not_in_list"),
    }
    assert f"node {node} (KSampler) input 'steps': value_bigger_than_max" in str(caught.value)


@pytest.mark.parametrize("flags", [(), ("--old-unknown-class",)])
def test_unknown_class_is_a_node_error_in_both_server_shapes(tmp_path: Path, flags: Any) -> None:
    """Newer servers answer 400 invalid_prompt; the early-2024 one a bare 500."""
    fake = FakeServer(tmp_path, *flags)
    try:
        workflow = sample_workflow()
        node = sampler_id(workflow)
        workflow[node]["class_type"] = "NoSuchSampler"
        with pytest.raises(PromptRejectedError) as caught:
            ComfyUIClient(fake.url, timeout=5).queue_prompt(workflow)
        [error] = caught.value.node_errors
        assert (error.node_id, error.type) == (node, "invalid_prompt")
        assert "NoSuchSampler does not exist" in error.message
    finally:
        fake.kill()


def test_plain_routes_and_catalog_pull(server: FakeServer, tmp_path: Path) -> None:
    client = ComfyUIClient(server.url, timeout=5)
    assert client.system_stats()["devices"][0]["type"] == "cpu"
    assert client.queue() == {"queue_running": [], "queue_pending": []}
    count = pull_catalog(server.url, tmp_path / "object_info.json")
    assert count == len(default_catalog())
    assert set(load_catalog(tmp_path / "object_info.json").nodes) == set(default_catalog().nodes)


@pytest.mark.parametrize("flags", [(), ("--no-ws",)])
def test_render_follows_the_prompt_to_its_history_record(tmp_path: Path, flags: Any) -> None:
    """With the websocket, and without it (polling /history, the record, alone)."""
    fake = FakeServer(tmp_path, *flags, "--render-seconds", "0.3")
    try:
        client = ComfyUIClient(fake.url, timeout=5, poll_seconds=0.1)
        started = time.monotonic()
        [png] = client.render(sample_workflow(), timeout=10)
        assert time.monotonic() - started >= 0.3
        assert json.loads(text_chunks(png)["prompt"]) == sample_workflow()
    finally:
        fake.kill()


@pytest.mark.parametrize(
    ("route", "kind"),
    [("/prompt", "drop"), ("/prompt", "500"), ("/history", "malformed"), ("/view", "500"),
     ("/history", "hang"), ("/render", "oom")],
)  # fmt: skip
def test_transient_faults_are_retried_after_a_backoff(
    server: FakeServer, route: str, kind: str
) -> None:
    server.fault(route, kind, count=1)
    config = PoolConfig(request_timeout=1, poll_seconds=0.05, backoff_seconds=0.2, down_seconds=0)
    pool = ServerPool([server.url], config)
    started = time.monotonic()
    [outcome] = pool.map(lambda client, w: client.render(w, 10), [sample_workflow()])
    assert outcome.error is None and outcome.attempts == 2
    assert time.monotonic() - started >= 0.2  # the backoff before the second try
    pool.close()


def test_failures_that_would_repeat_are_not_retried(server: FakeServer) -> None:
    server.fault("/render", "error")
    bad = sample_workflow()
    bad[sampler_id(bad)]["inputs"]["cfg"] = -5.0
    pool = ServerPool([server.url], PoolConfig(poll_seconds=0.05))
    render_error, rejected = pool.map(lambda c, w: c.render(w, 10), [sample_workflow(), bad])
    assert render_error.error is not None and render_error.error.startswith("render: ")
    assert "FileNotFoundError" in render_error.error and render_error.attempts == 1
    assert rejected.error is not None and rejected.error.startswith("invalid: node ")
    assert "input 'cfg': value_smaller_than_min" in rejected.error
    pool.close()


def test_a_dead_server_is_benched_and_used_again_when_back(tmp_path: Path) -> None:
    a, b = FakeServer(tmp_path / "a"), FakeServer(tmp_path / "b")
    try:
        config = PoolConfig(request_timeout=1, poll_seconds=0.05, backoff_seconds=0.01,
                            down_seconds=1.0)  # fmt: skip
        pool = ServerPool([a.url, b.url], config)
        b.kill()
        outcomes = pool.map(lambda c, w: c.render(w, 10), [sample_workflow(i) for i in range(4)])
        assert all(o.error is None and o.server == a.url for o in outcomes)
        assert pool.up() == [a.url]  # b failed once and sits out its bench
        b.restart()
        deadline = time.monotonic() + 5  # benched 1 s per failure, doubling: 1 or 2 s here
        while pool.up() != [a.url, b.url] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pool.up() == [a.url, b.url]
        outcomes = pool.map(lambda c, w: c.render(w, 10), [sample_workflow(i) for i in range(8)])
        assert all(o.error is None for o in outcomes)
        assert {o.server for o in outcomes} == {a.url, b.url}
        pool.close()
    finally:
        a.kill()
        b.kill()


def test_every_server_down_gives_transient_errors_not_exceptions(tmp_path: Path) -> None:
    fake = FakeServer(tmp_path)
    fake.kill()
    pool = ServerPool([fake.url], PoolConfig(request_timeout=1, backoff_seconds=0,
                                             down_seconds=5, render_timeout=1))  # fmt: skip
    outcomes = pool.map(lambda c, w: c.render(w, 10), [sample_workflow()] * 2)
    assert all(o.error is not None and o.error.startswith("transient: ") for o in outcomes)
    pool.close()


def test_judge_pngs_carry_the_judged_workflow_and_its_ui_graph(
    server: FakeServer, tmp_path: Path
) -> None:
    judge = make_comfyui_judge(servers=server.url, image_dir=str(tmp_path / "images"), **FAST)
    workflow = sample_workflow(3)
    [result] = judge.score([JudgeItem("a lighthouse at dusk", workflow, seed=1234)])
    assert result.error is None and result.scores == {}  # no scorers: render only
    [png] = sorted((tmp_path / "images").glob("*.png"))
    chunks = text_chunks(png)
    sent = with_seed(workflow, 1234)
    assert json.loads(chunks["prompt"]) == sent
    seeds = [v for body in sent.values() for k, v in body["inputs"].items()
             if k in ("seed", "noise_seed")]  # fmt: skip
    assert seeds and set(seeds) == {1234}
    ui = from_ui_strict(json.loads(chunks["workflow"]), default_catalog())
    assert canonicalize(ui) == canonicalize(from_api(sent))  # the editor gets the same graph
    assert json.loads(chunks["flowforge"]) == {"prompt": "a lighthouse at dusk", "seed": 1234}
    judge.close()
