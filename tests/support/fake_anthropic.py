"""A scripted stand-in for the Anthropic Messages API, to drive the real Claude Code CLI offline.

Claude Code is pointed at it with ``ANTHROPIC_BASE_URL``. Every request is recorded (with
monotonic and wall-clock timestamps and the ``x-claude-code-agent-id`` header that sub-agent
requests carry) and answered by a *policy*: a function from the recorded request to a `Reply`.
Streaming requests get the same server-sent events the real API sends (``message_start``,
``content_block_start/delta/stop`` with ``text_delta`` or ``input_json_delta``,
``message_delta`` with the stop reason, ``message_stop``); non-streaming requests get the
whole message as JSON; ``/v1/messages/count_tokens`` gets a rough token count.

A policy that raises answers the request with a 400 ``invalid_request_error`` (Claude Code gives
up on those instead of retrying) and the exception is kept in `FakeAnthropic.policy_errors`, so
a test can report what its script did not expect.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

AGENT_ID_HEADER = "x-claude-code-agent-id"


def _new_tool_use_id() -> str:
    return f"toolu_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Text:
    """A text block of a scripted reply."""

    text: str


@dataclass(frozen=True)
class ToolUse:
    """A tool call of a scripted reply; Claude Code runs it and sends back a ``tool_result``."""

    name: str
    input: Mapping[str, Any]
    id: str = field(default_factory=_new_tool_use_id)


Block = Text | ToolUse


@dataclass(frozen=True)
class Reply:
    """One assistant message: its blocks and why it stopped."""

    content: tuple[Block, ...]
    stop_reason: str

    @property
    def tool_uses(self) -> list[ToolUse]:
        return [block for block in self.content if isinstance(block, ToolUse)]


def reply(*blocks: Block) -> Reply:
    """An assistant message that stops for ``tool_use`` if it calls a tool, else ends the turn."""
    stop = "tool_use" if any(isinstance(block, ToolUse) for block in blocks) else "end_turn"
    return Reply(content=tuple(blocks), stop_reason=stop)


@dataclass(frozen=True)
class ToolResult:
    """A ``tool_result`` block sent back by Claude Code, joined with the call it answers."""

    tool_use_id: str
    name: str | None
    input: Mapping[str, Any]
    text: str
    is_error: bool

    def json(self) -> Any:
        """The result text parsed as JSON.

        Raises:
            ValueError: the text is not JSON.
        """
        return json.loads(self.text)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            item.get("text", "")
            for item in content
            if isinstance(item, dict) and item.get("type") == "text"
        ]
        return "\n".join(parts)
    return ""


@dataclass
class ModelRequest:
    """One HTTP request Claude Code sent, as the fake saw it."""

    seq: int
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    started_mono: float
    started_wall: float
    finished_mono: float | None = None
    reply: Reply | None = None
    status: int | None = None

    @property
    def agent_id(self) -> str | None:
        """The sub-agent that made the request; None for the main session."""
        return self.headers.get(AGENT_ID_HEADER)

    @property
    def is_messages_call(self) -> bool:
        return self.method == "POST" and self.path == "/v1/messages"

    @property
    def streaming(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def system_text(self) -> str:
        return _text_of(self.body.get("system", ""))

    @property
    def messages(self) -> list[dict[str, Any]]:
        messages = self.body.get("messages", [])
        return messages if isinstance(messages, list) else []

    @property
    def tool_names(self) -> list[str]:
        return [tool.get("name", "") for tool in self.body.get("tools", []) or []]

    def tool_schema(self, name: str) -> dict[str, Any] | None:
        for tool in self.body.get("tools", []) or []:
            if tool.get("name") == name:
                return dict(tool)
        return None

    def first_user_text(self) -> str:
        """The text of the first user message (a sub-agent's prompt lives here)."""
        for message in self.messages:
            if message.get("role") == "user":
                return _text_of(message.get("content"))
        return ""

    def all_text(self) -> str:
        """Every text block of every message, for searching."""
        return "\n".join(_text_of(message.get("content")) for message in self.messages)

    def texts_since_last_turn(self) -> list[str]:
        """Text of the user and system messages after the last assistant message.

        Background sub-agent notifications (``<task-notification>``) arrive here: as a new user
        turn, or as a ``system`` message when they land while a turn is in progress.
        """
        last_assistant = max(
            (i for i, message in enumerate(self.messages) if message.get("role") == "assistant"),
            default=-1,
        )
        return [
            _text_of(message.get("content"))
            for message in self.messages[last_assistant + 1 :]
            if message.get("role") in ("user", "system")
        ]

    def tool_results(self) -> list[ToolResult]:
        """The ``tool_result`` blocks sent since the last assistant message, joined with calls.

        Claude Code may split them over several user messages (one per finished sub-agent)
        and may put a ``system`` message after them, so everything after the last assistant
        message counts.
        """
        calls: dict[str, dict[str, Any]] = {}
        last_assistant = -1
        for index, message in enumerate(self.messages):
            content = message.get("content")
            if message.get("role") != "assistant":
                continue
            last_assistant = index
            for block in content if isinstance(content, list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    calls[block["id"]] = block
        results: list[ToolResult] = []
        for message in self.messages[last_assistant + 1 :]:
            content = message.get("content")
            if message.get("role") != "user" or not isinstance(content, list):
                continue
            for block in content:
                if not isinstance(block, dict) or block.get("type") != "tool_result":
                    continue
                call = calls.get(block.get("tool_use_id", ""), {})
                results.append(
                    ToolResult(
                        tool_use_id=block.get("tool_use_id", ""),
                        name=call.get("name"),
                        input=call.get("input", {}),
                        text=_text_of(block.get("content")),
                        is_error=bool(block.get("is_error")),
                    )
                )
        return results


Policy = Callable[[ModelRequest], Reply]


def _estimate_tokens(body: Mapping[str, Any]) -> int:
    return max(1, len(json.dumps(body)) // 4)


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def stream_events(answer: Reply, *, model: str, input_tokens: int) -> Iterator[bytes]:
    """The server-sent events the Messages API streams for ``answer``."""
    message_id = f"msg_{uuid.uuid4().hex[:24]}"
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    start: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    yield _sse("message_start", {"type": "message_start", "message": start})
    yield _sse("ping", {"type": "ping"})
    output_tokens = 1
    for index, block in enumerate(answer.content):
        if isinstance(block, Text):
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": part} for part in _split(block.text, 2)]
            output_tokens += len(block.text) // 4
        else:
            opening = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            arguments = json.dumps(block.input)
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in ["", *_split(arguments, 2)]
            ]
            output_tokens += len(arguments) // 4
        yield _sse(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": opening},
        )
        for delta in deltas:
            yield _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
    yield _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": answer.stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )
    yield _sse("message_stop", {"type": "message_stop"})


def whole_message(answer: Reply, *, model: str, input_tokens: int) -> dict[str, Any]:
    """The non-streaming Messages API answer for ``answer``."""
    content: list[dict[str, Any]] = []
    for block in answer.content:
        if isinstance(block, Text):
            content.append({"type": "text", "text": block.text})
        else:
            content.append(
                {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}
            )
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": answer.stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 10},
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Ten or more sub-agents open their connections at the same moment.
    request_queue_size = 256

    def __init__(self, fake: FakeAnthropic) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet; requests are recorded instead."""

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_unparsed": raw.decode(errors="replace")}
        request = fake._begin(
            method=self.command,
            path=urlsplit(self.path).path,
            headers={key.lower(): value for key, value in self.headers.items()},
            body=body if isinstance(body, dict) else {"_body": body},
        )
        try:
            self._answer(fake, request)
        except (BrokenPipeError, ConnectionResetError):
            request.status = request.status or 499
        finally:
            request.finished_mono = time.monotonic()

    def _answer(self, fake: FakeAnthropic, request: ModelRequest) -> None:
        if request.method == "POST" and request.path == "/v1/messages/count_tokens":
            self._send_json(200, {"input_tokens": _estimate_tokens(request.body)}, request)
            return
        if not request.is_messages_call:
            error = {"type": "not_found_error", "message": f"no route {request.path}"}
            self._send_json(404, {"type": "error", "error": error}, request)
            return
        try:
            answer = fake.policy(request)
        except Exception as exc:  # noqa: BLE001 - any script failure must reach the test
            fake._policy_failed(request, exc)
            error = {"type": "invalid_request_error", "message": f"fake model policy: {exc!r}"}
            self._send_json(400, {"type": "error", "error": error}, request)
            return
        request.reply = answer
        model = str(request.body.get("model", "claude-fake"))
        tokens = _estimate_tokens(request.body)
        if not request.streaming:
            self._send_json(200, whole_message(answer, model=model, input_tokens=tokens), request)
            return
        request.status = 200
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", f"req_{request.seq}")
        # The stream ends when the connection closes; no chunked framing needed.
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        for event in stream_events(answer, model=model, input_tokens=tokens):
            self.wfile.write(event)
            self.wfile.flush()

    def _send_json(self, status: int, payload: Mapping[str, Any], request: ModelRequest) -> None:
        data = json.dumps(payload).encode()
        request.status = status
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", f"req_{request.seq}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class FakeAnthropic:
    """The scripted Messages API server; use as a context manager.

    Attributes:
        policy: decides each reply; may be replaced between runs.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._lock = threading.Lock()
        self._requests: list[ModelRequest] = []
        self._errors: list[tuple[ModelRequest, str]] = []
        self._seq = itertools.count(1)
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-anthropic", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def requests(self) -> list[ModelRequest]:
        """Every request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def message_requests(self) -> list[ModelRequest]:
        return [request for request in self.requests if request.is_messages_call]

    @property
    def policy_errors(self) -> list[tuple[ModelRequest, str]]:
        """Requests the policy raised on, with the formatted exception."""
        with self._lock:
            return list(self._errors)

    def by_agent(self) -> dict[str | None, list[ModelRequest]]:
        """Messages calls grouped by the agent that made them (None: the main session)."""
        groups: dict[str | None, list[ModelRequest]] = {}
        for request in self.message_requests:
            groups.setdefault(request.agent_id, []).append(request)
        return groups

    def describe(self, requests: Sequence[ModelRequest] | None = None) -> str:
        """A compact log of requests and replies, for assertion messages."""
        lines = []
        chosen = self.requests if requests is None else requests
        origin = chosen[0].started_mono if chosen else 0.0
        for request in chosen:
            answer = request.reply
            what = (
                ", ".join(
                    f"tool_use {block.name}" if isinstance(block, ToolUse) else "text"
                    for block in answer.content
                )
                if answer
                else "-"
            )
            lines.append(
                f"#{request.seq} +{request.started_mono - origin:.2f}s {request.method} "
                f"{request.path} agent={request.agent_id} status={request.status} -> {what}"
            )
        return "\n".join(lines)

    def _begin(
        self, *, method: str, path: str, headers: dict[str, str], body: dict[str, Any]
    ) -> ModelRequest:
        request = ModelRequest(
            seq=next(self._seq),
            method=method,
            path=path,
            headers=headers,
            body=body,
            started_mono=time.monotonic(),
            started_wall=time.time(),
        )
        with self._lock:
            self._requests.append(request)
        return request

    def _policy_failed(self, request: ModelRequest, exc: Exception) -> None:
        formatted = "".join(traceback.format_exception(exc))
        with self._lock:
            self._errors.append((request, formatted))
