"""A small ComfyUI-API server for the tests: real HTTP and websocket on loopback, fake renders.

It speaks the subset flowforge uses (shared/docs/comfyui-primer.md): ``POST /prompt``
(validated against a catalog with flowforge's validator, answering ComfyUI-shaped
``node_errors``), ``/history``, ``/view``, ``/object_info``, ``/system_stats``, ``/queue``
and ``/ws?clientId=`` with ComfyUI's event messages. A "render" is a small PNG of one colour
derived from the prompt's JSON, written with SaveImage's text chunks, so a test can
recompute what a render looks like.

Faults for the client's sake: ``POST /_faults`` ``{"route": "/history", "kind": K,
"count": N}`` makes the next N requests to that route (prefix) fail with K = ``drop``
(connection closed without an answer), ``500``, ``hang`` (no answer for a long time),
``malformed`` (200 with broken JSON), or for route ``/render`` K = ``error`` (the run fails
with an execution_error) / ``oom``. ``--die-after N`` kills the process (``os._exit``) when
its N-th prompt is accepted and before it is rendered: a server dying mid-batch.
``--old-unknown-class`` answers an unknown class_type with a bare 500, as the early-2024
ComfyUI does; ``--no-ws`` leaves the websocket route out.

Run: ``python tests/fake_comfyui.py --port 0`` prints ``PORT <n>`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import os
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image, PngImagePlugin

from flowforge.workflow.api import WorkflowFormatError, from_api
from flowforge.workflow.graph import GraphError
from flowforge.workflow.schema import catalog_from_object_info, default_catalog
from flowforge.workflow.validate import validate

SIZE = 32


def colour_of(workflow: dict[str, Any]) -> tuple[int, int, int]:
    """The colour a render of `workflow` has: three bytes of a hash of its JSON."""
    digest = hashlib.sha256(json.dumps(workflow, sort_keys=True).encode()).digest()
    return (digest[0], digest[1], digest[2])


def node_errors(workflow: Any, catalog: Any, old_unknown: bool) -> tuple[int, dict[str, Any]]:
    """(status, body) ComfyUI would answer for an invalid prompt; (200, {}) when valid."""
    try:
        graph = from_api(workflow)
    except (WorkflowFormatError, GraphError) as error:
        return 400, _error("invalid_prompt", str(error), "")
    report = validate(graph, catalog)
    unknown = [p for p in report.errors if p.kind == "unknown_class_type"]
    if unknown and old_unknown:
        return 500, {}
    if unknown:
        p = unknown[0]
        return 400, _error(
            "invalid_prompt",
            f"Cannot execute because node {p.class_type} does not exist.",
            f"Node ID '#{p.node_id}'",
        )
    per_node: dict[str, Any] = {}
    graph_wide = []
    for problem in report.errors:
        if problem.node_id is None:
            graph_wide.append(problem)
            continue
        entry = per_node.setdefault(
            problem.node_id,
            {"errors": [], "dependent_outputs": [], "class_type": problem.class_type},
        )
        extra: dict[str, Any] = {"input_name": problem.input} if problem.input else {}
        if problem.found is not None:
            extra["received_value"] = problem.found
        entry["errors"].append(
            {
                "type": problem.kind,
                "message": problem.message,
                "details": problem.expected or "",
                "extra_info": extra,
            }
        )
    if graph_wide and not per_node:
        p = graph_wide[0]
        return 400, _error(p.kind, p.message, "")
    if per_node:
        body = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "")
        body["node_errors"] = per_node
        return 400, body
    return 200, {}


def _error(kind: str, message: str, details: str) -> dict[str, Any]:
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": {}},
        "node_errors": {},
    }


class FakeComfyUI:
    """The server's state: queue, history, sockets, faults. See module docstring."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if args.object_info:
            self.object_info = json.loads(Path(args.object_info).read_text())
            self.catalog = catalog_from_object_info(self.object_info)
        else:
            self.catalog = default_catalog()
            from flowforge.judge.sim.judge import default_object_info

            self.object_info = dict(default_object_info())
        self.history: dict[str, Any] = {}
        self.pending: list[str] = []
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.accepted = 0
        self.rendered = 0
        self.lock = asyncio.Lock()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.inject_faults], client_max_size=64 * 2**20)
        app.router.add_post("/prompt", self.post_prompt)
        app.router.add_get("/history/{prompt_id}", self.get_history)
        app.router.add_get("/history", self.get_all_history)
        app.router.add_get("/view", self.view)
        app.router.add_get("/object_info", self.get_object_info)
        app.router.add_get("/system_stats", self.system_stats)
        app.router.add_get("/queue", self.get_queue)
        app.router.add_post("/_faults", self.set_faults)
        app.router.add_get("/_stats", self.stats)
        if not self.args.no_ws:
            app.router.add_get("/ws", self.websocket)
        return app

    @web.middleware
    async def inject_faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        for route, kinds in self.faults.items():
            if route != "/render" and request.path.startswith(route) and kinds:
                kind = kinds.pop(0)
                if kind == "drop":
                    assert request.transport is not None
                    request.transport.close()
                    raise ConnectionResetError("fault: dropped")
                if kind == "500":
                    return web.Response(status=500, text="500 Internal Server Error")
                if kind == "hang":
                    await asyncio.sleep(3600)
                if kind == "malformed":
                    return web.Response(text='{"prompt_id": ', content_type="application/json")
        return await handler(request)  # type: ignore[no-any-return]

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.faults[body["route"]] += [body["kind"]] * int(body.get("count", 1))
        return web.json_response({})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"accepted": self.accepted, "rendered": self.rendered})

    async def post_prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        workflow = body.get("prompt")
        status, answer = node_errors(workflow, self.catalog, self.args.old_unknown_class)
        if status == 500:
            raise KeyError("class_type")  # what the early-2024 server does: a bare 500
        if status != 200:
            return web.json_response(answer, status=status)
        prompt_id = str(uuid.uuid4())
        self.accepted += 1
        if self.args.die_after and self.accepted >= self.args.die_after:
            os._exit(1)  # dies with the prompt accepted and not rendered
        extra = (body.get("extra_data") or {}).get("extra_pnginfo") or {}
        self.pending.append(prompt_id)
        asyncio.get_running_loop().create_task(
            self.render(prompt_id, workflow, extra, body.get("client_id"))
        )
        return web.json_response(
            {"prompt_id": prompt_id, "number": self.accepted, "node_errors": {}}
        )

    async def send(self, client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        socket = self.sockets.get(client_id or "")
        if socket is not None and not socket.closed:
            await socket.send_json({"type": kind, "data": data})

    async def render(
        self, prompt_id: str, workflow: dict[str, Any], extra: dict[str, Any], client: str | None
    ) -> None:
        async with self.lock:  # one prompt at a time, as ComfyUI
            await self.send(client, "execution_start", {"prompt_id": prompt_id})
            await asyncio.sleep(self.args.render_seconds)
            faults = self.faults.get("/render") or []
            fault = faults.pop(0) if faults else None
            messages: list[Any] = [["execution_start", {"prompt_id": prompt_id}]]
            outputs: dict[str, Any] = {}
            if fault is None:
                outputs = self.save_images(prompt_id, workflow, extra)
                for node in outputs:
                    await self.send(client, "executed", {"node": node, "prompt_id": prompt_id})
                status = "success"
            else:
                error = {
                    "prompt_id": prompt_id,
                    "node_id": "1",
                    "node_type": "KSampler",
                    "exception_type": "torch.cuda.OutOfMemoryError"
                    if fault == "oom"
                    else "FileNotFoundError",
                    "exception_message": f"fault {fault}",
                }
                messages.append(["execution_error", error])
                await self.send(client, "execution_error", error)
                status = "error"
            self.pending.remove(prompt_id)
            self.history[prompt_id] = {
                "prompt": [0, prompt_id, workflow, {}, list(outputs)],
                "outputs": outputs,
                "status": {
                    "status_str": status,
                    "completed": status == "success",
                    "messages": messages,
                },
            }
            self.rendered += 1
            await self.send(client, "executing", {"node": None, "prompt_id": prompt_id})

    def save_images(
        self, prompt_id: str, workflow: dict[str, Any], extra: dict[str, Any]
    ) -> dict[str, Any]:
        outputs = {}
        for node_id, body in workflow.items():
            if body["class_type"] != "SaveImage":
                continue
            info = PngImagePlugin.PngInfo()
            info.add_text("prompt", json.dumps(workflow))
            for key, value in extra.items():
                info.add_text(key, json.dumps(value))
            name = f"{prompt_id}_{node_id}.png"
            Image.new("RGB", (SIZE, SIZE), colour_of(workflow)).save(self.out / name, pnginfo=info)
            outputs[node_id] = {"images": [{"filename": name, "subfolder": "", "type": "output"}]}
        return outputs

    async def get_history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry else {})

    async def get_all_history(self, request: web.Request) -> web.Response:
        return web.json_response(self.history)

    async def view(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("filename", "")
        if ".." in name or name.startswith("/") or not (self.out / name).is_file():
            return web.Response(status=404)
        return web.FileResponse(self.out / name)

    async def get_object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.object_info)

    async def system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "system": {"os": "posix", "python_version": sys.version},
                "devices": [{"name": "cpu", "type": "cpu"}],
            }
        )

    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"queue_running": self.pending[:1], "queue_pending": self.pending[1:]}
        )

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        client_id = request.query.get("clientId", uuid.uuid4().hex)
        self.sockets[client_id] = socket
        await socket.send_json(
            {
                "type": "status",
                "data": {
                    "status": {"exec_info": {"queue_remaining": len(self.pending)}},
                    "sid": client_id,
                },
            }
        )
        async for message in socket:
            if message.type == WSMsgType.ERROR:
                break
        self.sockets.pop(client_id, None)
        return socket


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeServer:
    """A fake server in a subprocess (so a test can SIGKILL it): its URL and process."""

    def __init__(self, out_dir: Path, *flags: str, port: int = 0) -> None:
        import subprocess

        self.out_dir, self.flags = out_dir, flags
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--port", str(port), "--out-dir", str(out_dir), *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("PORT "):
            self.process.kill()
            raise RuntimeError(f"fake ComfyUI did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def fault(self, route: str, kind: str, count: int = 1) -> None:
        import requests

        requests.post(
            f"{self.url}/_faults", json={"route": route, "kind": kind, "count": count}, timeout=5
        ).raise_for_status()

    def stats(self) -> dict[str, int]:
        import requests

        data: dict[str, int] = requests.get(f"{self.url}/_stats", timeout=5).json()
        return data

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        """Start again on the same port (after `kill`)."""
        self.__init__(self.out_dir, *self.flags, port=self.port)  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out-dir", default="fake_comfyui_out")
    parser.add_argument("--object-info", default="")
    parser.add_argument("--render-seconds", type=float, default=0.01)
    parser.add_argument("--die-after", type=int, default=0)
    parser.add_argument("--old-unknown-class", action="store_true")
    parser.add_argument("--no-ws", action="store_true")
    args = parser.parse_args()

    async def serve() -> None:
        runner = web.AppRunner(FakeComfyUI(args).app(), handle_signals=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", args.port, reuse_address=True)
        await site.start()
        port = runner.addresses[0][1]
        print(f"PORT {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
