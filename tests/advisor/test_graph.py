"""The advisor's LangGraph workflow with scripted roles: routes, the human gate, resume, ledger."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from copilot.advisor import graph as graph_module
from copilot.advisor.graph import PendingProposal
from copilot.advisor.ledger import read_ledger
from copilot.advisor.schemas import ArchitectureProposal, HParamChange, HParamProposal, Verdict
from copilot.advisor.snapshot import build_snapshot
from copilot.advisor.workflow import Accepted, AdvisorSession, Continued, Failed, FinishReported, Rejected, Withdrawn
from copilot.config import Settings, load_settings
from copilot.errors import AdvisorError
from copilot.run_folder import RunFolder
from tests.advisor.scripted import (
    FORWARD_FAILURE,
    GOOD_CODE,
    PASSED,
    SHAPE_FAILURE,
    WRONG_INPUT_CODE,
    WRONG_SHAPE_CODE,
    ScriptedChecker,
    ScriptedRoles,
    code_answer,
    hparam_answer,
    write_run,
)


@pytest.fixture
def run(tmp_path: Path) -> RunFolder:
    return write_run(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(config_dir=tmp_path)


def open_session(run: RunFolder, roles: ScriptedRoles, settings: Settings, checker: ScriptedChecker | None = None) -> AdvisorSession:
    return AdvisorSession.open(run, roles, settings, check_code=checker or ScriptedChecker())


def test_hyperparameter_proposal_waits_at_the_gate_and_accept_records_it(run, settings):
    roles = ScriptedRoles("hyperparameters", hparams=[hparam_answer()])
    with open_session(run, roles, settings) as session:
        pending = session.assess(build_snapshot(run))
        assert isinstance(pending, PendingProposal)
        assert isinstance(pending.proposal, HParamProposal)
        assert (pending.proposal.before.optimizer, pending.proposal.after.optimizer) == ("SGD", "Adam")
        assert pending.proposal.after.lr == 1e-3 and pending.proposal.after.batch_size == 16
        assert not run.ledger.exists(), "nothing is written before the human decides"
        assert session.pending() == pending

        outcome = session.decide(Verdict(decision="accept"))

    assert isinstance(outcome, Accepted)
    assert outcome.proposal == pending.proposal
    [entry] = read_ledger(run)
    assert entry == outcome.entry
    assert entry.verdict == Verdict(decision="accept") and entry.trigger == "demand" and entry.epoch == 3
    assert [usage.role for usage in entry.tokens] == ["assessor", "assessor"]
    assert dict(roles.calls) == {"assess": 1, "propose_hparams": 1}


def test_rejection_reason_reaches_the_next_assessment(run, settings):
    roles = ScriptedRoles("hyperparameters", hparams=[hparam_answer(), hparam_answer("SGD with momentum", momentum=0.9)])
    with open_session(run, roles, settings) as session:
        session.assess(build_snapshot(run))
        outcome = session.decide(Verdict(decision="reject", reason="Adam overfits this data set"))
        assert isinstance(outcome, Rejected)
        assert outcome.verdict.reason == "Adam overfits this data set"

        next_snapshot = build_snapshot(run, previous=read_ledger(run))
        assert "Adam overfits this data set" in next_snapshot.to_prompt()
        second = session.assess(next_snapshot)
    assert isinstance(second, PendingProposal) and second.proposal.after.momentum == 0.9


def test_a_change_already_rejected_is_sent_back_and_never_proposed_again(run, settings):
    # The second answer is the rejected one again, the rate off by a rounding; the third is new.
    repeat = hparam_answer(optimizer="Adam", lr=1.004e-3)
    roles = ScriptedRoles("hyperparameters", hparams=[hparam_answer(), repeat, hparam_answer("momentum", momentum=0.9)])
    with open_session(run, roles, settings) as session:
        session.assess(build_snapshot(run))
        session.decide(Verdict(decision="reject"))
        second = session.assess(build_snapshot(run, previous=read_ledger(run)))

    assert isinstance(second, PendingProposal) and second.proposal.change.changes() == {"momentum": 0.9}
    assert "the same change was rejected after round 0 in this run" in roles.feedback[2]


def test_a_withdrawn_proposal_closes_the_gate_is_recorded_and_may_be_proposed_again(run, settings):
    # The same change twice: withdrawn the first time, it is no rejection, so the second is no repeat.
    roles = ScriptedRoles("hyperparameters", hparams=[hparam_answer(), hparam_answer()])
    with open_session(run, roles, settings) as session:
        first = session.assess(build_snapshot(run))
        assert first.epoch == 3
        with pytest.raises(AdvisorError, match="copilot's, not a verdict"):
            session.decide(Verdict(decision="withdrawn", reason="by hand"))
        outcome = session.withdraw("the model changed: rolled back to r0")
        assert isinstance(outcome, Withdrawn) and outcome.proposal == first.proposal
        assert session.pending() is None

        second = session.assess(build_snapshot(run, previous=read_ledger(run)))
        assert isinstance(second, PendingProposal) and second.proposal.change == first.proposal.change

    [entry] = read_ledger(run)
    assert entry.verdict == Verdict(decision="withdrawn", reason="the model changed: rolled back to r0")
    assert entry.proposal == first.proposal
    assert roles.feedback[1:] == [None], "the withdrawn change was not sent back as one tried before"


def test_a_module_already_applied_is_no_proposal_comments_and_formatting_aside(run, settings):
    reformatted = "# a comment the first version did not have\n" + GOOD_CODE.replace("\n\n\n", "\n\n")
    checker = ScriptedChecker()
    roles = ScriptedRoles("architecture", code=[code_answer(), code_answer(reformatted)])
    with open_session(run, roles, settings, checker) as session:
        session.assess(build_snapshot(run))
        session.decide(Verdict(decision="accept"))
        again = session.assess(build_snapshot(run, previous=read_ledger(run)))

    assert isinstance(again, Failed)
    assert "repeats a module applied as round 1" in again.message
    assert checker.checked == [GOOD_CODE], "a repeat is refused before the sandbox runs it"
    assert len(read_ledger(run)) == 1


def test_pending_proposal_survives_a_restart_without_calling_the_advisor_again(run, settings):
    first_roles = ScriptedRoles("architecture", code=[code_answer()])
    with open_session(run, first_roles, settings) as session:
        pending = session.assess(build_snapshot(run))
    assert isinstance(pending.proposal, ArchitectureProposal)

    # A new process: new roles, new checker, new graph, the same SQLite file.
    restarted_roles, restarted_checker = ScriptedRoles("architecture"), ScriptedChecker()
    with open_session(run, restarted_roles, settings, restarted_checker) as session:
        assert session.pending() == pending
        outcome = session.decide(Verdict(decision="accept"))

    assert isinstance(outcome, Accepted) and outcome.proposal.code == GOOD_CODE
    assert sum(restarted_roles.calls.values()) == 0
    assert restarted_checker.checked == []
    assert [entry.verdict.decision for entry in read_ledger(run)] == ["accept"]


def test_checkpoint_holds_our_models_and_reads_back_without_unregistered_types(run, settings, caplog):
    with open_session(run, ScriptedRoles("hyperparameters", hparams=[hparam_answer()]), settings) as session:
        session.assess(build_snapshot(run))
    caplog.set_level(logging.WARNING)
    with open_session(run, ScriptedRoles(), settings) as session:
        pending = session.pending()
    assert isinstance(pending, PendingProposal) and isinstance(pending.proposal, HParamProposal)
    assert not [record for record in caplog.records if "unregistered" in record.getMessage() or "Blocked" in record.getMessage()]


def test_edited_code_that_passes_the_sandbox_is_accepted(run, settings):
    edited = GOOD_CODE.replace("hidden: int = 16", "hidden: int = 16  # reviewed")
    checker = ScriptedChecker({edited: PASSED})
    with open_session(run, ScriptedRoles("architecture", code=[code_answer()]), settings, checker) as session:
        pending = session.assess(build_snapshot(run))
        outcome = session.decide(Verdict(decision="edit", edited_code=edited))

    assert isinstance(outcome, Accepted)
    assert outcome.proposal.code == edited and outcome.proposal.sandbox.ok
    assert checker.checked == [GOOD_CODE, edited]
    [entry] = read_ledger(run)
    assert entry.proposal == pending.proposal, "the ledger keeps what the advisor proposed"
    assert entry.verdict.edited_code == edited, "and what the human changed"


def test_edited_code_that_fails_the_sandbox_is_asked_again_with_the_report(run, settings):
    checker = ScriptedChecker()
    with open_session(run, ScriptedRoles("architecture", code=[code_answer()]), settings, checker) as session:
        session.assess(build_snapshot(run))
        again = session.decide(Verdict(decision="edit", edited_code=WRONG_SHAPE_CODE))
        assert isinstance(again, PendingProposal)
        assert again.edit_report == SHAPE_FAILURE
        assert "fails the sandbox" in again.edit_problem and "shape" in again.edit_problem
        assert again.proposal.code == GOOD_CODE
        assert not run.ledger.exists()
        assert session.pending() == again

        outcome = session.decide(Verdict(decision="accept"))
    assert isinstance(outcome, Accepted) and outcome.proposal.code == GOOD_CODE
    assert checker.checked == [GOOD_CODE, WRONG_SHAPE_CODE]


def test_an_edit_without_an_edited_version_is_asked_again(run, settings):
    with open_session(run, ScriptedRoles("architecture", code=[code_answer()]), settings) as session:
        session.assess(build_snapshot(run))
        again = session.decide(Verdict(decision="edit", edited_change=HParamChange(lr=0.01)))
    assert isinstance(again, PendingProposal)
    assert again.edit_problem == "an edit of this proposal needs edited_code"


def test_edited_hyperparameters_replace_the_proposed_change(run, settings):
    with open_session(run, ScriptedRoles("hyperparameters", hparams=[hparam_answer()]), settings) as session:
        session.assess(build_snapshot(run))
        outcome = session.decide(Verdict(decision="edit", edited_change=HParamChange(optimizer="SGD", momentum=0.9, lr=0.01)))
    assert isinstance(outcome, Accepted)
    assert (outcome.proposal.after.optimizer, outcome.proposal.after.momentum, outcome.proposal.after.lr) == ("SGD", 0.9, 0.01)


def test_fixer_repairs_code_that_fails_the_sandbox(run, settings):
    roles = ScriptedRoles(
        "architecture",
        code=[code_answer(WRONG_INPUT_CODE)],
        fixes=[code_answer(WRONG_SHAPE_CODE), code_answer(GOOD_CODE)],
    )
    checker = ScriptedChecker()
    with open_session(run, roles, settings, checker) as session:
        pending = session.assess(build_snapshot(run))

    assert isinstance(pending, PendingProposal)
    assert pending.proposal.code == GOOD_CODE and pending.proposal.fix_rounds == 2
    assert roles.reports_seen == [FORWARD_FAILURE, SHAPE_FAILURE], "each failure went to the fixer"
    assert checker.checked == [WRONG_INPUT_CODE, WRONG_SHAPE_CODE, GOOD_CODE]
    assert [usage.role for usage in pending.tokens] == ["assessor", "coder", "checker", "checker"]


def test_fixer_stops_after_max_fix_rounds_with_a_clear_failure(run, tmp_path):
    settings = load_settings({"advisor": {"max_fix_rounds": 2}}, config_dir=tmp_path)
    roles = ScriptedRoles(
        "architecture",
        code=[code_answer(WRONG_INPUT_CODE)],
        fixes=[code_answer(WRONG_SHAPE_CODE), code_answer(WRONG_INPUT_CODE), code_answer(GOOD_CODE)],
    )
    with open_session(run, roles, settings) as session:
        outcome = session.assess(build_snapshot(run))
        assert session.pending() is None

    assert isinstance(outcome, Failed)
    assert roles.calls["fix_architecture"] == 2
    assert "after 2 fix rounds" in outcome.message and "forward" in outcome.message
    assert outcome.report == FORWARD_FAILURE
    assert not run.ledger.exists()


def test_out_of_range_hyperparameters_are_sent_back_once_with_the_reason(run, settings):
    # model_construct skips validation, as a careless implementation of the roles might.
    out_of_range = hparam_answer().model_copy(update={"change": HParamChange.model_construct(lr=50.0)})
    roles = ScriptedRoles("hyperparameters", hparams=[out_of_range, hparam_answer()])
    with open_session(run, roles, settings) as session:
        pending = session.assess(build_snapshot(run))

    assert isinstance(pending, PendingProposal) and pending.proposal.after.lr == 1e-3
    assert roles.feedback[0] is None
    assert "lr" in roles.feedback[1] and "less than or equal to 10" in roles.feedback[1]


def test_hyperparameters_still_invalid_after_one_retry_fail_clearly(run, settings):
    no_change = hparam_answer("keep SGD", optimizer="SGD", lr=0.1)
    roles = ScriptedRoles("hyperparameters", hparams=[no_change, no_change, hparam_answer()])
    with open_session(run, roles, settings) as session:
        outcome = session.assess(build_snapshot(run))

    assert isinstance(outcome, Failed)
    assert roles.calls["propose_hparams"] == 2
    assert "which the run already uses" in roles.feedback[1]
    assert "no valid hyperparameter change after 2 answers" in outcome.message


def test_healthy_training_finishes_with_a_report_and_no_gate(run, settings):
    roles = ScriptedRoles("finish", report="# Report\nLoss fell from 2.3 to 0.1.")
    with open_session(run, roles, settings) as session:
        outcome = session.assess(build_snapshot(run))
        assert session.pending() is None

    assert isinstance(outcome, FinishReported)
    assert outcome.proposal.report.startswith("# Report")
    [entry] = read_ledger(run)
    assert entry.proposal.kind == "finish" and entry.verdict is None


def test_continue_makes_no_proposal_no_gate_and_no_ledger_line(run, settings):
    roles = ScriptedRoles("continue")
    with open_session(run, roles, settings) as session:
        outcome = session.assess(build_snapshot(run))
        assert session.pending() is None

    assert isinstance(outcome, Continued)
    assert outcome.diagnosis.route == "continue" and outcome.tokens  # what the assessment cost is still counted
    assert roles.calls["write_report"] == 0 and roles.calls["propose_hparams"] == 0
    assert read_ledger(run) == []


def test_one_proposal_at_a_time(run, settings):
    with open_session(run, ScriptedRoles("hyperparameters", hparams=[hparam_answer()]), settings) as session:
        with pytest.raises(AdvisorError, match="no proposal is waiting"):
            session.decide(Verdict(decision="accept"))
        session.assess(build_snapshot(run))
        with pytest.raises(AdvisorError, match="still waiting for your decision"):
            session.assess(build_snapshot(run))


def test_a_crash_after_the_ledger_write_is_recovered_without_a_second_line(run, settings, monkeypatch):
    with open_session(run, ScriptedRoles("hyperparameters", hparams=[hparam_answer()]), settings) as session:
        session.assess(build_snapshot(run))

    real_append = graph_module.append_entry

    def append_then_crash(run_folder, entry):
        real_append(run_folder, entry)
        raise KeyboardInterrupt  # the process dies before the step's checkpoint is written

    monkeypatch.setattr(graph_module, "append_entry", append_then_crash)
    with open_session(run, ScriptedRoles(), settings) as session, pytest.raises(KeyboardInterrupt):
        session.decide(Verdict(decision="accept"))
    monkeypatch.setattr(graph_module, "append_entry", real_append)

    roles_after_restart = ScriptedRoles()
    with open_session(run, roles_after_restart, settings) as session:
        assert session.pending() is None
        outcome = session.recover()
        assert session.recover() is None, "nothing left to finish"

    assert isinstance(outcome, Accepted) and outcome.proposal.after.optimizer == "Adam"
    assert len(run.ledger.read_text().splitlines()) == 1
    assert sum(roles_after_restart.calls.values()) == 0


def test_in_memory_session_writes_nothing_in_the_run_folder(run, settings):
    before = sorted(path.name for path in run.path.rglob("*"))
    session = AdvisorSession.in_memory(ScriptedRoles("finish"), settings, check_code=ScriptedChecker())
    outcome = session.assess(build_snapshot(run))
    assert isinstance(outcome, FinishReported)
    assert sorted(path.name for path in run.path.rglob("*")) == before


@pytest.mark.slow
def test_real_sandbox_drives_the_fixer_and_checks_the_human_s_edit(run, settings):
    roles = ScriptedRoles("architecture", code=[code_answer(WRONG_INPUT_CODE)], fixes=[code_answer(GOOD_CODE)])
    with AdvisorSession.open(run, roles, settings) as session:  # the default checker: the real sandbox
        pending = session.assess(build_snapshot(run))
        assert isinstance(pending, PendingProposal)
        assert pending.proposal.code == GOOD_CODE and pending.proposal.fix_rounds == 1
        assert pending.proposal.sandbox.ok and pending.proposal.sandbox.output_shape[1:] == (4,)
        [failure] = roles.reports_seen
        assert failure.stage == "forward" and "mat1 and mat2" in failure.message

        again = session.decide(Verdict(decision="edit", edited_code=WRONG_SHAPE_CODE))
        assert isinstance(again, PendingProposal)
        assert again.edit_report is not None and again.edit_report.stage == "shape"

        outcome = session.decide(Verdict(decision="accept"))
    assert isinstance(outcome, Accepted) and outcome.proposal.code == GOOD_CODE


# --------------------------------------------------------------------------- trials before the gate


class ScriptedTrials:
    """Stands in for the session's trial runner (tested on real runs in test_trials.py): names the winner."""

    def __init__(self, winner: str | None) -> None:
        self.winner = winner
        self.candidates: list = []

    def __call__(self, candidates, snapshot):  # type: ignore[no-untyped-def]
        from copilot.advisor.schemas import TrialReport

        self.candidates = list(candidates)
        return TrialReport(status="trialled", winner=self.winner, reason="scripted", budget_steps=100)


def test_the_measured_winner_is_what_waits_at_the_gate_beside_the_rules_next_candidates(run, settings):
    roles = ScriptedRoles("hyperparameters", hparams=[hparam_answer()])
    trials = ScriptedTrials(winner="c2")
    with AdvisorSession.open(run, roles, settings, check_code=ScriptedChecker(), trial_with=trials) as session:
        pending = session.assess(build_snapshot(run))

    assert isinstance(pending, PendingProposal)
    first, *others = trials.candidates
    assert first.after.optimizer == "Adam" and 1 <= len(others) <= settings.trials.max_candidates - 1
    assert all(isinstance(other, HParamProposal) and other.after != first.after for other in others)
    assert pending.proposal.trials is not None and pending.proposal.trials.winner == "c2"
    assert pending.proposal.change == others[0].change  # the second candidate won, so it is the proposal


def test_a_proposal_that_no_trial_backs_is_recorded_as_tried_without_reaching_the_gate(run, settings):
    roles = ScriptedRoles("hyperparameters", hparams=[hparam_answer()])
    with AdvisorSession.open(run, roles, settings, check_code=ScriptedChecker(), trial_with=ScriptedTrials(None)) as session:
        outcome = session.assess(build_snapshot(run))
        assert session.pending() is None

    assert isinstance(outcome, Rejected) and outcome.verdict.reason.startswith("tried, no gain")
    [entry] = read_ledger(run)
    assert entry.proposal.trials is not None and entry.proposal.trials.winner is None


def test_with_trials_off_the_proposal_waits_marked_not_trialled(run, tmp_path):
    settings = load_settings({"trials": {"enabled": False}}, config_dir=tmp_path)
    trials = ScriptedTrials(winner="c1")
    roles = ScriptedRoles("hyperparameters", hparams=[hparam_answer()])
    with AdvisorSession.open(run, roles, settings, check_code=ScriptedChecker(), trial_with=trials) as session:
        pending = session.assess(build_snapshot(run))

    assert not trials.candidates
    assert pending.proposal.trials.status == "not_trialled" and "--no-trials" in pending.proposal.trials.reason
