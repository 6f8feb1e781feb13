"""A client for one ComfyUI server: queue a prompt, follow it, read its record, fetch images.

ComfyUI's API (docs: shared/docs/comfyui-primer.md) is a few HTTP routes plus a websocket.
The websocket (``/ws?clientId=``) says promptly when a prompt finishes, but it can drop and
its messages are not kept, so this client treats ``/history/{id}`` as the record: it waits on
the websocket between reads of ``/history`` and falls back to polling when the websocket is
missing or breaks. Nothing is decided from a websocket message alone.

Failures are sorted for the caller, because a render farm must retry some and never others:
- `TransientError`: might work later or elsewhere (refused or dropped connections, timeouts,
  5xx answers, malformed JSON, an interrupted or out-of-memory run);
- `PromptRejectedError`: ComfyUI's validation refused the prompt; its `node_errors` name each
  node and input (the 400 ``node_errors`` shape, and the early-2024 server's answer to an
  unknown class_type, a bare 500, recognised by checking the classes against /object_info);
- `RenderError`: the prompt ran and failed (a missing model file, a node's exception).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import websocket

#: Exception types of a failed run that say "try again later", not "this prompt is broken".
_TRANSIENT_EXCEPTIONS = ("OutOfMemory", "out of memory", "InterruptProcessingException")
_NODE_ID_DETAILS = re.compile(r"Node ID '#?([^']+)'")


class ComfyUIError(Exception):
    """Anything that went wrong talking to a ComfyUI server."""


class TransientError(ComfyUIError):
    """May succeed later or on another server: connection faults, timeouts, 5xx, bad JSON."""


class RenderError(ComfyUIError):
    """The prompt was accepted, ran, and failed on the server (it would fail again)."""


@dataclass(frozen=True)
class NodeError:
    """One reason ComfyUI's validation gave for refusing a prompt, at one node and input."""

    node_id: str | None  # None for a graph-wide error such as prompt_no_outputs
    class_type: str | None
    type: str  # ComfyUI's error type: value_not_in_list, required_input_missing, ...
    message: str
    details: str = ""
    input_name: str | None = None
    received_value: str | None = None  # JSON text of what the server received

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type})" if self.node_id else "prompt"
        if self.input_name:
            where += f" input {self.input_name!r}"
        details = f" ({self.details})" if self.details else ""
        return f"{where}: {self.type}: {self.message}{details}"


class PromptRejectedError(ComfyUIError):
    """ComfyUI refused the prompt before queueing it; `node_errors` say where and why."""

    def __init__(self, node_errors: Sequence[NodeError]) -> None:
        self.node_errors = tuple(node_errors)
        super().__init__("; ".join(str(error) for error in self.node_errors))


@dataclass(frozen=True)
class ImageRef:
    """Where ``/view`` finds an output image (as listed in a history record's outputs)."""

    filename: str
    subfolder: str = ""
    type: str = "output"


@dataclass(frozen=True)
class HistoryRecord:
    """A finished prompt as ``/history/{id}`` records it."""

    prompt_id: str
    status: str  # "success" or "error"
    images: tuple[ImageRef, ...]  # every image of every output node, in node order
    messages: tuple[tuple[str, Any], ...]  # the status messages, e.g. ("execution_error", {...})


def parse_node_errors(body: Any) -> list[NodeError]:
    """The node errors of a 400 answer to ``POST /prompt``, one per node and reason.

    Newer servers report an unknown class_type with an empty ``node_errors`` and the node in
    ``error.details`` (``Node ID '#5'``); that is recognised too. A graph-wide error (no
    outputs) becomes one error without a node.
    """
    if not isinstance(body, Mapping):
        return [NodeError(None, None, "invalid_prompt", f"unexpected answer {body!r:.200}")]
    found: list[NodeError] = []
    node_errors = body.get("node_errors")
    for node_id, entry in (node_errors if isinstance(node_errors, Mapping) else {}).items():
        entry = entry if isinstance(entry, Mapping) else {}
        class_type = entry.get("class_type")
        for reason in entry.get("errors") or [{}]:
            found.append(_node_error(str(node_id), class_type, reason))
    if found:
        return found
    error = body.get("error")
    if not isinstance(error, Mapping):
        return [NodeError(None, None, "invalid_prompt", str(error or "no reason given"))]
    match = _NODE_ID_DETAILS.search(str(error.get("details", "")))
    return [_node_error(match.group(1) if match else None, None, error)]


def _node_error(node_id: str | None, class_type: Any, reason: Any) -> NodeError:
    reason = reason if isinstance(reason, Mapping) else {}
    extra = reason.get("extra_info") if isinstance(reason.get("extra_info"), Mapping) else {}
    received = extra.get("received_value") if "received_value" in extra else None
    return NodeError(
        node_id=node_id,
        class_type=class_type if isinstance(class_type, str) else None,
        type=str(reason.get("type", "unknown")),
        message=str(reason.get("message", "")),
        details=str(reason.get("details", "")),
        input_name=extra.get("input_name") if isinstance(extra.get("input_name"), str) else None,
        received_value=None if received is None else json.dumps(received, default=str)[:200],
    )


def unknown_class_errors(
    workflow: Mapping[str, Any], object_info: Mapping[str, Any]
) -> list[NodeError]:
    """An error per node whose class_type the server does not have (newer servers' wording)."""
    return [
        NodeError(
            str(node_id),
            body.get("class_type"),
            "invalid_prompt",
            f"Cannot execute because node {body.get('class_type')} does not exist.",
            f"Node ID '#{node_id}'",
        )
        for node_id, body in workflow.items()
        if isinstance(body, Mapping) and body.get("class_type") not in object_info
    ]


class ComfyUIClient:
    """HTTP + websocket client of one server (``http://host:8188``). Not thread-safe: use one
    per thread. `timeout` bounds each HTTP request and websocket read, in seconds."""

    def __init__(self, url: str, *, timeout: float = 30.0, poll_seconds: float = 0.5) -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"a ComfyUI server URL looks like http://host:8188, not {url!r}")
        self.url = url.rstrip("/")
        self.timeout, self.poll_seconds = timeout, poll_seconds
        self.client_id = uuid.uuid4().hex
        self._session = requests.Session()
        self._object_info: dict[str, Any] | None = None

    def close(self) -> None:
        self._session.close()

    # --- plain routes -------------------------------------------------------------------

    def object_info(self) -> dict[str, Any]:
        """``GET /object_info``: node schemas and installed model files (kept after one read)."""
        if self._object_info is None:
            data = self._json("GET", "/object_info")
            if not isinstance(data, dict) or not data:
                raise TransientError(f"{self.url}/object_info: not a JSON object of node schemas")
            self._object_info = data
        return self._object_info

    def system_stats(self) -> dict[str, Any]:
        """``GET /system_stats``: Python version, devices and their memory (a health check)."""
        return _as_object(self._json("GET", "/system_stats"), f"{self.url}/system_stats")

    def queue(self) -> dict[str, Any]:
        """``GET /queue``: ``queue_running`` and ``queue_pending``."""
        return _as_object(self._json("GET", "/queue"), f"{self.url}/queue")

    def history(self, prompt_id: str) -> HistoryRecord | None:
        """The record of a finished prompt, or None while it is queued or running."""
        data = _as_object(self._json("GET", f"/history/{prompt_id}"), f"{self.url}/history")
        entry = data.get(prompt_id)
        if not isinstance(entry, Mapping):
            return None
        raw_status = entry.get("status")
        status: Mapping[str, Any] = raw_status if isinstance(raw_status, Mapping) else {}
        images = [
            ImageRef(
                str(image["filename"]),
                str(image.get("subfolder", "")),
                str(image.get("type", "output")),
            )
            for output in (entry.get("outputs") or {}).values()
            if isinstance(output, Mapping)
            for image in output.get("images") or []
            if isinstance(image, Mapping) and "filename" in image
        ]
        messages = tuple(
            (str(m[0]), m[1])
            for m in status.get("messages") or []
            if isinstance(m, list | tuple) and len(m) == 2
        )
        return HistoryRecord(
            prompt_id, str(status.get("status_str", "success")), tuple(images), messages
        )

    def view(self, image: ImageRef) -> bytes:
        """``GET /view``: the bytes of one output image."""
        query = {"filename": image.filename, "subfolder": image.subfolder, "type": image.type}
        return self._request("GET", "/view", params=query).content

    # --- a prompt's life ----------------------------------------------------------------

    def queue_prompt(
        self, workflow: Mapping[str, Any], extra_pnginfo: Mapping[str, Any] | None = None
    ) -> str:
        """``POST /prompt``; the prompt id. `extra_pnginfo` goes into SaveImage's PNG chunks
        (ComfyUI writes ``workflow`` from it). Raises PromptRejectedError on validation errors.
        """
        body: dict[str, Any] = {"prompt": workflow, "client_id": self.client_id}
        if extra_pnginfo:
            body["extra_data"] = {"extra_pnginfo": dict(extra_pnginfo)}
        response = self._request("POST", "/prompt", json=body, accept={200, 400, 500})
        if response.status_code == 500:
            # The early-2024 server fails on an unknown class_type with a bare server error;
            # anything else that answers 500 may well work on the next try.
            unknown = unknown_class_errors(workflow, self.object_info())
            if unknown:
                raise PromptRejectedError(unknown)
            raise TransientError(f"{self.url}/prompt answered 500: {response.text[:200]!r}")
        data = _decode(response, f"{self.url}/prompt")
        if response.status_code == 400:
            raise PromptRejectedError(parse_node_errors(data))
        if not isinstance(data, Mapping) or not isinstance(data.get("prompt_id"), str):
            raise TransientError(f"{self.url}/prompt: no prompt_id in {data!r:.200}")
        prompt_id: str = data["prompt_id"]
        return prompt_id

    def wait(self, prompt_id: str, timeout: float) -> HistoryRecord:
        """Wait until `prompt_id` has finished and return its record (`RenderError` if it
        failed). Waits on the websocket between reads of /history; polls without one."""
        deadline = time.monotonic() + timeout
        socket = self._connect_websocket()
        try:
            while True:
                record = self.history(prompt_id)
                if record is not None:
                    return _checked(record)
                if time.monotonic() > deadline:
                    raise TransientError(f"{self.url}: prompt {prompt_id} not done in {timeout:g}s")
                socket = self._await_event(socket, prompt_id)
        finally:
            if socket is not None:
                socket.close()

    def render(
        self,
        workflow: Mapping[str, Any],
        timeout: float,
        extra_pnginfo: Mapping[str, Any] | None = None,
    ) -> list[bytes]:
        """Queue `workflow`, wait for it, and return the bytes of every output image."""
        prompt_id = self.queue_prompt(workflow, extra_pnginfo)
        record = self.wait(prompt_id, timeout)
        if not record.images:
            raise RenderError(f"{self.url}: prompt {prompt_id} finished without images")
        return [self.view(image) for image in record.images]

    # --- plumbing -----------------------------------------------------------------------

    def _connect_websocket(self) -> websocket.WebSocket | None:
        """A websocket for this client id, or None if the server has none (then: polling)."""
        base = "wss" + self.url[5:] if self.url.startswith("https") else "ws" + self.url[4:]
        try:
            return websocket.create_connection(
                f"{base}/ws?{urlencode({'clientId': self.client_id})}", timeout=self.poll_seconds
            )
        except (OSError, websocket.WebSocketException):
            return None

    def _await_event(
        self, socket: websocket.WebSocket | None, prompt_id: str
    ) -> websocket.WebSocket | None:
        """Block until a websocket message about `prompt_id` (or for `poll_seconds`); the
        socket to keep using, None once it broke. The caller re-reads /history either way."""
        if socket is None:
            time.sleep(self.poll_seconds)
            return None
        try:
            while True:
                message = socket.recv()
                if isinstance(message, bytes):  # a preview image
                    continue
                event = json.loads(message)
                data = event.get("data") if isinstance(event, dict) else None
                if isinstance(data, dict) and data.get("prompt_id") == prompt_id and _is_end(event):
                    return socket
        except websocket.WebSocketTimeoutException:
            return socket
        except (OSError, ValueError, websocket.WebSocketException):
            socket.close()
            return None

    def _request(
        self, method: str, path: str, *, accept: set[int] | None = None, **kwargs: Any
    ) -> requests.Response:
        try:
            response = self._session.request(
                method, self.url + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as error:
            raise TransientError(f"{self.url}{path}: {type(error).__name__}: {error}") from None
        if response.status_code in (accept or {200}):
            return response
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(f"{self.url}{path} answered {response.status_code}")
        raise ComfyUIError(
            f"{self.url}{path} answered {response.status_code}: {response.text[:200]!r}"
        )

    def _json(self, method: str, path: str) -> Any:
        return _decode(self._request(method, path), self.url + path)


def _is_end(event: Mapping[str, Any]) -> bool:
    """A websocket event saying the prompt is over: ``executing`` with no node, or an error."""
    kind, data = event.get("type"), event.get("data") or {}
    if kind == "executing":
        return data.get("node") is None
    return kind in ("execution_error", "execution_interrupted")


def _decode(response: requests.Response, where: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise TransientError(f"{where}: malformed JSON {response.text[:100]!r}") from None


def _as_object(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise TransientError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def _checked(record: HistoryRecord) -> HistoryRecord:
    """The record of a successful run; RenderError (or TransientError) for a failed one."""
    if record.status != "error":
        return record
    for event, data in record.messages:
        if event in ("execution_error", "execution_interrupted") and isinstance(data, Mapping):
            what = f"{data.get('exception_type', event)}: {data.get('exception_message', '')}"
            node = f"node {data.get('node_id')} ({data.get('node_type')})"
            text = " ".join(f"{node}: {what}".split())[:300]
            if event == "execution_interrupted" or any(t in what for t in _TRANSIENT_EXCEPTIONS):
                raise TransientError(text)
            raise RenderError(text)
    raise RenderError(f"prompt {record.prompt_id} failed without an error message")
