"""The Bedrock provider through a real boto3 client against a local Converse server.

Dummy credentials and a 127.0.0.1 endpoint: signing, botocore's standard-mode
retries, its read timeout and its error parsing all run for real; only Bedrock is
scripted (tests/advisor/fake_converse.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.advisor.fake_converse import FakeConverse

from copilot.advisor.llm.providers.base import ProviderUnavailable, tool_input_schema
from copilot.advisor.llm.providers.bedrock import ANSWER_TOKENS, BedrockProvider
from copilot.advisor.llm.providers.factory import make_provider
from copilot.advisor.schemas import HParamAnswer, TokenUsage
from copilot.config import BedrockSettings, load_settings
from copilot.errors import AdvisorError

MODEL = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
TOOL = "propose_hparams"
GOOD_ANSWER = {
    "summary": "Adam at lr 1e-3 instead of SGD at 0.1",
    "rationale": "Gradients explode at lr 0.1; Adam's per-parameter steps stay bounded.",
    "change": {"optimizer": "Adam", "lr": 0.001},
}
OUT_OF_RANGE_ANSWER = {**GOOD_ANSWER, "change": {"lr": 50}}

MakeProvider = Callable[..., BedrockProvider]


@pytest.fixture(autouse=True)
def dummy_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Dummy keys, no instance metadata, and no ~/.aws of the developer's: the folder for AWS files."""
    aws_dir = tmp_path / "aws"
    aws_dir.mkdir()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dummy-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_dir / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws_dir / "credentials"))
    return aws_dir


@pytest.fixture
def converse() -> Iterator[FakeConverse]:
    with FakeConverse() as server:
        yield server


@pytest.fixture
def make_bedrock(converse: FakeConverse) -> Iterator[MakeProvider]:
    providers: list[BedrockProvider] = []

    def make(*, endpoint: bool = True, **settings: object) -> BedrockProvider:
        provider = BedrockProvider(
            BedrockSettings(**{"region": "us-east-1", **settings}),
            endpoint_url=converse.base_url if endpoint else None,
        )
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.close()


def propose(provider: BedrockProvider) -> HParamAnswer:
    reply = provider.structured(
        role="assessor",
        model=MODEL,
        system="You tune training runs.",
        prompt="Gradients explode at lr 0.1.",
        schema=HParamAnswer,
        tool_name=TOOL,
        tool_description="Propose one hyperparameter change.",
    )
    assert reply.usage.provider == "bedrock"
    return reply.value


def test_a_good_tool_reply_gives_the_validated_answer_and_its_usage(converse: FakeConverse, make_bedrock: MakeProvider) -> None:
    converse.queue_tool_use(TOOL, GOOD_ANSWER, input_tokens=321, output_tokens=45)

    reply = make_bedrock().structured(
        role="coder", model=MODEL, system="You tune training runs.", prompt="Gradients explode at lr 0.1.",
        schema=HParamAnswer, tool_name=TOOL, tool_description="Propose one hyperparameter change.",
    )

    assert reply.value == HParamAnswer.model_validate(GOOD_ANSWER)
    assert reply.usage.latency_s >= 0.0  # measured: the call's wall time
    assert reply.usage.model_copy(update={"latency_s": 0.0}) == TokenUsage(provider="bedrock", model=MODEL, role="coder", input_tokens=321, output_tokens=45)
    [request] = converse.requests
    assert request.path == "/model/us.anthropic.claude-3-7-sonnet-20250219-v1%3A0/converse"
    assert converse.model_ids() == [MODEL]
    assert request.body["system"] == [{"text": "You tune training runs."}]
    assert request.body["messages"] == [{"role": "user", "content": [{"text": "Gradients explode at lr 0.1."}]}]
    tool_config = request.body["toolConfig"]
    assert tool_config["toolChoice"] == {"tool": {"name": TOOL}}
    [tool] = tool_config["tools"]
    assert tool["toolSpec"]["name"] == TOOL
    assert tool["toolSpec"]["inputSchema"]["json"] == tool_input_schema(HParamAnswer)
    assert "$ref" not in str(tool["toolSpec"]["inputSchema"]["json"])
    assert "additionalModelRequestFields" not in request.body


def test_a_throttled_request_is_retried_by_botocore(converse: FakeConverse, make_bedrock: MakeProvider) -> None:
    converse.queue_error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
    converse.queue_tool_use(TOOL, GOOD_ANSWER)

    assert propose(make_bedrock(max_attempts=2)) == HParamAnswer.model_validate(GOOD_ANSWER)
    assert len(converse.requests) == 2


def test_server_errors_after_all_attempts_make_the_provider_unavailable(
    converse: FakeConverse, make_bedrock: MakeProvider
) -> None:
    converse.queue_error(500, "InternalServerException", "The server encountered an internal error.", times=3)

    with pytest.raises(ProviderUnavailable) as raised:
        propose(make_bedrock(max_attempts=3))

    assert len(converse.requests) == 3
    assert "after 3 attempt(s): InternalServerException" in raised.value.message


def test_a_reply_without_the_tool_call_is_asked_again_once(converse: FakeConverse, make_bedrock: MakeProvider) -> None:
    converse.queue_text("I would switch to Adam.", input_tokens=100, output_tokens=10)
    converse.queue_tool_use(TOOL, GOOD_ANSWER, input_tokens=150, output_tokens=30)

    reply = make_bedrock().structured(
        role="assessor", model=MODEL, system="", prompt="Gradients explode.",
        schema=HParamAnswer, tool_name=TOOL, tool_description="Propose one change.",
    )

    assert reply.value == HParamAnswer.model_validate(GOOD_ANSWER)
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (250, 40)
    first, second = converse.requests
    assert "system" not in first.body
    user, assistant, correction = second.body["messages"]
    assert assistant == {"role": "assistant", "content": [{"text": "I would switch to Adam."}]}
    assert correction["role"] == "user"
    assert f"no JSON object for '{TOOL}'" in correction["content"][0]["text"]


def test_a_reply_failing_the_schema_is_sent_back_with_the_error(converse: FakeConverse, make_bedrock: MakeProvider) -> None:
    converse.queue_tool_use(TOOL, OUT_OF_RANGE_ANSWER)
    converse.queue_tool_use(TOOL, GOOD_ANSWER)

    assert propose(make_bedrock()) == HParamAnswer.model_validate(GOOD_ANSWER)

    _, second = converse.requests
    _, assistant, correction = second.body["messages"]
    [tool_use] = assistant["content"]
    [tool_result] = correction["content"]
    assert tool_result["toolResult"]["toolUseId"] == tool_use["toolUse"]["toolUseId"]
    assert tool_result["toolResult"]["status"] == "error"
    assert "change.lr: Input should be less than or equal to 10" in tool_result["toolResult"]["content"][0]["text"]


def test_two_bad_replies_give_a_clear_advisor_error(converse: FakeConverse, make_bedrock: MakeProvider) -> None:
    converse.queue_tool_use(TOOL, OUT_OF_RANGE_ANSWER)
    converse.queue_tool_use(TOOL, {**GOOD_ANSWER, "unexpected": 1})

    with pytest.raises(AdvisorError) as raised:
        propose(make_bedrock())

    assert not isinstance(raised.value, ProviderUnavailable)
    assert len(converse.requests) == 2
    message = raised.value.message
    assert "\n" not in message
    assert message.startswith(f"Bedrock model {MODEL} gave no valid '{TOOL}' answer after one correction")
    assert "unexpected: Extra inputs are not permitted" in message


def test_a_slow_reply_hits_the_read_timeout_without_a_retry(converse: FakeConverse, make_bedrock: MakeProvider) -> None:
    reply_delay_s = 6.0
    converse.queue_tool_use(TOOL, GOOD_ANSWER, delay_s=reply_delay_s)
    provider = make_bedrock(read_timeout_s=1, max_attempts=1)

    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as raised:
        propose(provider)

    assert time.monotonic() - started < reply_delay_s  # gave up before the reply was due
    assert len(converse.requests) == 1
    assert raised.value.message == f"Bedrock model {MODEL} did not answer within the 1 s read timeout"


def test_access_denied_names_the_model_and_the_region(
    converse: FakeConverse, make_bedrock: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    converse.queue_error(403, "AccessDeniedException", "You don't have access to the model with the specified model ID.")

    with pytest.raises(AdvisorError) as raised:
        propose(make_bedrock(region=None))

    assert raised.value.message == f"model access is not enabled for {MODEL} in eu-west-3"
    assert "Bedrock console" in raised.value.hint


def test_a_validation_error_names_the_model_id(converse: FakeConverse, make_bedrock: MakeProvider) -> None:
    converse.queue_error(400, "ValidationException", "The provided model identifier is invalid.")

    with pytest.raises(AdvisorError) as raised:
        propose(make_bedrock())

    assert raised.value.message == f"Bedrock refused the request for model {MODEL}: The provided model identifier is invalid."
    assert "inference-profile id" in raised.value.hint
    assert len(converse.requests) == 1


def test_the_standard_endpoint_variable_is_honoured(
    converse: FakeConverse, make_bedrock: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", converse.base_url)
    converse.queue_tool_use(TOOL, GOOD_ANSWER)

    assert propose(make_bedrock(endpoint=False)) == HParamAnswer.model_validate(GOOD_ANSWER)
    assert converse.model_ids() == [MODEL]


def test_a_profile_supplies_credentials_and_region(
    converse: FakeConverse, make_bedrock: MakeProvider, monkeypatch: pytest.MonkeyPatch, dummy_aws: Path
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (dummy_aws / "config").write_text("[profile lab]\nregion = ap-south-1\n")
    (dummy_aws / "credentials").write_text("[lab]\naws_access_key_id = AKIDLAB\naws_secret_access_key = lab-secret\n")
    converse.queue_text("Training is healthy.")

    reply = make_bedrock(region=None, profile="lab").text(role="reporter", model=MODEL, system="", prompt="Report.")

    assert reply.text == "Training is healthy."
    signature = converse.requests[0].headers["authorization"]
    assert "Credential=AKIDLAB/" in signature
    assert "/ap-south-1/bedrock/aws4_request" in signature


def test_an_unknown_profile_is_a_clear_error(make_bedrock: MakeProvider) -> None:
    with pytest.raises(AdvisorError, match="the AWS profile 'nowhere' is not configured"):
        make_bedrock(profile="nowhere")


def test_missing_credentials_are_a_clear_error(
    converse: FakeConverse, make_bedrock: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")

    with pytest.raises(AdvisorError) as raised:
        propose(make_bedrock())

    assert raised.value.message == "no AWS credentials found for Bedrock"
    assert "aws configure" in raised.value.hint and "AWS_PROFILE" in raised.value.hint
    assert converse.requests == []


def test_thinking_runs_in_a_separate_free_text_call_before_the_forced_tool(
    converse: FakeConverse, make_bedrock: MakeProvider
) -> None:
    converse.queue_text("The lr is 100x too high for SGD.", reasoning="Let me compare the grad norms.", output_tokens=900)
    converse.queue_tool_use(TOOL, GOOD_ANSWER, output_tokens=30)

    reply = make_bedrock(thinking_budget_tokens=2048).structured(
        role="assessor", model=MODEL, system="", prompt="Gradients explode.",
        schema=HParamAnswer, tool_name=TOOL, tool_description="Propose one change.",
    )

    assert reply.value == HParamAnswer.model_validate(GOOD_ANSWER)
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (200, 930)
    thinking, answer = converse.requests
    assert thinking.body["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2048}}
    assert thinking.body["inferenceConfig"] == {"maxTokens": 2048 + ANSWER_TOKENS}
    assert "toolConfig" not in thinking.body
    assert "additionalModelRequestFields" not in answer.body
    assert answer.body["toolConfig"]["toolChoice"] == {"tool": {"name": TOOL}}
    prompt = answer.body["messages"][0]["content"][0]["text"]
    assert prompt.startswith("Gradients explode.") and "The lr is 100x too high for SGD." in prompt
    assert "Let me compare" not in prompt


def test_text_returns_the_answer_without_the_reasoning(converse: FakeConverse, make_bedrock: MakeProvider) -> None:
    converse.queue_text("Accuracy rose from 10% to 91%.", reasoning="Summarise.", input_tokens=70, output_tokens=12)

    reply = make_bedrock().text(role="reporter", model=MODEL, system="Write the report.", prompt="Run summary.")

    assert reply.text == "Accuracy rose from 10% to 91%."
    assert reply.usage.latency_s >= 0.0  # measured: the call's wall time
    assert reply.usage.model_copy(update={"latency_s": 0.0}) == TokenUsage(provider="bedrock", model=MODEL, role="reporter", input_tokens=70, output_tokens=12)
    [request] = converse.requests
    assert request.body["inferenceConfig"] == {"maxTokens": ANSWER_TOKENS}
    assert "toolConfig" not in request.body


def test_the_factory_builds_bedrock_from_settings(tmp_path: Path) -> None:
    settings = load_settings({"advisor": {"bedrock": {"region": "eu-central-1"}}}, config_dir=tmp_path)

    provider = make_provider("bedrock", settings)

    assert isinstance(provider, BedrockProvider)
    assert provider.region == "eu-central-1"
    provider.close()
