"""A local OpenAI-compatible server for tests: `POST /v1/chat/completions`, scripted replies.

It stands in for vLLM or Ollama so the real httpx client, its timeouts and the
provider's retries run against real HTTP. Replies are queued in order (JSON content,
a tool call, plain text, an error status, each optionally delayed) and every request
is recorded; when the script runs out the server answers 400 saying so.
"""

from __future__ import annotations

import json
from typing import Any

from tests.advisor.fake_converse import ScriptedJSONServer, ScriptedReply


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
        self, answer: dict[str, Any] | str, *, prompt_tokens: int = 100, completion_tokens: int = 20, delay_s: float = 0.0
    ) -> None:
        """A reply whose message content is the answer (a dict is sent as its JSON text)."""
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
        message: dict[str, Any], finish_reason: str, prompt_tokens: int, completion_tokens: int, delay_s: float
    ) -> ScriptedReply:
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return ScriptedReply(200, body, delay_s=delay_s)
