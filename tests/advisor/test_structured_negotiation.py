"""Structured output negotiated with each kind of OpenAI-compatible server, over real HTTP.

Each server family (tests/advisor/fake_openai.py profiles) accepts a different subset of
forced tools, `response_format` json_schema and `json_object`; the provider must find the
first that works, keep it, say so once, and never retry a refusal.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from copilot.advisor.llm.providers.openai_compat import OpenAICompatProvider
from copilot.advisor.schemas import HParamAnswer
from copilot.config import OpenAISettings
from copilot.errors import AdvisorError
from tests.advisor.fake_openai import BARE, LLAMA_CPP, LLAMA_CPP_PYTHON, OLLAMA, VLLM, FakeOpenAI, ProfiledOpenAI, ServerProfile, structured_mode_of

TOOL = "propose_hparams"
ANSWER = {
    "summary": "Adam at lr 1e-3 instead of SGD at 0.1",
    "rationale": "Gradients explode at lr 0.1; Adam's per-parameter steps stay bounded.",
    "change": {"optimizer": "Adam", "lr": 0.001},
}


def ask(provider: OpenAICompatProvider):
    return provider.structured(
        role="assessor", model="local", system="You tune training runs.", prompt="Gradients explode at lr 0.1.",
        schema=HParamAnswer, tool_name=TOOL, tool_description="Propose one hyperparameter change.",
    )


@pytest.fixture
def serve() -> Iterator:
    servers: list[ProfiledOpenAI] = []
    providers: list[OpenAICompatProvider] = []

    def start(profile: ServerProfile, **settings: object) -> tuple[ProfiledOpenAI, OpenAICompatProvider]:
        server = ProfiledOpenAI(profile, ANSWER, TOOL)
        server.start()
        servers.append(server)
        provider = OpenAICompatProvider(OpenAISettings(base_url=server.api_url, **settings))
        providers.append(provider)
        return server, provider

    yield start
    for provider in providers:
        provider.close()
    for server in servers:
        server.stop()


@pytest.mark.parametrize(
    ("profile", "modes_tried", "kept"),
    [
        (VLLM, ["json_schema"], "json_schema"),
        (OLLAMA, ["json_schema"], "json_schema"),
        (LLAMA_CPP, ["json_schema", "tools"], "tools"),
        (LLAMA_CPP_PYTHON, ["json_schema", "tools"], "tools"),
        (BARE, ["json_schema", "tools", "json_object", "prompt"], "prompt"),
    ],
    ids=lambda value: value.name if isinstance(value, ServerProfile) else None,
)
def test_each_server_family_is_asked_in_the_first_mode_it_accepts_and_that_mode_is_kept(
    serve, profile: ServerProfile, modes_tried: list[str], kept: str
) -> None:
    server, provider = serve(profile)
    assert provider.label == "openai · structured output: auto, settled at the first call"

    first = ask(provider)
    second = ask(provider)

    assert first.value == second.value == HParamAnswer.model_validate(ANSWER)
    assert [structured_mode_of(request.body) for request in server.requests] == [*modes_tried, kept]
    assert provider.structured_mode == kept
    assert provider.label == f"openai · structured output: {kept}", "the header says the way it settled on"
    if len(modes_tried) > 1:
        [notice] = first.notices
        assert notice.endswith(f"copilot asks with {kept} for the rest of this run")
    else:
        assert first.notices == ()
    assert second.notices == ()  # said once, when the mode changed


def test_a_refusal_sent_as_a_500_is_not_retried(serve) -> None:
    server, provider = serve(LLAMA_CPP, max_retries=3)

    ask(provider)

    refused = [request for request in server.requests if structured_mode_of(request.body) == "json_schema"]
    assert len(refused) == 1


def test_the_schema_travels_in_the_prompt_where_the_server_does_not_enforce_it(serve) -> None:
    server, provider = serve(BARE)

    ask(provider)

    system_turn = server.requests[-1].body["messages"][0]
    assert system_turn["role"] == "system"
    assert system_turn["content"].startswith("You tune training runs.")
    assert '"change"' in system_turn["content"] and f"Answer as '{TOOL}'" in system_turn["content"]
    assert "response_format" not in server.requests[-1].body and "tools" not in server.requests[-1].body


def test_a_named_mode_is_used_as_it_is_and_its_refusal_names_the_setting(serve) -> None:
    server, provider = serve(LLAMA_CPP, structured="json_schema", max_retries=3)

    with pytest.raises(AdvisorError) as raised:
        ask(provider)

    assert len(server.requests) == 1
    assert 'advisor.openai.structured = "auto"' in raised.value.hint
    assert "\n" not in raised.value.message


def test_a_named_mode_skips_the_negotiation(serve) -> None:
    server, provider = serve(LLAMA_CPP, structured="json_object")
    assert provider.label == "openai · structured output: json_object"

    assert ask(provider).value == HParamAnswer.model_validate(ANSWER)
    [request] = server.requests
    assert request.body["response_format"]["type"] == "json_object"
    assert request.body["response_format"]["schema"]["properties"].keys() >= {"summary", "change"}


def test_overload_is_still_retried_with_the_servers_retry_after() -> None:
    with FakeOpenAI() as server:
        server.queue_error(503, "server overloaded", retry_after="0")
        server.queue_json(ANSWER)
        provider = OpenAICompatProvider(OpenAISettings(base_url=server.api_url, max_retries=2))
        try:
            reply = ask(provider)
        finally:
            provider.close()

    assert reply.value == HParamAnswer.model_validate(ANSWER)
    assert len(server.requests) == 2


def test_each_call_records_its_latency() -> None:
    delay_s = 0.2
    with FakeOpenAI() as server:
        server.queue_json(ANSWER, delay_s=delay_s)
        provider = OpenAICompatProvider(OpenAISettings(base_url=server.api_url))
        try:
            reply = ask(provider)
        finally:
            provider.close()

    assert reply.usage.latency_s >= delay_s  # the server held its answer that long: a lower bound, not a speed test
