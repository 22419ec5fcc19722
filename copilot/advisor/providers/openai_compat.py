"""Any OpenAI-compatible chat server (vLLM, Ollama, ...) through httpx.

Owns the HTTP client, the `chat/completions` request and reply shapes, a bounded
retry on 429 and 5xx, and the mapping of HTTP failures to one-line messages. The API
key is read from the environment variable the settings name (never from the
settings themselves) and is optional: local servers usually need none. It knows
nothing about prompts, graphs or training.

Structured answers ask first for `response_format` with a strict JSON schema: vLLM
and Ollama both constrain decoding to it, while forced tool calls need extra server
flags on vLLM and are ignored by Ollama. A server that refuses `response_format`
(a 4xx naming it) gets a forced function call instead, for the rest of the
provider's life. `strict` is what vLLM and Ollama expect; OpenAI's own service would
also want every property required, which these schemas (with defaults) do not promise.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx

from copilot.advisor.providers.base import (
    ProviderUnavailable,
    SchemaT,
    StructuredReply,
    TextReply,
    UsageTally,
    ask_with_one_correction,
    correction_text,
    tool_input_schema,
)
from copilot.advisor.schemas import Role
from copilot.config import OpenAISettings
from copilot.errors import AdvisorError

CONNECT_TIMEOUT_S = 10.0
# Backoff between retries of a 429 or 5xx: a server's Retry-After (in seconds) when it
# sends one, else 0.25 s doubling per retry; either capped, so `max_retries` bounds the wait.
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 8.0
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class RequestRejected(AdvisorError):
    """The server answered 4xx: the request itself is wrong, so retrying cannot help."""

    def __init__(self, message: str, hint: str, detail: str) -> None:
        super().__init__(message, hint)
        self.detail = detail

    def names_response_format(self) -> bool:
        return "response_format" in self.detail or "json_schema" in self.detail


class OpenAICompatProvider:
    """`LLMProvider` over `POST <base_url>/chat/completions`; one pooled httpx client."""

    name = "openai"

    def __init__(self, settings: OpenAISettings) -> None:
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        self._use_tool_calls = False
        api_key = os.environ.get(settings.api_key_env)
        self._client = httpx.Client(
            base_url=self._base_url + "/",
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(settings.timeout_s, connect=CONNECT_TIMEOUT_S),
            # Connection failures are retried by the transport; 429 and 5xx by `_post`.
            transport=httpx.HTTPTransport(retries=settings.max_retries),
        )

    def close(self) -> None:
        self._client.close()

    def structured(
        self,
        *,
        role: Role,
        model: str,
        system: str,
        prompt: str,
        schema: type[SchemaT],
        tool_name: str,
        tool_description: str,
    ) -> StructuredReply[SchemaT]:
        tally = UsageTally(self.name, model, role)
        flat_schema = tool_input_schema(schema)
        messages = _opening(system, prompt)
        replies: list[dict[str, Any]] = []

        def send() -> dict[str, Any]:
            answer_format = self._answer_format(tool_name, tool_description, flat_schema)
            return self._complete(model, messages, answer_format, tally)

        def ask(problem: str | None) -> object | None:
            if problem is not None:
                messages.extend(_correction_turns(replies[-1], problem, tool_name))
            try:
                reply = send()
            except RequestRejected as rejection:
                if self._use_tool_calls or not rejection.names_response_format():
                    raise
                self._use_tool_calls = True
                reply = send()
            replies.append(reply)
            return _payload(reply, tool_name)

        value = ask_with_one_correction(schema, tool_name, ask, service=f"the model {model} at {self._base_url}")
        return StructuredReply(value, tally.usage())

    def text(self, *, role: Role, model: str, system: str, prompt: str) -> TextReply:
        tally = UsageTally(self.name, model, role)
        reply = self._complete(model, _opening(system, prompt), {}, tally)
        text = reply.get("content") or ""
        if not text.strip():
            raise AdvisorError(
                f"the model {model} at {self._base_url} returned no text",
                "retry, or choose another model for this role",
            )
        return TextReply(text, tally.usage())

    def _answer_format(self, tool_name: str, tool_description: str, flat_schema: dict[str, Any]) -> dict[str, Any]:
        if self._use_tool_calls:
            return {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": tool_name, "description": tool_description, "parameters": flat_schema},
                    }
                ],
                "tool_choice": {"type": "function", "function": {"name": tool_name}},
            }
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": tool_name,
                    "description": tool_description,
                    "schema": flat_schema,
                    "strict": True,
                },
            }
        }

    def _complete(
        self, model: str, messages: list[dict[str, Any]], fields: dict[str, Any], tally: UsageTally
    ) -> dict[str, Any]:
        """The reply's message; its token usage goes to the tally."""
        body = self._post({"model": model, "messages": messages, **fields}, model)
        usage = body.get("usage") or {}
        tally.add(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
        choices = body.get("choices") or [{}]
        return choices[0].get("message") or {}

    def _post(self, payload: dict[str, Any], model: str) -> dict[str, Any]:
        url = f"{self._base_url}/chat/completions"
        attempts = self._settings.max_retries + 1
        for attempt in range(attempts):
            try:
                response = self._client.post("chat/completions", json=payload)
            except httpx.ReadTimeout:
                raise ProviderUnavailable(
                    f"the model {model} at {url} did not answer within the {self._settings.timeout_s:g} s timeout",
                    "raise advisor.openai.timeout_s; the offline rules answer this round",
                ) from None
            except httpx.TransportError as error:
                reason = _one_line(str(error)) or type(error).__name__
                raise ProviderUnavailable(
                    f"cannot reach the OpenAI-compatible server at {url}: {reason}",
                    "start the server or fix advisor.openai.base_url; the offline rules answer this round",
                ) from None
            if response.status_code not in RETRIED_STATUSES or attempt == attempts - 1:
                break
            time.sleep(_backoff_s(response, attempt))
        return self._checked(response, url, model, attempts)

    def _checked(self, response: httpx.Response, url: str, model: str, attempts: int) -> dict[str, Any]:
        status = response.status_code
        if status == 200:
            try:
                return response.json()
            except json.JSONDecodeError:
                raise AdvisorError(
                    f"{url} answered with something other than JSON", "check advisor.openai.base_url"
                ) from None
        detail = _error_detail(response)
        if status in RETRIED_STATUSES:
            raise ProviderUnavailable(
                f"{url} answered {status} after {attempts} attempt(s): {detail}",
                "the offline rules answer this round; retry later or raise advisor.openai.max_retries",
            )
        if status in (401, 403):
            raise AdvisorError(
                f"{url} refused the request ({status}): {detail}",
                f"put the server's API key in the environment variable {self._settings.api_key_env}",
            )
        if status == 404:
            raise AdvisorError(
                f"{url} has no model {model} or no such endpoint (404): {detail}",
                "check advisor.openai.base_url (usually ending in /v1) and the model name",
            )
        raise RequestRejected(
            f"{url} refused the request for model {model} ({status}): {detail}",
            "check the model name and the server's supported features",
            detail,
        )


def _opening(system: str, prompt: str) -> list[dict[str, Any]]:
    system_turn = [{"role": "system", "content": system}] if system else []
    return [*system_turn, {"role": "user", "content": prompt}]


def _payload(reply: dict[str, Any], tool_name: str) -> object | None:
    """The structured answer in a reply: the forced call's arguments, or the JSON content."""
    for call in reply.get("tool_calls") or []:
        function = call.get("function", {})
        if function.get("name") == tool_name:
            return _json_object(function.get("arguments"))
    return _json_object(reply.get("content"))


def _json_object(text: object) -> dict[str, Any] | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _correction_turns(reply: dict[str, Any], problem: str, tool_name: str) -> list[dict[str, Any]]:
    """The bad reply as the assistant's turn, then the problem: as the tool's result when it
    was a tool call (the chat format requires one per call), else as the user's turn."""
    correction = correction_text(problem, tool_name)
    calls = reply.get("tool_calls") or []
    assistant = {"role": "assistant", "content": reply.get("content") or ""}
    if not calls:
        return [assistant, {"role": "user", "content": correction}]
    return [
        {**assistant, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": call.get("id", ""), "content": correction} for call in calls),
    ]


def _backoff_s(response: httpx.Response, retry: int) -> float:
    retry_after = response.headers.get("Retry-After", "")
    if retry_after.strip().isdigit():
        return min(float(retry_after), MAX_BACKOFF_S)
    return min(FIRST_BACKOFF_S * 2**retry, MAX_BACKOFF_S)


def _error_detail(response: httpx.Response) -> str:
    """The server's own error message: OpenAI's `{"error": {"message"}}`, vLLM's `{"message"}`,
    Ollama's `{"error": "..."}`, or else the body's text."""
    try:
        body = response.json()
    except json.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error or body.get("message")
        if message:
            return _one_line(str(message))
    return _one_line(response.text)[:300]


def _one_line(text: str) -> str:
    return " ".join(text.split())
