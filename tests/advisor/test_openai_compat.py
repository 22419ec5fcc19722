"""The OpenAI-compatible provider through real httpx against a local chat-completions server.

The server (tests/advisor/fake_openai.py) stands in for vLLM or Ollama; the client,
its timeouts, the bounded retry on 429/5xx and the fallback from `response_format`
to a forced tool call all run for real.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from copilot.advisor.llm.providers.base import ProviderUnavailable, UnusableAnswer, tool_input_schema
from copilot.advisor.llm.providers.factory import make_provider
from copilot.advisor.llm.providers.openai_compat import OpenAICompatProvider
from copilot.advisor.schemas import HParamAnswer, TokenUsage
from copilot.config import OpenAISettings, load_settings
from copilot.errors import AdvisorError
from tests.advisor.fake_openai import FakeOpenAI

MODEL = "qwen2.5-coder:7b"
TOOL = "propose_hparams"
GOOD_ANSWER = {
    "summary": "Adam at lr 1e-3 instead of SGD at 0.1",
    "rationale": "Gradients explode at lr 0.1; Adam's per-parameter steps stay bounded.",
    "change": {"optimizer": "Adam", "lr": 0.001},
}
OUT_OF_RANGE_ANSWER = {**GOOD_ANSWER, "change": {"lr": 50}}

MakeProvider = Callable[..., OpenAICompatProvider]


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def make_openai(server: FakeOpenAI) -> Iterator[MakeProvider]:
    providers: list[OpenAICompatProvider] = []

    def make(**settings: object) -> OpenAICompatProvider:
        provider = OpenAICompatProvider(OpenAISettings(**{"base_url": server.api_url, **settings}))
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        provider.close()


def propose(provider: OpenAICompatProvider) -> HParamAnswer:
    reply = provider.structured(
        role="assessor",
        model=MODEL,
        system="You tune training runs.",
        prompt="Gradients explode at lr 0.1.",
        schema=HParamAnswer,
        tool_name=TOOL,
        tool_description="Propose one hyperparameter change.",
    )
    assert reply.usage.provider == "openai"
    return reply.value


def test_a_good_json_reply_gives_the_validated_answer_and_its_usage(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_json(GOOD_ANSWER, prompt_tokens=400, completion_tokens=60)

    reply = make_openai().structured(
        role="coder", model=MODEL, system="You tune training runs.", prompt="Gradients explode at lr 0.1.",
        schema=HParamAnswer, tool_name=TOOL, tool_description="Propose one hyperparameter change.",
    )

    assert reply.value == HParamAnswer.model_validate(GOOD_ANSWER)
    assert reply.usage.latency_s >= 0.0  # measured: the call's wall time
    assert reply.usage.model_copy(update={"latency_s": 0.0}) == TokenUsage(provider="openai", model=MODEL, role="coder", input_tokens=400, output_tokens=60)
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert "authorization" not in request.headers
    assert request.body["model"] == MODEL
    assert request.body["messages"] == [
        {"role": "system", "content": "You tune training runs."},
        {"role": "user", "content": "Gradients explode at lr 0.1."},
    ]
    assert request.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": TOOL,
            "description": "Propose one hyperparameter change.",
            "schema": tool_input_schema(HParamAnswer),
            "strict": True,
        },
    }
    assert "tools" not in request.body


def test_a_reply_without_usage_is_counted_by_copilot_and_marked(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_json(GOOD_ANSWER, prompt_tokens=None)

    reply = make_openai().structured(
        role="assessor", model=MODEL, system="You tune training runs.", prompt="Gradients explode at lr 0.1." * 40,
        schema=HParamAnswer, tool_name=TOOL, tool_description="Propose one hyperparameter change.",
    )

    usage = reply.usage
    assert usage.estimated
    # The request carries the 1,160-character prompt and the schema; the reply is the answer's JSON.
    assert usage.input_tokens > 1_160 // 4 and 0 < usage.output_tokens < usage.input_tokens


def test_the_api_key_comes_from_the_variable_the_settings_name(
    server: FakeOpenAI, make_openai: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_LLM_KEY", "sk-lab-123")
    server.queue_json(GOOD_ANSWER)

    propose(make_openai(api_key_env="LAB_LLM_KEY"))

    assert server.requests[0].headers["authorization"] == "Bearer sk-lab-123"


def test_a_rate_limited_request_is_retried(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_error(429, "Rate limit reached", retry_after="0")
    server.queue_json(GOOD_ANSWER)

    assert propose(make_openai(max_retries=1)) == HParamAnswer.model_validate(GOOD_ANSWER)
    assert len(server.requests) == 2


def test_server_errors_after_all_retries_make_the_provider_unavailable(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_error(500, "CUDA out of memory", times=3)

    with pytest.raises(ProviderUnavailable) as raised:
        propose(make_openai(max_retries=2))

    assert len(server.requests) == 3
    assert raised.value.message == f"{server.api_url}/chat/completions answered 500 after 3 attempt(s): CUDA out of memory"


def test_a_reply_that_is_not_json_is_asked_again_once(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_json("Sure! I would switch to Adam.", prompt_tokens=100, completion_tokens=10)
    server.queue_json(GOOD_ANSWER, prompt_tokens=150, completion_tokens=30)

    reply = make_openai().structured(
        role="assessor", model=MODEL, system="", prompt="Gradients explode.",
        schema=HParamAnswer, tool_name=TOOL, tool_description="Propose one change.",
    )

    assert reply.value == HParamAnswer.model_validate(GOOD_ANSWER)
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (250, 40)
    _, second = server.requests
    user, assistant, correction = second.body["messages"]
    assert user == {"role": "user", "content": "Gradients explode."}
    assert assistant == {"role": "assistant", "content": "Sure! I would switch to Adam."}
    assert correction["role"] == "user" and f"no JSON object for '{TOOL}'" in correction["content"]


def test_a_reply_failing_the_schema_is_sent_back_with_the_error(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_json(OUT_OF_RANGE_ANSWER)
    server.queue_json(GOOD_ANSWER)

    assert propose(make_openai()) == HParamAnswer.model_validate(GOOD_ANSWER)

    correction = server.requests[1].body["messages"][-1]
    assert "change.lr: Input should be less than or equal to 10" in correction["content"]


def test_two_bad_replies_give_a_clear_advisor_error(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_json(OUT_OF_RANGE_ANSWER)
    server.queue_json(OUT_OF_RANGE_ANSWER)

    with pytest.raises(AdvisorError) as raised:
        propose(make_openai())

    assert not isinstance(raised.value, ProviderUnavailable)
    assert len(server.requests) == 2
    assert "\n" not in raised.value.message
    assert raised.value.message.startswith(f"the model {MODEL} at {server.api_url} gave no valid '{TOOL}' answer")


def test_a_slow_reply_hits_the_timeout_without_a_retry(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    reply_delay_s = 6.0
    server.queue_json(GOOD_ANSWER, delay_s=reply_delay_s)
    provider = make_openai(timeout_s=1)

    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as raised:
        propose(provider)

    assert time.monotonic() - started < reply_delay_s  # gave up before the reply was due
    assert len(server.requests) == 1
    assert raised.value.message == f"the model {MODEL} at {server.api_url}/chat/completions did not answer within the 1 s timeout"


def test_a_server_without_response_format_gets_a_forced_tool_call(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_error(400, "response_format type json_schema is not supported by this server")
    server.queue_tool_call(TOOL, GOOD_ANSWER)
    server.queue_tool_call(TOOL, GOOD_ANSWER)
    provider = make_openai()

    assert propose(provider) == HParamAnswer.model_validate(GOOD_ANSWER)
    assert propose(provider) == HParamAnswer.model_validate(GOOD_ANSWER)

    refused, fallback, remembered = server.requests
    assert "response_format" in refused.body
    for request in (fallback, remembered):
        assert "response_format" not in request.body
        assert request.body["tool_choice"] == {"type": "function", "function": {"name": TOOL}}
        [tool] = request.body["tools"]
        assert tool["function"]["name"] == TOOL
        assert tool["function"]["parameters"] == tool_input_schema(HParamAnswer)


def test_a_bad_tool_call_is_answered_by_a_tool_message(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_error(400, "Unknown parameter: response_format")
    server.queue_tool_call(TOOL, OUT_OF_RANGE_ANSWER)
    server.queue_tool_call(TOOL, GOOD_ANSWER)

    assert propose(make_openai()) == HParamAnswer.model_validate(GOOD_ANSWER)

    *_, assistant, tool_result = server.requests[2].body["messages"]
    [call] = assistant["tool_calls"]
    assert tool_result["role"] == "tool" and tool_result["tool_call_id"] == call["id"]
    assert "change.lr" in tool_result["content"]


def test_other_refusals_are_not_mistaken_for_a_missing_feature(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_error(400, "Input validation error: `temperature` must be strictly positive")

    with pytest.raises(AdvisorError) as raised:
        propose(make_openai())

    assert len(server.requests) == 1
    assert raised.value.message.endswith(f"refused the request for model {MODEL} (400): Input validation error: `temperature` must be strictly positive")


def test_a_conversation_past_the_context_is_an_unusable_answer_naming_the_fix(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    # llama-cpp-python's words, after OpenAI's.
    server.queue_error(400, "This model's maximum context length is 8192 tokens. However, you requested 8605 tokens (8605 in the messages, None in the completion).")

    with pytest.raises(UnusableAnswer) as raised:
        propose(make_openai())

    assert len(server.requests) == 1, "not retried: the same conversation cannot fit"
    assert "longer than its context" in raised.value.message and "--n_ctx" in raised.value.hint


def test_answers_are_capped_at_the_settings_output_tokens_and_sampled_at_its_temperature(
    server: FakeOpenAI, make_openai: MakeProvider
) -> None:
    server.queue_json(GOOD_ANSWER)
    server.queue_json(GOOD_ANSWER)

    propose(make_openai())
    propose(make_openai(max_output_tokens=None, temperature=0.0))

    first, second = (request.body for request in server.requests)
    assert first["max_tokens"] == 4096, "a small model must not run on to the end of its context"
    assert "max_tokens" not in second, "None leaves it to the server"
    assert "temperature" not in first, "None leaves it to the server"
    assert second["temperature"] == 0.0, "0 is sent: answers that repeat"


def test_a_refused_key_names_the_variable_to_set(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_error(401, "Invalid API key")

    with pytest.raises(AdvisorError) as raised:
        propose(make_openai(api_key_env="LAB_LLM_KEY"))

    assert raised.value.message.endswith("refused the request (401): Invalid API key")
    assert "LAB_LLM_KEY" in raised.value.hint


def test_an_unknown_model_points_at_the_base_url_and_model(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_error(404, f"model '{MODEL}' not found")

    with pytest.raises(AdvisorError) as raised:
        propose(make_openai())

    assert f"has no model {MODEL}" in raised.value.message
    assert "advisor.openai.base_url" in raised.value.hint


def test_an_unreachable_server_makes_the_provider_unavailable() -> None:
    with FakeOpenAI() as stopped:
        base_url = stopped.api_url  # nothing listens there once the server stops
    provider = OpenAICompatProvider(OpenAISettings(base_url=base_url, max_retries=0))

    with pytest.raises(ProviderUnavailable, match=f"cannot reach the OpenAI-compatible server at {base_url}"):
        propose(provider)
    provider.close()


def test_text_returns_the_content_and_its_usage(server: FakeOpenAI, make_openai: MakeProvider) -> None:
    server.queue_json("Accuracy rose from 10% to 91%.", prompt_tokens=70, completion_tokens=12)

    reply = make_openai().text(role="reporter", model=MODEL, system="Write the report.", prompt="Run summary.")

    assert reply.text == "Accuracy rose from 10% to 91%."
    assert reply.usage.latency_s >= 0.0  # measured: the call's wall time
    assert reply.usage.model_copy(update={"latency_s": 0.0}) == TokenUsage(provider="openai", model=MODEL, role="reporter", input_tokens=70, output_tokens=12)
    [request] = server.requests
    assert "response_format" not in request.body and "tools" not in request.body


def test_the_factory_builds_the_openai_provider_from_settings(server: FakeOpenAI, tmp_path: Path) -> None:
    settings = load_settings({"advisor": {"openai": {"base_url": server.api_url}}}, config_dir=tmp_path)
    server.queue_json("Healthy.")

    provider = make_provider("openai", settings)

    assert isinstance(provider, OpenAICompatProvider)
    assert provider.text(role="reporter", model=MODEL, system="", prompt="Report.").text == "Healthy."
    provider.close()
