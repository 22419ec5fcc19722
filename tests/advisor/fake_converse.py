"""A local Bedrock Converse server for tests: real HTTP on 127.0.0.1, scripted replies.

moto does not implement `converse`, so tests point a real boto3 client at this server
(`endpoint_url=` or AWS_ENDPOINT_URL_BEDROCK_RUNTIME, dummy credentials): request
signing, botocore's retries, timeouts and error parsing all run for real. Replies are
queued in order (a tool call, text, an error status with `x-amzn-ErrorType`, each
optionally delayed) and every request is recorded. When the script runs out the
server answers 400 saying so, which no client retries, so a test that sends more
requests than it scripted fails loudly instead of hanging.

`ScriptedJSONServer` is the protocol-free core; `fake_openai.py` builds on it too.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass(frozen=True)
class ScriptedReply:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0  # wait before answering: long enough and the client's read timeout fires


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # as sent, percent-encoding included
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedJSONServer:
    """An HTTP server in a daemon thread that answers each POST with the next scripted reply."""

    def __init__(self, script_exhausted: ScriptedReply) -> None:
        self._script_exhausted = script_exhausted
        self._replies: deque[ScriptedReply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            # A short poll keeps `stop` (which waits for the next poll) quick.
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def queue(self, reply: ScriptedReply, times: int = 1) -> None:
        with self._lock:
            self._replies.extend([reply] * times)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers still sleeping through a scripted delay
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedJSONServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _answer(self, request: RecordedRequest) -> ScriptedReply:
        with self._lock:
            self._requests.append(request)
            return self._replies.popleft() if self._replies else self._script_exhausted

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                request = RecordedRequest(
                    method="POST",
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=json.loads(raw) if raw else {},
                )
                reply = server._answer(request)
                if reply.delay_s and server._stopping.wait(reply.delay_s):
                    return
                payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers:
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (its read timeout): that is the point of a delay

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest's output to the test's own

        return Handler


def converse_error_reply(status: int, error_type: str, message: str, delay_s: float = 0.0) -> ScriptedReply:
    """An AWS JSON error: the code in `x-amzn-ErrorType`, the text in the body's `message`."""
    return ScriptedReply(status, {"message": message}, (("x-amzn-ErrorType", error_type),), delay_s)


class FakeConverse(ScriptedJSONServer):
    """`POST /model/<url-encoded model id>/converse`, answered from the script."""

    def __init__(self) -> None:
        super().__init__(converse_error_reply(400, "ValidationException", "fake Converse server: no scripted reply left"))

    def queue_tool_use(
        self,
        name: str,
        tool_input: dict[str, Any],
        *,
        input_tokens: int = 100,
        output_tokens: int = 20,
        delay_s: float = 0.0,
    ) -> None:
        content = [{"toolUse": {"toolUseId": f"tooluse_{len(self.requests)}", "name": name, "input": tool_input}}]
        self.queue(self._message(content, "tool_use", input_tokens, output_tokens, delay_s))

    def queue_text(
        self,
        text: str,
        *,
        reasoning: str | None = None,
        input_tokens: int = 100,
        output_tokens: int = 20,
        delay_s: float = 0.0,
    ) -> None:
        content: list[dict[str, Any]] = []
        if reasoning is not None:
            content.append({"reasoningContent": {"reasoningText": {"text": reasoning, "signature": "fake-signature"}}})
        content.append({"text": text})
        self.queue(self._message(content, "end_turn", input_tokens, output_tokens, delay_s))

    def queue_error(self, status: int, error_type: str, message: str, *, times: int = 1) -> None:
        self.queue(converse_error_reply(status, error_type, message), times)

    def model_ids(self) -> list[str]:
        """The model id of each request, decoded from `/model/<id>/converse`."""
        return [unquote(request.path.removeprefix("/model/").removesuffix("/converse")) for request in self.requests]

    @staticmethod
    def _message(
        content: list[dict[str, Any]], stop_reason: str, input_tokens: int, output_tokens: int, delay_s: float
    ) -> ScriptedReply:
        body = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop_reason,
            "usage": {"inputTokens": input_tokens, "outputTokens": output_tokens, "totalTokens": input_tokens + output_tokens},
            "metrics": {"latencyMs": 1},
        }
        return ScriptedReply(200, body, delay_s=delay_s)
