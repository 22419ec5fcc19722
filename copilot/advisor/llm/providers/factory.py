"""Build the LLM provider a role is configured to use.

The only place that maps a provider name to its class. Each provider's module is
imported on demand, so choosing OpenAI never imports boto3 and the CLI's start-up
stays light. "offline" is not a provider: the rule engine answers without one.
"""

from __future__ import annotations

from typing import Literal

from copilot.advisor.llm.providers.base import LLMProvider
from copilot.config import Settings
from copilot.errors import ConfigError


def make_provider(name: Literal["bedrock", "openai"], settings: Settings) -> LLMProvider:
    if name == "bedrock":
        from copilot.advisor.llm.providers.bedrock import BedrockProvider

        return BedrockProvider(settings.advisor.bedrock)
    if name == "openai":
        from copilot.advisor.llm.providers.openai_compat import OpenAICompatProvider

        return OpenAICompatProvider(settings.advisor.openai)
    raise ConfigError(
        f"'{name}' is not an LLM provider",
        "use bedrock or openai (offline is the rule engine and needs no provider)",
    )
