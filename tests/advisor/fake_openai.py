"""A local OpenAI-compatible server for tests: `POST /v1/chat/completions`, scripted replies.

It stands in for vLLM or Ollama so the real httpx client, its timeouts and the
provider's retries run against real HTTP. Replies are queued in order (JSON content,
a tool call, plain text, an error status, each optionally delayed) and every request
is recorded; when the script runs out the server answers 400 saying so.

`ProfiledOpenAI` answers by a server family's profile instead of a script (vLLM, Ollama,
llama.cpp, a bare server): what each accepts and how it refuses, so the provider's
negotiation of structured output is tested against the wire behaviour users meet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.advisor.fake_converse import RecordedRequest, ScriptedJSONServer, ScriptedReply


def openai_error_reply(status: int, message: str, retry_after: str | None = None) -> ScriptedReply:
    headers = (("Retry-After", retry_after),) if retry_after is not None else ()
    return ScriptedReply(status, {"error": {"message": message, "type": "invalid_request_error", "code": status}}, headers)


class FakeOpenAI(ScriptedJSONServer):
    def __init__(self) -> None:
        super().__init__(openai_error_reply(400, "fake OpenAI server: no scripted reply left"))

    @property
    def api_url(self) -> str:
        """What `advisor.openai.base_url` is set to."""
        return f"{self.base_url}/v1"

    def queue_json(
        self, answer: dict[str, Any] | str, *, prompt_tokens: int | None = 100, completion_tokens: int = 20, delay_s: float = 0.0
    ) -> None:
        """A reply whose message content is the answer (a dict is sent as its JSON text);
        `prompt_tokens=None` sends no `usage`, as some servers do."""
        content = answer if isinstance(answer, str) else json.dumps(answer)
        self.queue(self._completion({"role": "assistant", "content": content}, "stop", prompt_tokens, completion_tokens, delay_s))

    def queue_tool_call(
        self, name: str, arguments: dict[str, Any], *, prompt_tokens: int = 100, completion_tokens: int = 20
    ) -> None:
        call = {"id": f"call_{len(self.requests)}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        self.queue(self._completion(message, "tool_calls", prompt_tokens, completion_tokens, 0.0))

    def queue_error(self, status: int, message: str, *, times: int = 1, retry_after: str | None = None) -> None:
        self.queue(openai_error_reply(status, message, retry_after), times)

    @staticmethod
    def _completion(
        message: dict[str, Any], finish_reason: str, prompt_tokens: int | None, completion_tokens: int, delay_s: float
    ) -> ScriptedReply:
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        }
        if prompt_tokens is not None:
            body["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        return ScriptedReply(200, body, delay_s=delay_s)


def structured_mode_of(body: dict[str, Any]) -> str:
    """How a chat-completions request asks for JSON: tools, json_schema, json_object or prompt."""
    if "tools" in body:
        return "tools"
    return (body.get("response_format") or {}).get("type", "prompt")


@dataclass(frozen=True)
class ServerProfile:
    """What one server family accepts, and how it refuses the rest (from their docs and source)."""

    name: str
    refusals: dict[str, ScriptedReply]  # structured mode -> the server's answer to it
    honours_tool_choice: bool = True  # Ollama takes `tools` but lets the model answer in prose


LLAMA_CPP = ServerProfile(
    # llama.cpp's server: json_schema refused with a 500 (the builds users report), json_object + schema and named tools taken.
    "llama.cpp",
    {"json_schema": ScriptedReply(500, {"error": {"code": 500, "message": 'response_format type must be one of "text" or "json_object", but got: json_schema', "type": "server_error"}})},
)
LLAMA_CPP_PYTHON = ServerProfile(
    # llama-cpp-python's server (0.3.36), as it answered here: pydantic's literal error for the
    # response_format type, sent as a 500 (tests/advisor/test_llama_cpp_server.py meets the real one).
    "llama-cpp-python",
    {
        "json_schema": ScriptedReply(
            500,
            {"error": {"message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                                  "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}\n",
                       "type": "internal_server_error", "param": None, "code": None}},
        )
    },
)
VLLM = ServerProfile("vllm", {})
OLLAMA = ServerProfile("ollama", {}, honours_tool_choice=False)
BARE = ServerProfile(
    # A server with no structured output at all: it rejects both fields as unknown.
    "bare",
    {
        "json_schema": openai_error_reply(400, "Unknown parameter: 'response_format'"),
        "json_object": openai_error_reply(400, "Unknown parameter: 'response_format'"),
        "tools": openai_error_reply(400, "Unknown parameter: 'tools'"),
    },
)


class ProfiledOpenAI(FakeOpenAI):
    """A chat server that answers every request by its profile: the refusal for a mode it
    lacks, else `answer` in the shape that mode asks for (in prompt mode wrapped in prose and
    a ```json fence, as small models answer)."""

    def __init__(self, profile: ServerProfile, answer: dict[str, Any], tool_name: str) -> None:
        super().__init__()
        self.profile = profile
        self._answer_value = answer
        self._tool_name = tool_name

    def _answer(self, request: RecordedRequest) -> ScriptedReply:
        with self._lock:
            self._requests.append(request)
        mode = structured_mode_of(request.body)
        if mode in self.profile.refusals:
            return self.profile.refusals[mode]
        arguments = json.dumps(self._answer_value)
        if mode == "tools" and self.profile.honours_tool_choice:
            call = {"id": "call_0", "type": "function", "function": {"name": self._tool_name, "arguments": arguments}}
            return self._completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls", 100, 20, 0.0)
        content = f"Here is my answer:\n```json\n{arguments}\n```" if mode in ("prompt", "tools") else arguments
        return self._completion({"role": "assistant", "content": content}, "stop", 100, 20, 0.0)
