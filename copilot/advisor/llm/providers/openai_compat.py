"""Any OpenAI-compatible chat server (vLLM, Ollama, ...) through httpx.

Owns the HTTP client, the `chat/completions` request and reply shapes, a bounded
retry on 429 and 5xx, and the mapping of HTTP failures to one-line messages. The API
key is read from the environment variable the settings name (never from the
settings themselves) and is optional: local servers usually need none. It knows
nothing about prompts, graphs or training.

Structured answers are negotiated per server, because each supports a different subset:
vLLM takes `response_format` json_schema, `json_object` and named tool calls; Ollama
takes json_schema and ignores `tool_choice`; llama.cpp's servers refuse json_schema
(older builds with a 500 naming it) but take `json_object` with a `schema` or forced
tools; others take none. With `advisor.openai.structured = "auto"` the provider asks in
`NEGOTIATION_ORDER` and, when the server refuses a mode (a 4xx, or a 500 whose message
names the feature), moves to the next and keeps it for the rest of the provider's life;
the human is told once. The last mode puts the schema in the prompt and relies on the
one correction. A named mode is used as it is: its refusal is an error naming the setting.
A refusal is deterministic, so it is never retried; 429, 502, 503, 504 and a 500 that
names no structured feature are, with the server's `Retry-After` honoured. A read
timeout is not retried: a generation that outlived the timeout would be sent again in
full. `strict` is what vLLM and Ollama expect; OpenAI's own service would also want
every property required, which these schemas (with defaults) do not promise.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Literal

import httpx

from copilot.advisor.llm.providers.base import (
    ProviderUnavailable,
    SchemaT,
    StructuredReply,
    TextReply,
    UnusableAnswer,
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
# Words by which a server's refusal names the structured-output feature it lacks; a 500
# that names one is the server's way of refusing (llama.cpp), not an overload.
STRUCTURED_FEATURE_WORDS = ("response_format", "json_schema", "json_object", "tool_choice", "tools", "function", "grammar")
CHARACTERS_PER_TOKEN = 4
CONTEXT_OVERFLOW_WORDS = ("maximum context length", "context length", "context window", "too many tokens")
StructuredMode = Literal["json_schema", "tools", "json_object", "prompt"]
NEGOTIATION_ORDER: tuple[StructuredMode, ...] = ("json_schema", "tools", "json_object", "prompt")


class RequestRejected(AdvisorError):
    """The server refused the request itself (a 4xx, or a 500 naming a feature): retrying cannot help."""

    def __init__(self, message: str, hint: str, detail: str) -> None:
        super().__init__(message, hint)
        self.detail = detail

    def names_structured_feature(self) -> bool:
        return _names_structured_feature(self.detail)


class OpenAICompatProvider:
    """`LLMProvider` over `POST <base_url>/chat/completions`; one pooled httpx client."""

    name = "openai"

    def __init__(self, settings: OpenAISettings) -> None:
        self._settings = settings
        self._base_url = settings.base_url.rstrip("/")
        self._negotiating = settings.structured == "auto"
        self.structured_mode: StructuredMode = NEGOTIATION_ORDER[0] if self._negotiating else settings.structured
        self._settled = not self._negotiating  # auto settles on the first mode the server answers in
        api_key = os.environ.get(settings.api_key_env)
        self._client = httpx.Client(
            base_url=self._base_url + "/",
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(settings.timeout_s, connect=CONNECT_TIMEOUT_S),
            # Connection failures are retried by the transport; 429 and 5xx by `_post`.
            transport=httpx.HTTPTransport(retries=settings.max_retries),
        )

    @property
    def label(self) -> str:
        mode = self.structured_mode if self._settled else "auto, settled at the first call"
        return f"{self.name} · structured output: {mode}"

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
        replies: list[dict[str, Any]] = []
        corrections: list[dict[str, Any]] = []
        refusals: list[tuple[StructuredMode, str]] = []  # (mode, the server's words) in this call

        def send() -> dict[str, Any]:
            mode = self.structured_mode
            messages = [*_opening(_system_for(mode, system, tool_name, flat_schema), prompt), *corrections]
            fields = _answer_format(mode, tool_name, tool_description, flat_schema)
            return self._complete(model, messages, fields, tally)

        def ask(problem: str | None) -> object | None:
            if problem is not None:
                corrections.extend(_correction_turns(replies[-1], problem, tool_name))
            while True:
                try:
                    reply = send()
                    break
                except RequestRejected as rejection:
                    if not rejection.names_structured_feature() or self.structured_mode == "prompt":
                        raise
                    if not self._negotiating:
                        hint = f'set advisor.openai.structured = "auto" instead of "{self.structured_mode}"'
                        raise RequestRejected(rejection.message, hint, rejection.detail) from None
                    refusals.append((self.structured_mode, rejection.detail))
                    self.structured_mode = NEGOTIATION_ORDER[NEGOTIATION_ORDER.index(self.structured_mode) + 1]
            replies.append(reply)
            self._settled = True
            return _payload(reply, tool_name)

        value = ask_with_one_correction(schema, tool_name, ask, service=f"the model {model} at {self._base_url}")
        notices = (self._negotiation_notice(refusals),) if refusals else ()
        return StructuredReply(value, tally.usage(), notices)

    def _negotiation_notice(self, refusals: list[tuple[StructuredMode, str]]) -> str:
        """What the human is told, once, when the server refused the modes tried before this one."""
        refused = "; ".join(f"{mode} ({detail[:100]})" for mode, detail in refusals)
        return f"{self._base_url} refused structured output as {refused}; copilot asks with {self.structured_mode} for the rest of this run"

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

    def _complete(
        self, model: str, messages: list[dict[str, Any]], fields: dict[str, Any], tally: UsageTally
    ) -> dict[str, Any]:
        """The reply's message; its token usage goes to the tally."""
        settings = self._settings
        sampling = {
            **({"max_tokens": settings.max_output_tokens} if settings.max_output_tokens else {}),
            **({"temperature": settings.temperature} if settings.temperature is not None else {}),
        }
        request = {"model": model, "messages": messages, **sampling, **fields}
        body = self._post(request, model)
        choices = body.get("choices") or [{}]
        message = choices[0].get("message") or {}
        usage = body.get("usage") or {}
        if "prompt_tokens" in usage:
            tally.add(usage["prompt_tokens"], usage.get("completion_tokens", 0))
        else:  # some servers (and older Ollama) send no usage: count it, and say it was counted
            tally.add(_counted_tokens(request), _counted_tokens(message), estimated=True)
        return message

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
            if not _worth_retrying(response) or attempt == attempts - 1:
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
        if status in RETRIED_STATUSES and not (status == 500 and _names_structured_feature(detail)):
            raise ProviderUnavailable(
                f"{url} answered {status} after {attempts} attempt(s): {detail}",
                "the offline rules answer this round; retry later or raise advisor.openai.max_retries",
            )
        if status in (401, 403):
            raise AdvisorError(
                f"{url} refused the request ({status}): {detail}",
                f"put the server's API key in the environment variable {self._settings.api_key_env}",
            )
        if status == 400 and _names_context_overflow(detail):
            raise UnusableAnswer(
                f"the conversation with {model} at {url} is longer than its context: {detail}",
                "raise the server's context size (llama.cpp: --n_ctx; vLLM: --max-model-len) or lower advisor.openai.max_output_tokens",
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


def _answer_format(mode: StructuredMode, tool_name: str, tool_description: str, flat_schema: dict[str, Any]) -> dict[str, Any]:
    """The request fields that ask for schema-shaped JSON in `mode`."""
    if mode == "tools":
        function = {"name": tool_name, "description": tool_description, "parameters": flat_schema}
        return {
            "tools": [{"type": "function", "function": function}],
            "tool_choice": {"type": "function", "function": {"name": tool_name}},
        }
    if mode == "json_schema":
        json_schema = {"name": tool_name, "description": tool_description, "schema": flat_schema, "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": json_schema}}
    if mode == "json_object":
        # llama.cpp constrains decoding to `schema`; servers that ignore the key still get JSON.
        return {"response_format": {"type": "json_object", "schema": flat_schema}}
    return {}


def _system_for(mode: StructuredMode, system: str, tool_name: str, flat_schema: dict[str, Any]) -> str:
    """The system prompt; where the server does not hold the model to the schema, it carries it."""
    if mode not in ("json_object", "prompt"):
        return system
    contract = (
        f"Answer as '{tool_name}': reply with one JSON object and nothing else, "
        f"fitting this JSON schema exactly:\n{json.dumps(flat_schema, separators=(',', ':'))}"
    )
    return f"{system}\n\n{contract}" if system else contract


def _worth_retrying(response: httpx.Response) -> bool:
    """Overload and rate limits pass; a refusal, even one sent as a 500, does not."""
    if response.status_code not in RETRIED_STATUSES:
        return False
    return response.status_code != 500 or not _names_structured_feature(_error_detail(response))


def _names_context_overflow(detail: str) -> bool:
    """llama.cpp's and vLLM's words (after OpenAI's) for a request past the model's context."""
    lowered = detail.lower()
    return any(words in lowered for words in CONTEXT_OVERFLOW_WORDS)


def _names_structured_feature(detail: str) -> bool:
    lowered = detail.lower()
    return any(word in lowered for word in STRUCTURED_FEATURE_WORDS)


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
    """The reply's JSON object: the whole text, or else the first object in it (small models
    asked through the prompt wrap it in prose or a ```json fence)."""
    if not isinstance(text, str):
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = _first_object_in(text)
    return parsed if isinstance(parsed, dict) else None


def _first_object_in(text: str) -> dict[str, Any] | None:
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            parsed, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(parsed, dict):
            return parsed
        start = text.find("{", start + 1)
    return None


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


def _counted_tokens(part: dict[str, Any]) -> int:
    """About how many tokens a request or reply holds, at four characters a token (the usual
    rule of thumb for English and code in BPE vocabularies); for a server that reports none."""
    return max(1, round(len(json.dumps(part, separators=(",", ":"))) / CHARACTERS_PER_TOKEN))


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
