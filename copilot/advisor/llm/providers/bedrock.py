"""Amazon Bedrock through boto3's Converse API: schema-shaped answers from a forced tool.

Owns the `bedrock-runtime` client, the Converse request and reply shapes, and the
mapping of AWS errors to one-line messages. Credentials, profile, region and the
endpoint come from the standard AWS chain (AWS_PROFILE, AWS_REGION,
AWS_ENDPOINT_URL_BEDROCK_RUNTIME, ~/.aws) unless the settings name them; model IDs
are configuration (inference-profile IDs), never derived here. Retries are
botocore's own (standard mode, `max_attempts` in all); nothing here loops on errors.
It knows nothing about prompts, graphs or training.

Structured answers force one tool whose input schema is the pydantic schema (Claude 3.x
on Bedrock has no other way to guarantee a JSON shape). Extended thinking is refused
together with a forced tool, so when it is enabled `structured` first asks a separate
free-text question with thinking on and hands that analysis to the forced-tool call.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from copilot.advisor.llm.providers.base import (
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
from copilot.config import BedrockSettings
from copilot.errors import AdvisorError

# Room for a complete model module from the coder; Claude 3.5 Haiku's ceiling.
ANSWER_TOKENS = 8192

# Codes that mean "not now" rather than "not like this": the advisor falls back to the
# offline rules for this round instead of stopping.
UNAVAILABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ServiceUnavailableException",
        "ServiceQuotaExceededException",
        "InternalServerException",
        "ModelNotReadyException",
        "ModelTimeoutException",
        "ModelErrorException",
    }
)

MODEL_ID_HINT = (
    "check the inference-profile id (e.g. us.anthropic.claude-3-7-sonnet-20250219-v1:0) "
    "in advisor.bedrock.default_model / fast_model or [advisor.<role>] model"
)


class BedrockProvider:
    """`LLMProvider` over Bedrock Converse; one thread-safe boto3 client per provider."""

    name = "bedrock"
    label = "bedrock"  # Converse always answers through its forced tool: nothing to negotiate

    def __init__(self, settings: BedrockSettings, *, endpoint_url: str | None = None) -> None:
        """`endpoint_url` only when given explicitly: left out, botocore honours
        AWS_ENDPOINT_URL_BEDROCK_RUNTIME and the profile's endpoint settings."""
        self._settings = settings
        config = Config(
            retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
            read_timeout=settings.read_timeout_s,
            connect_timeout=settings.connect_timeout_s,
        )
        # botocore reads only AWS_DEFAULT_REGION; AWS_REGION (what the AWS CLI v2 and the
        # other SDKs read first) is looked up here, then botocore's own chain applies.
        region = settings.region or os.environ.get("AWS_REGION") or None
        try:
            session = boto3.Session(profile_name=settings.profile, region_name=region)
            self._client = session.client("bedrock-runtime", endpoint_url=endpoint_url, config=config)
        except ProfileNotFound:
            raise AdvisorError(
                f"the AWS profile '{settings.profile}' is not configured",
                f"run `aws configure --profile {settings.profile}` or fix advisor.bedrock.profile / AWS_PROFILE",
            ) from None
        except NoRegionError:
            raise AdvisorError(
                "no AWS region is set for Bedrock",
                "set AWS_REGION, a region in your AWS profile, or advisor.bedrock.region in copilot.toml",
            ) from None

    @property
    def region(self) -> str:
        return self._client.meta.region_name

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
        if self._settings.thinking_budget_tokens > 0:
            thinking = self._converse(model, system, [_user_turn(prompt)], tally, **self._thinking())
            analysis = self._reply_text(thinking, model)
            prompt = f"{prompt}\n\nYour analysis, made before this answer:\n{analysis}"
        tool_config = {
            "tools": [
                {
                    "toolSpec": {
                        "name": tool_name,
                        "description": tool_description,
                        "inputSchema": {"json": tool_input_schema(schema)},
                    }
                }
            ],
            "toolChoice": {"tool": {"name": tool_name}},
        }
        messages = [_user_turn(prompt)]
        replies: list[list[dict[str, Any]]] = []

        def ask(problem: str | None) -> object | None:
            if problem is not None:
                messages.extend(_correction_turns(replies[-1], problem, tool_name))
            response = self._converse(
                model, system, messages, tally, toolConfig=tool_config, inferenceConfig={"maxTokens": ANSWER_TOKENS}
            )
            content = response["output"]["message"]["content"]
            replies.append(content)
            return next(
                (block["toolUse"]["input"] for block in content if block.get("toolUse", {}).get("name") == tool_name),
                None,
            )

        value = ask_with_one_correction(schema, tool_name, ask, service=f"Bedrock model {model}")
        return StructuredReply(value, tally.usage())

    def text(self, *, role: Role, model: str, system: str, prompt: str) -> TextReply:
        tally = UsageTally(self.name, model, role)
        response = self._converse(model, system, [_user_turn(prompt)], tally, **self._thinking())
        return TextReply(self._reply_text(response, model), tally.usage())

    def _thinking(self) -> dict[str, Any]:
        """Request fields for a free-text call: extended thinking when a budget is set."""
        budget = self._settings.thinking_budget_tokens
        if budget <= 0:
            return {"inferenceConfig": {"maxTokens": ANSWER_TOKENS}}
        # Thinking tokens count against maxTokens, so the answer keeps its own room on top.
        return {
            "inferenceConfig": {"maxTokens": budget + ANSWER_TOKENS},
            "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": budget}},
        }

    def _converse(
        self, model: str, system: str, messages: list[dict[str, Any]], tally: UsageTally, **fields: Any
    ) -> dict[str, Any]:
        if system:
            fields["system"] = [{"text": system}]
        try:
            response = self._client.converse(modelId=model, messages=messages, **fields)
        except ClientError as error:
            raise self._explain(error, model) from None
        except ReadTimeoutError:
            raise ProviderUnavailable(
                f"Bedrock model {model} did not answer within the {self._settings.read_timeout_s:g} s read timeout",
                "raise advisor.bedrock.read_timeout_s; the offline rules answer this round",
            ) from None
        except (BotocoreConnectionError, HTTPClientError) as error:
            raise ProviderUnavailable(
                f"cannot reach Bedrock in {self.region}: {_one_line(str(error))}",
                "check the network or AWS_ENDPOINT_URL_BEDROCK_RUNTIME; the offline rules answer this round",
            ) from None
        except NoCredentialsError:
            raise AdvisorError(
                "no AWS credentials found for Bedrock",
                "run `aws configure` (or `aws sso login`), or set AWS_PROFILE / advisor.bedrock.profile",
            ) from None
        usage = response.get("usage", {})
        tally.add(usage.get("inputTokens", 0), usage.get("outputTokens", 0))
        return response

    def _explain(self, error: ClientError, model: str) -> AdvisorError:
        """One line for the user; `ProviderUnavailable` when a later round may succeed."""
        details = error.response.get("Error", {})
        code = details.get("Code", "")
        message = _one_line(details.get("Message", ""))
        metadata = error.response.get("ResponseMetadata", {})
        attempts = metadata.get("RetryAttempts", 0) + 1
        if code == "AccessDeniedException":
            return AdvisorError(
                f"model access is not enabled for {model} in {self.region}",
                "enable it under Model access in the Bedrock console for that region, "
                "and check that your IAM policy allows bedrock:InvokeModel",
            )
        if code == "ValidationException":
            return AdvisorError(f"Bedrock refused the request for model {model}: {message}", MODEL_ID_HINT)
        if code == "ResourceNotFoundException":
            return AdvisorError(f"Bedrock has no model {model} in {self.region}: {message}", MODEL_ID_HINT)
        if code in UNAVAILABLE_CODES or metadata.get("HTTPStatusCode", 0) >= 500:
            return ProviderUnavailable(
                f"Bedrock is unavailable for {model} after {attempts} attempt(s): {code}: {message}",
                "the offline rules answer this round; retry later or raise advisor.bedrock.max_attempts",
            )
        return AdvisorError(f"Bedrock refused the request for model {model}: {code}: {message}", MODEL_ID_HINT)

    @staticmethod
    def _reply_text(response: dict[str, Any], model: str) -> str:
        """The answer's text blocks; reasoning blocks are the model's own notes, not the answer."""
        text = "".join(block["text"] for block in response["output"]["message"]["content"] if "text" in block)
        if not text.strip():
            raise AdvisorError(
                f"Bedrock model {model} returned no text (stop reason: {response.get('stopReason')})",
                "retry, or choose another model for this role",
            )
        return text


def _user_turn(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


def _correction_turns(reply: list[dict[str, Any]], problem: str, tool_name: str) -> list[dict[str, Any]]:
    """The bad reply as the assistant's turn, then the problem as the user's.

    Converse requires every toolUse to be answered by a toolResult in the next user
    turn; a toolResult with status "error" is how Claude is told its input was wrong.
    """
    correction = correction_text(problem, tool_name)
    tool_uses = [block["toolUse"]["toolUseId"] for block in reply if "toolUse" in block]
    if tool_uses:
        answer = [
            {"toolResult": {"toolUseId": tool_use_id, "content": [{"text": correction}], "status": "error"}}
            for tool_use_id in tool_uses
        ]
    else:
        answer = [{"text": correction}]
    # Converse refuses an empty turn, and turns must alternate between user and assistant.
    said = reply or [{"text": "(no answer)"}]
    return [{"role": "assistant", "content": said}, {"role": "user", "content": answer}]


def _one_line(text: str) -> str:
    return " ".join(text.split())
