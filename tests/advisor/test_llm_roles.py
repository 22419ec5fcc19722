"""LLMRoles' prompts and models per role, and the LLM roles driving the real workflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot.advisor.factory import build_advisor
from copilot.advisor.graph import PendingProposal, diagnosis_with_notices
from copilot.advisor.ledger import read_ledger
from copilot.advisor.llm.providers.base import ProviderUnavailable, UnusableAnswer
from copilot.advisor.llm.roles import AssessorAnswer, LLMRoles
from copilot.advisor.offline.advisor import OfflineAdvisor
from copilot.advisor.schemas import Diagnosis, Evidence, Finding, Verdict
from copilot.advisor.snapshot import TrainingSnapshot, build_snapshot
from copilot.advisor.workflow import Accepted, AdvisorSession
from copilot.config import Settings, load_settings
from tests.advisor.scripted import (
    FORWARD_FAILURE,
    PASSED,
    ScriptedChecker,
    ScriptedProvider,
    code_answer,
    diagnosis,
    hparam_answer,
    write_run,
)

STRONG_MODEL = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
FAST_MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"advisor": {"provider": "bedrock", "coder": {"model": "coder-xl"}}}, config_dir=tmp_path)


@pytest.fixture
def snapshot(tmp_path: Path) -> TrainingSnapshot:
    return build_snapshot(write_run(tmp_path))


def evidenced_finding() -> Finding:
    return Finding(what="vanishing gradients", where="fc1", evidence=[Evidence(metric="grad_norm", value=3e-8, threshold=1e-7)], why="fc1 does not learn")


def test_assessor_gets_the_snapshot_and_findings_without_evidence_are_dropped_with_a_notice(settings, snapshot):
    unsupported = Finding(what="bad vibes", evidence=[], why="it feels slow")
    provider = ScriptedProvider(
        [AssessorAnswer(health="critical", findings=[evidenced_finding(), unsupported], route="architecture", confidence=0.7, summary="fc1 is stuck")]
    )
    reply = LLMRoles(provider, settings).assess(snapshot)

    assert [finding.what for finding in reply.value.findings] == ["vanishing gradients"]
    assert reply.value.route == "architecture" and reply.value.notices == []
    assert reply.notices == ("1 finding(s) without evidence were dropped",)
    [request] = provider.requests
    assert (request.role, request.model, request.tool_name) == ("assessor", STRONG_MODEL, "report_diagnosis")
    assert snapshot.to_prompt(include_source=False) in request.prompt
    assert "class TinyNet" not in request.prompt, "the assessor reads measurements, not the source"
    assert [usage.role for usage in reply.usage] == ["assessor"]


def test_hyperparameter_prompt_lists_ranges_and_the_reason_an_answer_was_sent_back(settings, snapshot):
    provider = ScriptedProvider([{"summary": "Adam", "rationale": "stable", "change": {"optimizer": "Adam", "lr": 0.001}}])
    reply = LLMRoles(provider, settings).propose_hparams(snapshot, diagnosis("hyperparameters"), "lr 50 is above 10")

    assert reply.value.change.changes() == {"optimizer": "Adam", "lr": 0.001}
    [request] = provider.requests
    assert request.tool_name == "propose_hyperparameters"
    assert "lr: float (>= 1e-07, <= 10)" in request.prompt
    assert "lr 50 is above 10" in request.prompt
    assert "vanishing gradients" in request.prompt, "the diagnosis is passed on"


def test_coder_gets_the_source_and_the_contract_with_its_own_model(settings, snapshot):
    provider = ScriptedProvider([code_answer()])
    LLMRoles(provider, settings).write_architecture(snapshot, diagnosis("architecture"), None)

    [request] = provider.requests
    assert (request.role, request.model, request.tool_name) == ("coder", "coder-xl", "write_model_module")
    assert "class TinyNet(nn.Module)" in request.prompt
    assert "class: TinyNet" in request.prompt
    assert "shape [batch, 3, 8, 8]" in request.prompt and "output: shape [8, 4]" in request.prompt
    assert "allowed imports: torch, math" in request.prompt
    assert "loss_function" in request.system


def test_fixer_gets_the_failed_code_and_the_report_on_the_fast_model(settings, snapshot):
    failed = code_answer("broken code")
    provider = ScriptedProvider([code_answer()])
    LLMRoles(provider, settings).fix_architecture(snapshot, failed, FORWARD_FAILURE)

    [request] = provider.requests
    assert (request.role, request.model, request.tool_name) == ("checker", FAST_MODEL, "fix_model_module")
    assert "broken code" in request.prompt and "mat1 and mat2 shapes cannot be multiplied" in request.prompt
    assert '"stage": "forward"' in request.prompt


def test_reporter_writes_free_text_on_the_fast_model(settings, snapshot):
    provider = ScriptedProvider(["# Report\nAccuracy stayed at 0.25."])
    reply = LLMRoles(provider, settings).write_report(snapshot, diagnosis("finish", health="healthy"))
    assert reply.value.startswith("# Report")
    [request] = provider.requests
    assert (request.role, request.model, request.tool_name) == ("reporter", FAST_MODEL, None)


def test_llm_roles_drive_the_workflow_across_a_restart_and_every_call_s_tokens_reach_the_ledger(tmp_path, settings):
    run = write_run(tmp_path)
    provider = ScriptedProvider(
        [
            AssessorAnswer(health="critical", findings=[evidenced_finding()], route="hyperparameters", confidence=0.6, summary="SGD too hot"),
            hparam_answer("keep it", optimizer="SGD", lr=0.1),  # changes nothing: sent back once
            hparam_answer(),
        ]
    )
    with AdvisorSession.open(run, LLMRoles(provider, settings), settings, check_code=ScriptedChecker()) as session:
        pending = session.assess(build_snapshot(run))
    assert isinstance(pending, PendingProposal)

    provider_after_restart = ScriptedProvider([])  # any request would fail: the script is empty
    restarted = LLMRoles(provider_after_restart, settings)
    with AdvisorSession.open(run, restarted, settings, check_code=ScriptedChecker()) as session:
        assert session.pending() == pending
        outcome = session.decide(Verdict(decision="accept"))

    assert provider_after_restart.requests == []
    assert isinstance(outcome, Accepted) and outcome.proposal.after.optimizer == "Adam"
    assert len(provider.requests) == 3
    assert "which the run already uses" in provider.requests[2].prompt
    [entry] = read_ledger(run)
    assert [(usage.role, usage.input_tokens) for usage in entry.tokens] == [
        (request.role, len(request.prompt) // 4) for request in provider.requests
    ]


def test_the_offline_default_is_the_rule_engine_itself(tmp_path):
    assert isinstance(build_advisor(load_settings(config_dir=tmp_path)), OfflineAdvisor)


def test_each_role_goes_to_its_configured_provider(tmp_path, snapshot):
    settings = load_settings({"advisor": {"coder": {"provider": "bedrock"}}}, config_dir=tmp_path)
    provider = ScriptedProvider([code_answer()])
    advisor = build_advisor(settings, providers={"bedrock": provider})

    assessed = advisor.assess(snapshot)
    assert provider.requests == [] and assessed.usage == (), "the assessor stayed offline"
    written = advisor.write_architecture(snapshot, assessed.value, None)
    assert written.value == code_answer()
    assert [(request.role, request.model) for request in provider.requests] == [("coder", STRONG_MODEL)]
    assert advisor.name == "assessor=offline, coder=scripted, checker=offline, reporter=offline"


def test_an_unavailable_provider_is_replaced_by_the_rules_for_that_call_with_a_notice(tmp_path, snapshot):
    settings = load_settings({"advisor": {"provider": "bedrock"}}, config_dir=tmp_path)
    down = ProviderUnavailable("Bedrock is unavailable after 4 attempt(s): ThrottlingException", "retry later")
    provider = ScriptedProvider([down, hparam_answer()])
    advisor = build_advisor(settings, providers={"bedrock": provider})

    assessed = advisor.assess(snapshot)
    assert assessed.value == OfflineAdvisor().assess(snapshot).value
    assert assessed.notices == (
        "scripted was unavailable for the assessor (Bedrock is unavailable after 4 attempt(s): ThrottlingException); "
        "the offline rules answered instead",
    )
    proposed = advisor.propose_hparams(snapshot, assessed.value, None)
    assert proposed.notices == () and proposed.value == hparam_answer(), "the next call tries the provider again"


def test_a_model_with_no_usable_answer_is_replaced_by_the_rules_for_that_call(tmp_path, snapshot):
    settings = load_settings({"advisor": {"provider": "openai"}}, config_dir=tmp_path)
    overflow = UnusableAnswer("the conversation with smollm2 is longer than its context", "raise --n_ctx")
    provider = ScriptedProvider([overflow])
    advisor = build_advisor(settings, providers={"openai": provider})

    written = advisor.write_architecture(snapshot, OfflineAdvisor().assess(snapshot).value, None)

    assert written.value.code, "the rules wrote the module"
    assert written.notices == (
        "scripted gave no usable answer as the coder (the conversation with smollm2 is longer than its context); "
        "the offline rules answered instead",
    )


def test_the_fallback_notice_reaches_the_human_at_the_gate_and_the_ledger(tmp_path):
    run = write_run(tmp_path)
    settings = load_settings({"advisor": {"assessor": {"provider": "bedrock"}}}, config_dir=tmp_path)
    provider = ScriptedProvider([ProviderUnavailable("Bedrock is throttled", "retry later")])
    advisor = build_advisor(settings, providers={"bedrock": provider})
    accept_any = ScriptedChecker(otherwise=PASSED)

    with AdvisorSession.open(run, advisor, settings, check_code=accept_any) as session:
        pending = session.assess(build_snapshot(run))
        assert isinstance(pending, PendingProposal)
        session.decide(Verdict(decision="reject", reason="not now"))

    notice = "scripted was unavailable for the assessor (Bedrock is throttled); the offline rules answered instead"
    assert pending.diagnosis.notices == [notice]
    assert read_ledger(run)[0].diagnosis.notices == [notice]


def test_a_notice_given_by_two_calls_reaches_the_human_once():
    # The assessor role both assesses and proposes hyperparameters: a provider that is down
    # for both calls gives the same notice twice.
    down = "bedrock was unavailable for the assessor (cannot reach Bedrock); the offline rules answered instead"
    dropped = "1 finding(s) without evidence were dropped"
    diagnosis = Diagnosis(health="warning", route="hyperparameters", notices=[dropped])
    shown = diagnosis_with_notices({"diagnosis": diagnosis, "notices": [down, dropped, down]})
    assert shown.notices == [dropped, down]


def _unbounded(node: object, path: str = "") -> list[str]:
    """Where a schema lets a model write without end: strings without maxLength, lists without maxItems."""
    if isinstance(node, list):
        return [found for item in node for found in _unbounded(item, path)]
    if not isinstance(node, dict):
        return []
    here = []
    if node.get("type") == "string" and "maxLength" not in node and "enum" not in node:
        here.append(path)
    if node.get("type") == "array" and "maxItems" not in node:
        here.append(path)
    for key, value in node.items():
        child = f"{path}.{key}" if key not in ("properties", "items", "anyOf") else path
        here.extend(_unbounded(value, child))
    return here


def test_the_answers_schemas_bound_all_a_model_writes_but_the_code_and_validation_does_not_enforce_the_bounds() -> None:
    from copilot.advisor.llm.providers.base import tool_input_schema
    from copilot.advisor.schemas import ArchitectureAnswer, HParamAnswer

    # A server that decodes by the schema (llama.cpp's grammar) stops a small model at these bounds,
    # where it would repeat itself to its token cap and end in broken JSON (SmolLM2-135M did).
    assert _unbounded(tool_input_schema(AssessorAnswer)) == []
    assert _unbounded(tool_input_schema(HParamAnswer)) == []
    assert _unbounded(tool_input_schema(ArchitectureAnswer)) == [".code"], "a whole module has no fixed length"
    assert tool_input_schema(AssessorAnswer)["properties"]["findings"]["maxItems"] == 4

    # Asked of the model, not enforced: the rules' findings and a strong model's longer answer still validate.
    long_why = "why " * 200
    finding = Finding(what="x", evidence=[Evidence(metric="grad_norm", value=1.0)] * 5, why=long_why)
    answer = AssessorAnswer(health="critical", findings=[finding] * 6, route="architecture", confidence=0.9, summary=long_why)
    assert len(answer.findings) == 6 and answer.findings[0].why == long_why
    # Nor are numbers bounded by a grammar: a confidence past 0..1 is clamped rather than sent back.
    assert AssessorAnswer.model_validate({**answer.model_dump(), "confidence": -0.3}).confidence == 0.0
    assert AssessorAnswer.model_validate({**answer.model_dump(), "confidence": 7}).confidence == 1.0
