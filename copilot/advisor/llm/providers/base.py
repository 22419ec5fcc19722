"""The one small interface every LLM provider implements.

A provider turns (system, prompt, pydantic schema) into a validated instance of the
schema plus the tokens it cost, or into free text. It owns its transport, retries
and error mapping; it knows nothing about training, graphs or prompts. A reply that
fails the schema is sent back once with the validation error; a second failure is
an `AdvisorError`. A provider that cannot be reached after its transport's own
retries raises `ProviderUnavailable`, on which the advisor falls back to the offline
rules with a visible notice.

The helpers below the interface (a flat tool schema, the one-correction policy, a
token tally per call) are what every provider shares, so each does them the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from copilot.advisor.schemas import Role, TokenUsage
from copilot.errors import AdvisorError

SchemaT = TypeVar("SchemaT", bound=BaseModel)


class ProviderUnavailable(AdvisorError):
    """The service could not be used (throttled, down, unreachable) after retries."""


class UnusableAnswer(AdvisorError):
    """The model was asked and nothing usable came back: an answer that failed its schema
    after one correction, or a conversation longer than the model's context. Like an
    outage, it costs this one call (the offline rules answer it); unlike a refused key or
    model name, there is nothing in the settings the user must fix first."""


@dataclass(frozen=True)
class StructuredReply(Generic[SchemaT]):
    value: SchemaT
    usage: TokenUsage
    notices: tuple[str, ...] = ()  # for the human: e.g. how the provider had to ask for JSON


@dataclass(frozen=True)
class TextReply:
    text: str
    usage: TokenUsage


@dataclass
class UsageTally:
    """The tokens and wall time one `structured` or `text` call spends across its requests
    (thinking, correction); the clock starts when the tally is made, at the call's start."""

    provider: str
    model: str
    role: Role
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False
    started: float = field(default_factory=time.monotonic)

    def add(self, input_tokens: int, output_tokens: int, *, estimated: bool = False) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.estimated = self.estimated or estimated

    def usage(self) -> TokenUsage:
        return TokenUsage(
            provider=self.provider,
            model=self.model,
            role=self.role,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            latency_s=round(time.monotonic() - self.started, 3),
            estimated=self.estimated,
        )


class LLMProvider(Protocol):
    """Bedrock, an OpenAI-compatible server, or a scripted provider in tests."""

    name: str  # "bedrock", "openai"
    # What the run header calls it: the name, and for a server that negotiates how it is
    # asked for structured answers, the way it settled on (it may change at the first call).
    label: str

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
    ) -> StructuredReply[SchemaT]: ...

    def text(self, *, role: Role, model: str, system: str, prompt: str) -> TextReply: ...


def tool_input_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The schema's JSON schema with every `#/$defs/...` reference inlined.

    Forced-tool and response-format schemas are sent as one self-contained object:
    Bedrock's `inputSchema.json` and some OpenAI-compatible servers resolve no
    references, so a flat schema is the one form every provider accepts.
    """
    full = schema.model_json_schema()
    definitions: dict[str, Any] = full.pop("$defs", {})

    def inline(node: Any, resolving: tuple[str, ...]) -> Any:
        if isinstance(node, list):
            return [inline(item, resolving) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if reference is None:
            return {key: inline(value, resolving) for key, value in node.items()}
        name = reference.removeprefix("#/$defs/")
        if name in resolving:
            raise ValueError(f"{schema.__name__} is recursive through {name}; a tool schema must be finite")
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        return inline({**definitions[name], **siblings}, (*resolving, name))

    return inline(full, ())


def describe_validation_error(error: ValidationError) -> str:
    """Every problem of a failed validation on one line: `path: message; path: message`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or '(top level)'}: {problem['msg']}"
        for problem in error.errors()
    )


def correction_text(problem: str, tool_name: str) -> str:
    """What the model is told when its structured answer is sent back."""
    return (
        f"That answer was rejected: {problem}. "
        f"Answer again through '{tool_name}' with input that fits its schema exactly."
    )


def ask_with_one_correction(
    schema: type[SchemaT],
    tool_name: str,
    ask: Callable[[str | None], object | None],
    *,
    service: str,
) -> SchemaT:
    """Ask, validate, and on a bad reply ask once more with the problem; then give up.

    `ask(None)` sends the first request; `ask(problem)` appends the bad reply and the
    problem to the provider's conversation and sends it again. Each returns the
    reply's structured payload (the tool input, or the parsed JSON content) or None
    when the reply holds none.
    """
    problem: str | None = None
    for _ in range(2):
        payload = ask(problem)
        if payload is None:
            problem = f"the reply holds no JSON object for '{tool_name}'"
            continue
        try:
            return schema.model_validate(payload)
        except ValidationError as error:
            problem = f"the '{tool_name}' input does not match its schema: {describe_validation_error(error)}"
    raise UnusableAnswer(
        f"{service} gave no valid '{tool_name}' answer after one correction: {problem}",
        "retry, or choose a stronger model for this role in copilot.toml ([advisor.<role>] model)",
    )
