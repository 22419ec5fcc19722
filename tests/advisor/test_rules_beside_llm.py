"""Where an LLM advises, the offline rules' own proposal stands beside its proposal in the
trial, and in its place when the LLM's path made none: a weak model costs an arm, never the run.

The LLM is a scripted provider behind the real `build_advisor` (so the roles are the ones
a user's settings make); the run is `write_run`'s, at chance with vanishing gradients, for
which the rules propose a new architecture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot.advisor.factory import build_advisor
from copilot.advisor.graph import PendingProposal
from copilot.advisor.llm.roles import AssessorAnswer
from copilot.advisor.schemas import ArchitectureProposal, HParamProposal
from copilot.advisor.snapshot import build_snapshot
from copilot.advisor.workflow import AdvisorSession
from copilot.config import Settings, load_settings
from copilot.run_folder import RunFolder
from tests.advisor.scripted import (
    PASSED,
    WRONG_INPUT_CODE,
    ScriptedChecker,
    ScriptedProvider,
    code_answer,
    hparam_answer,
    write_run,
)
from tests.advisor.test_graph import ScriptedTrials


@pytest.fixture
def run(tmp_path: Path) -> RunFolder:
    return write_run(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({"advisor": {"provider": "openai", "max_fix_rounds": 1}}, config_dir=tmp_path)


def assessed(route: str) -> AssessorAnswer:
    return AssessorAnswer(health="critical", findings=[], route=route, confidence=0.7, summary="Something is wrong.")


def open_session(run: RunFolder, settings: Settings, replies: list[object], trials: ScriptedTrials) -> AdvisorSession:
    advisor = build_advisor(settings, providers={"openai": ScriptedProvider(replies)})
    # The LLM's module fails the sandbox; anything else (the rules' template) passes.
    return AdvisorSession.open(run, advisor, settings, check_code=ScriptedChecker(otherwise=PASSED), trial_with=trials)


def test_the_rules_proposal_stands_in_when_the_llm_s_code_fails_every_fix_round(run: RunFolder, settings: Settings) -> None:
    trials = ScriptedTrials(winner="c1")
    replies = [assessed("architecture"), code_answer(WRONG_INPUT_CODE), code_answer(WRONG_INPUT_CODE)]
    with open_session(run, settings, replies, trials) as session:
        pending = session.assess(build_snapshot(run))

    assert isinstance(pending, PendingProposal), "the run gets the rules' fix, not nothing"
    candidate, *fillers = trials.candidates
    assert isinstance(candidate, ArchitectureProposal) and candidate.code != WRONG_INPUT_CODE
    assert all(isinstance(filler, HParamProposal) for filler in fillers)  # the rules' next changes, as ever
    assert pending.proposal.code == candidate.code and pending.proposal.trials.winner == "c1"
    assert any(
        notice.startswith("the LLM made no proposal (the new model still fails the sandbox after 1 fix rounds")
        and notice.endswith("the offline rules' proposal stands in its place")
        for notice in pending.diagnosis.notices
    )


def test_the_rules_proposal_is_trialled_beside_the_llm_s_and_wins_when_it_measures_better(
    run: RunFolder, settings: Settings
) -> None:
    trials = ScriptedTrials(winner="c2")
    with open_session(run, settings, [assessed("hyperparameters"), hparam_answer()], trials) as session:
        pending = session.assess(build_snapshot(run))

    llm, rules, *fillers = trials.candidates
    assert isinstance(llm, HParamProposal) and llm.after.optimizer == "Adam"
    assert isinstance(rules, ArchitectureProposal), "the rules' own route (a new model) is measured too"
    assert rules.start_from == llm.start_from, "one fork for every arm: the rules' change starts where the LLM's does"
    assert 1 + 1 + len(fillers) <= settings.trials.max_candidates
    assert isinstance(pending, PendingProposal) and pending.proposal.code == rules.code


def test_without_trials_the_llm_s_proposal_goes_to_the_gate_and_the_rules_check_nothing(run: RunFolder, tmp_path: Path) -> None:
    settings = load_settings({"advisor": {"provider": "openai"}, "trials": {"enabled": False}}, config_dir=tmp_path)
    trials = ScriptedTrials(winner="c1")
    checker = ScriptedChecker(otherwise=PASSED)
    advisor = build_advisor(settings, providers={"openai": ScriptedProvider([assessed("hyperparameters"), hparam_answer()])})
    with AdvisorSession.open(run, advisor, settings, check_code=checker, trial_with=trials) as session:
        pending = session.assess(build_snapshot(run))

    assert isinstance(pending, PendingProposal) and isinstance(pending.proposal, HParamProposal)
    assert pending.proposal.trials.status == "not_trialled"
    assert checker.checked == [], "no sandbox run for a rules' proposal that nothing would measure"
