"""The one small interface every LLM provider implements.

A provider turns (system, prompt, pydantic schema) into a validated instance of the
schema plus the tokens it cost, or into free text. It owns its transport, retries
and error mapping; it knows nothing about training, graphs or prompts. A reply that
fails the schema is sent back once with the validation error; a second failure is
an `AdvisorError`. A provider that cannot be reached after its transport's own
retries raises `ProviderUnavailable`, on which the advisor falls back to the offline
rules with a visible notice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pydantic import BaseModel

from copilot.advisor.schemas import Role, TokenUsage
from copilot.errors import AdvisorError

SchemaT = TypeVar("SchemaT", bound=BaseModel)


class ProviderUnavailable(AdvisorError):
    """The service could not be used (throttled, down, unreachable) after retries."""


@dataclass(frozen=True)
class StructuredReply(Generic[SchemaT]):
    value: SchemaT
    usage: TokenUsage


@dataclass(frozen=True)
class TextReply:
    text: str
    usage: TokenUsage


class LLMProvider(Protocol):
    """Bedrock, an OpenAI-compatible server, or a scripted provider in tests."""

    name: str  # "bedrock", "openai"

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
