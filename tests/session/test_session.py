"""Sessions with the real trainer, the offline advisor and a real git repository.

Each test starts real trainer processes on a few dozen shapes samples. The trainer is
paused while a verdict is given (`until_due`), because a tiny epoch is over before a
sandbox check is: without the pause the budget could run out before a swap lands.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from copilot.advisor.ledger import read_ledger
from copilot.advisor.schemas import ArchitectureProposal, HParamChange, HParamProposal, Verdict
from copilot.events import (
    CheckpointWritten,
    EpochSummary,
    Event,
    Finished,
    HParamsApplied,
    ModelSwapped,
    RunStarted,
    StateChanged,
    StepBatch,
    TrainerError,
)
from copilot.errors import AdvisorError, ConfigError
from copilot.history.messages import summary_of
from copilot.metrics_file import read_metrics
from copilot.session.controller import AdvisorTurn, Session
from copilot.training.checkpoints import load_checkpoint
from tests.history.repos import git
from tests.session.conftest import CountingAdvisor, run_until, tiny_settings, until_due

pytestmark = pytest.mark.timeout(600)


def first(events: list[Event], kind: type) -> Event | None:
    return next((event for event in events if isinstance(event, kind)), None)


def stepped_past(step: int):
    def done(events: list[Event]) -> bool:
        return any(isinstance(e, StepBatch) and any(r.step > step for r in e.records) for e in events)

    return done


def test_accept_commits_the_round_swaps_the_model_and_training_goes_on(project: Path) -> None:
    user_head = git(project, "rev-parse", "HEAD")
    settings = tiny_settings(project, assess_every=2)
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="accept")
    try:
        assert until_due(session) == "schedule"
        turn = session.assess("schedule")
        proposal = turn.proposal
        assert isinstance(proposal, ArchitectureProposal) and proposal.sandbox.ok
        assert turn.diagnosis.findings, "the diagnosis cites what it found"

        decision = session.decide(Verdict(decision="accept"))
        assert decision.accepted and decision.round is not None and decision.round.round == 1
        assert session.round == 1 and session.pending() is None

        # A commit on the experiment branch; the user's branch and checkout untouched.
        branch = session.history.branch
        subject = git(project, "log", "-1", "--format=%s", branch).strip()
        assert subject.startswith("arch(r1): ") and proposal.summary[:30] in subject
        message = git(project, "log", "-1", "--format=%B", branch)
        assert "Copilot-Verdict: accepted" in message and "Copilot-Before: " in message and "epoch=2" in message
        assert git(project, "show", f"{branch}:bad_cnn.py") == proposal.code
        assert git(project, "rev-parse", "HEAD") == user_head
        assert git(project, "status", "--porcelain") == ""
        ledger = read_ledger(session.run)
        assert ledger[-1].verdict == Verdict(decision="accept")
        assert ledger[-1].commit == decision.round.sha

        # The trainer reports the new architecture, and trains it once resumed.
        events = run_until(session, lambda seen: first(seen, ModelSwapped) is not None)
        swapped = first(events, ModelSwapped)
        assert swapped.round == 1 and swapped.model.has_normalization and swapped.model.has_residual
        assert swapped.model.total_params == proposal.sandbox.param_count
        session.resume_training()
        # One wait for both: the step and the epoch's end may come in the same poll.
        run_until(
            session,
            lambda seen: stepped_past(swapped.step)(seen) and any(isinstance(e, EpochSummary) and e.round == 1 for e in seen),
        )
    finally:
        session.stop()

    # What the round measured went into its git note when the session stopped.
    results = session.rounds()[-1].results
    assert results is not None and results.epochs_trained >= 1 and results.checkpoint
    # Its time is what its epochs trained (each leaves its pauses out), not the clock since the
    # commit, which counted the minutes a proposal waited and the trainer stood held.
    round_epochs = [e for e in read_metrics(session.run.metrics) if isinstance(e, EpochSummary) and e.round == 1 and e.epoch <= results.epoch]
    assert round_epochs and results.training_s == pytest.approx(sum(e.duration_s for e in round_epochs), abs=0.06)
    report = session.write_report().read_text(encoding="utf-8")
    assert subject in report and "```diff" in report and "## Curves" in report
    assert f"over {results.epochs_trained} epochs (" in report and "of training)" in report.split("## Rounds")[1]


def test_reject_records_the_reason_and_commits_nothing(project: Path) -> None:
    session = Session.start(tiny_settings(project), str(project / "bad_cnn.py"), run_name="reject")
    try:
        until_due(session)
        turn = session.assess("schedule")
        decision = session.decide(Verdict(decision="reject", reason="keep the model small"))
        assert not decision.accepted and decision.round is None and decision.retry is None
        entry = read_ledger(session.run)[-1]
        assert entry.proposal == turn.proposal
        assert entry.verdict == Verdict(decision="reject", reason="keep the model small")
        assert [info.round for info in session.rounds()] == [0]
        assert session.pending() is None and session.round == 0
        session.resume_training()  # paused by until_due: every step from now on is new
        run_until(session, lambda seen: first(seen, StepBatch) is not None)
    finally:
        session.stop()


def test_a_crashed_model_is_fixed_and_a_new_trainer_trains_it(project: Path) -> None:
    session = Session.start(tiny_settings(project), str(project / "broken_cnn.py"), run_name="crash")
    try:
        events = run_until(session, lambda seen: session.due_assessment() == "error" and session.trainer_state == "crashed")
        error = first(events, TrainerError)
        assert "shapes cannot be multiplied" in error.message
        assert first(events, RunStarted) is None  # it failed its first forward pass

        turn = session.assess("error")
        assert isinstance(turn.proposal, ArchitectureProposal) and turn.proposal.sandbox.ok
        decision = session.decide(Verdict(decision="accept"))
        assert decision.accepted and "new trainer" in decision.message

        events = run_until(session, lambda seen: first(seen, ModelSwapped) is not None and stepped_past(0)(seen))
        started = first(events, RunStarted)
        assert started is not None and started.model.class_name == "BrokenCNN"
        assert first(events, ModelSwapped).round == 1
        assert session.trainer_state == "running"
    finally:
        session.stop()


def test_a_hyperparameter_round_resumes_a_trainer_paused_on_nan(project: Path) -> None:
    session = Session.start(tiny_settings(project), str(project / "exploding.py"), run_name="nan")
    try:
        trigger = until_due(session)
        assert trigger == "nonfinite" and session.paused_on_nonfinite
        session.pause()  # the user's too (as `until_due` does when the pause event comes late): accepting the fix still resumes
        turn = session.assess(trigger)
        proposal = turn.proposal
        assert isinstance(proposal, HParamProposal) and proposal.after.lr < 10.0
        decision = session.decide(Verdict(decision="accept"))
        assert decision.accepted and "resumes" in decision.message

        hparams_file = git(project, "show", f"{session.history.branch}:exploding.hparams.toml")
        assert f"lr = {proposal.after.lr!r}" in hparams_file

        # One wait over every event: the resumed step, and a second NaN pause after it, may come
        # in the same poll as HParamsApplied, and a later wait would never see that step.
        def resumed_and_stepped(seen: list[Event]) -> bool:
            applied = first(seen, HParamsApplied)
            return applied is not None and stepped_past(applied.step)(seen)

        events = run_until(session, resumed_and_stepped)
        applied = first(events, HParamsApplied)
        assert applied.round == 1 and applied.hparams == proposal.after
        assert any(isinstance(e, StateChanged) and e.state == "running" for e in events)
    finally:
        session.stop()


def test_an_edited_hyperparameter_round_is_described_as_applied_and_credits_the_edit(project: Path) -> None:
    session = Session.start(tiny_settings(project), str(project / "exploding.py"), run_name="edit-hp")
    try:
        trigger = until_due(session)
        proposal = session.assess(trigger).proposal
        assert isinstance(proposal, HParamProposal)
        lr = proposal.after.lr * 1.5
        edited = HParamChange(**{**proposal.change.changes(), "lr": lr})
        decision = session.decide(Verdict(decision="edit", edited_change=edited))
        assert decision.accepted and decision.round is not None

        branch = session.history.branch
        subject = git(project, "log", "-1", "--format=%s", branch).strip()
        message = git(project, "log", "-1", "--format=%B", branch)
        assert subject.startswith("hparams(r1): ") and f"lr 10.0 -> {lr}" in subject, subject
        assert proposal.summary not in subject
        assert f"Copilot-Edited-By: user (lr {proposal.after.lr} -> {lr})" in message
        assert "Copilot-Verdict: edited" in message
        assert f"lr = {lr!r}" in git(project, "show", f"{branch}:exploding.hparams.toml")
        assert f"lr 10.0 -> {lr}" in decision.message and session.rounds()[-1].summary == summary_of(subject)
    finally:
        session.stop()
    assert subject in session.write_report().read_text(encoding="utf-8")


def test_a_stopped_session_reopens_with_its_pending_proposal_and_asks_nobody(project: Path) -> None:
    settings = tiny_settings(project)
    first_advisor = CountingAdvisor()
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="reopen", roles=first_advisor)
    until_due(session)
    turn = session.assess("schedule")
    assert first_advisor.calls
    session.stop()
    assert session.run.latest_checkpoint() is not None

    reopened_advisor = CountingAdvisor()
    reopened = Session.reopen(settings, session.run, roles=reopened_advisor)
    try:
        waiting = reopened.pending()
        assert waiting is not None and waiting.proposal == turn.proposal and waiting.diagnosis == turn.diagnosis
        assert reopened.due_assessment() is None  # one proposal at a time

        decision = reopened.decide(Verdict(decision="accept"))
        assert decision.accepted and decision.round.round == 1
        events = run_until(reopened, lambda seen: first(seen, ModelSwapped) is not None)
        resumed = first(events, RunStarted)
        assert resumed is not None and resumed.resumed_from_epoch is not None and resumed.resumed_from_epoch >= 2
        assert reopened_advisor.calls == []
    finally:
        reopened.stop()
    assert reopened.trainer_state == "stopped"


def test_stop_never_leaves_a_trainer_behind(project: Path) -> None:
    session = Session.start(tiny_settings(project), str(project / "bad_cnn.py"), run_name="stop")
    run_until(session, lambda seen: first(seen, RunStarted) is not None)
    session.stop(timeout=5.0)
    events = session.poll_events(0.1)
    assert any(isinstance(e, Finished) and e.reason == "stopped" for e in events)
    assert session.trainer_state == "stopped"
    assert session.run.latest_checkpoint() is not None
    session.stop()  # twice is fine


def _accept_the_first_round(session: Session) -> None:
    """The advisor's first proposal accepted as r1, its model swapped in, and training going on."""
    until_due(session)
    session.assess("schedule")
    assert session.decide(Verdict(decision="accept")).round.round == 1
    run_until(session, lambda seen: first(seen, ModelSwapped) is not None)
    session.resume_training()


def test_undo_redo_and_rollback_move_the_trainer_with_the_branch(project: Path) -> None:
    original = (project / "bad_cnn.py").read_text()
    session = Session.start(_longer(tiny_settings(project)), str(project / "bad_cnn.py"), run_name="moves")
    try:
        _accept_the_first_round(session)
        run_until(session, _checkpoint_written(1, 1))  # r1 has weights of its own to go back to
        worktree_model = session.history.model_path_in_worktree()

        def restarted_as(round_number: int) -> RunStarted:
            """The trainer started again from a checkpoint, marked as round `round_number`."""
            marked = lambda seen: any(isinstance(e, HParamsApplied) and e.round == round_number for e in seen)  # noqa: E731
            return [e for e in run_until(session, marked) if isinstance(e, RunStarted)][-1]

        # Undo and redo go back to the round's checkpoint (its weights), not its code in today's weights.
        undone = session.undo()
        assert undone.round.round == 0 and session.round == 0 and "from r0's checkpoint" in undone.message
        assert worktree_model.read_text() == original
        back = restarted_as(0)
        assert back.resumed_from_epoch == 2 and not back.model.has_normalization

        redone = session.redo()
        assert redone.round.round == 1 and "from r1's checkpoint" in redone.message
        assert restarted_as(1).model.has_residual

        rolled = session.rollback(0).round
        assert (rolled.round, rolled.kind, rolled.rollback_to) == (2, "rollback", 0)
        assert worktree_model.read_text() == original
        # Round 0's checkpoint (taken when r1 was accepted) is where training continues.
        restarted = restarted_as(2)
        assert restarted.resumed_from_epoch == 2 and not restarted.model.has_normalization
    finally:
        session.stop()


class SlowToAnswer:
    """An advisor that answers only once the trainer has paused, as an LLM answers after a while;
    unheld, it would wait out its deadline. It finds nothing to change."""

    name = "slow"

    def __init__(self) -> None:
        from copilot.advisor.offline.advisor import OfflineAdvisor

        self.session: Session | None = None
        self._offline = OfflineAdvisor()

    def assess(self, snapshot):  # type: ignore[no-untyped-def]
        assert self.session is not None
        # Held at the epoch's end already, or by the Pause the assessment sent.
        run_until(self.session, lambda _seen: self.session.trainer_state == "paused")
        reply = self._offline.assess(snapshot)
        return reply.__class__(reply.value.model_copy(update={"route": "continue"}), reply.usage, reply.notices)


def test_training_holds_while_the_advisor_assesses_when_asked_and_goes_on_after(project: Path) -> None:
    settings = tiny_settings(project, hold_training_while_assessing=True)
    settings = settings.model_copy(
        update={"train": settings.train.model_copy(update={"hparams": {"batch_size": 16, "epochs": 200}})}
    )
    advisor = SlowToAnswer()
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="hold-assessing", roles=advisor)
    advisor.session = session
    try:
        found: list[str] = []
        before = run_until(session, lambda _seen: bool(found.append(session.due_assessment() or "") or found[-1]))
        last_step = max((r.step for e in before if isinstance(e, StepBatch) for r in e.records), default=0)

        outcome = session.assess(found[-1])  # returns only because the trainer paused for it

        assert outcome.diagnosis.route == "continue"
        run_until(session, lambda seen: any(isinstance(e, StateChanged) and e.state == "running" for e in seen))
        run_until(session, stepped_past(last_step))
        assert session.trainer_state == "running", "nothing to decide: training goes on at once"
    finally:
        session.stop()


def _accepted_at_the_first_assessment(project: Path, run_name: str) -> tuple[list[Event], int]:
    """A session held at each epoch's end (`hold_training_while_assessing`): its first assessment
    (epoch 2, the schedule) accepted as proposed, then trained to its end. Every event, and the
    step epoch 2 ended at."""
    session = Session.start(tiny_settings(project, hold_training_while_assessing=True), str(project / "bad_cnn.py"), run_name=run_name, max_rounds=1)
    try:
        found: list[str] = []
        seen = run_until(session, lambda _seen: bool(found.append(session.due_assessment() or "") or found[-1]))
        assessed_at = session.last_epoch
        assert found[-1] == "schedule" and assessed_at is not None and assessed_at.epoch == 2
        turn = session.assess(found[-1])
        assert isinstance(turn, AdvisorTurn) and turn.proposal.kind == "architecture"
        assert session.decide(Verdict(decision="accept")).accepted
        # As the headless loop does: asked after every poll, with its one round spent nothing is due.
        seen += run_until(
            session,
            lambda events: session.due_assessment() is None and any(isinstance(e, Finished) and e.reason == "epochs_done" for e in events),
        )
        return seen, assessed_at.step
    finally:
        session.stop()


def test_held_at_each_epochs_end_a_change_applies_where_it_was_assessed_and_runs_repeat_exactly(project: Path) -> None:
    events, assessed_step = _accepted_at_the_first_assessment(project, "held-1")

    # Epochs with nothing due went on by themselves; the one assessed waited for the verdict,
    # and the new model's first step is the first after the epoch the advisor saw.
    epochs = [e for e in events if isinstance(e, EpochSummary)]
    assert [e.epoch for e in epochs] == [1, 2, 3, 4, 5, 6]
    assert sum(1 for e in events if isinstance(e, StateChanged) and e.held_at_epoch_end) >= 5
    swapped = first(events, ModelSwapped)
    assert swapped is not None and swapped.step == assessed_step
    trained = [r.step for e in events if isinstance(e, StepBatch) for r in e.records]
    assert assessed_step + 1 in trained and not any(step > assessed_step for step in trained[: trained.index(assessed_step) + 1])
    assert all(e.round == 1 for e in epochs[2:])

    # So the same decisions give the same run: what a comparison of two headless runs relies on.
    again, _ = _accepted_at_the_first_assessment(project, "held-2")
    losses = [(e.epoch, e.train_loss, e.val_loss) for e in epochs]
    assert [(e.epoch, e.train_loss, e.val_loss) for e in again if isinstance(e, EpochSummary)] == losses


def _held_for_a_waiting_proposal(project: Path, run_name: str) -> tuple[Session, list[Event]]:
    """A long run whose first assessment's proposal waits for the human, the trainer held for it:
    the session (the caller stops it) and its events up to the hold."""
    settings = tiny_settings(project)
    settings = settings.model_copy(
        update={"train": settings.train.model_copy(update={"hparams": {"batch_size": 16, "epochs": 200}})}
    )
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name=run_name)
    try:
        found: list[str] = []
        run_until(session, lambda _seen: bool(found.append(session.due_assessment() or "") or found[-1]))
        session.assess(found[-1])
        return session, run_until(session, lambda seen: any(isinstance(e, StateChanged) and e.state == "paused" for e in seen))
    except BaseException:
        session.stop()
        raise


def test_training_holds_while_a_proposal_waits_and_goes_on_after_the_verdict(project: Path) -> None:
    session, held = _held_for_a_waiting_proposal(project, "hold")
    try:
        last_step = max((r.step for e in held if isinstance(e, StepBatch) for r in e.records), default=0)
        quiet = run_until(session, lambda _seen: True, timeout=1.5) + session.poll_events(1.0)
        assert not any(isinstance(e, StepBatch) for e in quiet), "no training while the human decides"
        assert session.trainer_state == "paused" and session.held_for_advisor

        session.decide(Verdict(decision="reject", reason="not now"))
        run_until(session, stepped_past(last_step))
        assert session.trainer_state == "running"
    finally:
        session.stop()


def test_a_pause_the_user_asks_for_while_a_proposal_holds_training_outlasts_the_verdict(project: Path) -> None:
    session, _held = _held_for_a_waiting_proposal(project, "user-pause")
    try:
        session.pause()
        assert not session.held_for_advisor, "the pause is the user's now"
        session.decide(Verdict(decision="reject", reason="not now"))
        # A resume sent with the verdict would reach the trainer before this checkpoint request.
        session.checkpoint_now()
        after = run_until(session, lambda seen: first(seen, CheckpointWritten) is not None)
        before_checkpoint = after[: after.index(first(after, CheckpointWritten))]
        assert not any(isinstance(e, StateChanged) and e.state == "running" for e in before_checkpoint)
        assert session.trainer_state == "paused"

        session.resume_training()
        run_until(session, lambda seen: any(isinstance(e, StateChanged) and e.state == "running" for e in seen))
    finally:
        session.stop()


def test_a_run_that_ended_resumes_with_more_epochs_and_refuses_fewer(project: Path) -> None:
    settings = tiny_settings(project, assess_every=100)
    settings = settings.model_copy(update={"train": settings.train.model_copy(update={"hparams": {"batch_size": 16, "epochs": 2}})})
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="more-epochs", roles=CountingAdvisor())
    try:
        ended = first(run_until(session, lambda seen: first(seen, Finished) is not None), Finished)
    finally:
        session.stop()
    assert ended is not None and (ended.reason, ended.epoch) == ("epochs_done", 2)

    with pytest.raises(ConfigError, match="--epochs 2 is not more than the 2 epochs the run has trained"):
        Session.reopen(settings, session.run, roles=CountingAdvisor(), epochs=2)
    reopened = Session.reopen(settings, session.run, roles=CountingAdvisor(), epochs=3)
    try:
        events = run_until(reopened, lambda seen: first(seen, Finished) is not None)
    finally:
        reopened.stop()
    finished = first(events, Finished)
    assert finished is not None and (finished.reason, finished.epoch) == ("epochs_done", 3)
    assert [event.epoch for event in events if isinstance(event, EpochSummary)] == [3]


def _longer(settings, epochs: int = 60, **advisor: object):
    """`settings` with an epoch budget the test never spends (and advisor settings changed)."""
    train = settings.train.model_copy(update={"hparams": {"batch_size": 16, "epochs": epochs}})
    return settings.model_copy(update={"train": train, "advisor": settings.advisor.model_copy(update=advisor)})


def test_a_proposal_training_went_on_past_is_withdrawn_and_the_advisor_looks_again(project: Path) -> None:
    settings = _longer(tiny_settings(project, assess_every=2))  # N: the schedule's 2 epochs
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="outrun")
    withdrawn: list[tuple[AdvisorTurn, str]] = []
    session.on_withdrawn = lambda turn, line: withdrawn.append((turn, line))
    try:
        assert until_due(session) == "schedule"
        turn = session.assess("schedule")
        assert isinstance(turn, AdvisorTurn) and turn.epoch is not None
        session.resume_training()  # the user's `p`: training goes on while the proposal waits

        events = run_until(session, lambda _seen: bool(withdrawn))
        [(gone, line)] = withdrawn
        assert gone is turn and session.pending() is None
        assert max(e.epoch for e in events if isinstance(e, EpochSummary)) > turn.epoch + 2
        reason = f"training went on past its evidence: epoch {turn.epoch + 3}, the proposal came at epoch {turn.epoch}"
        assert line == f"proposal withdrawn: {reason} (it was: {turn.proposal.summary})"
        entry = read_ledger(session.run)[-1]
        assert entry.proposal == turn.proposal and entry.verdict == Verdict(decision="withdrawn", reason=reason)
        assert [info.round for info in session.rounds()] == [0], "nothing was applied"

        # The advisor looks again: a trigger is due at once, and an assessment runs.
        assert session.due_assessment() in ("plateau", "schedule")
        again = session.assess("demand")
        assert isinstance(again, AdvisorTurn) and again.epoch > turn.epoch
        assert session.pending() is again
    finally:
        session.stop()


def test_a_rollback_withdraws_the_waiting_proposal_and_names_the_rollback(project: Path) -> None:
    settings = _longer(tiny_settings(project))
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="rolled")
    try:
        _accept_the_first_round(session)
        run_until(session, lambda seen: any(isinstance(e, EpochSummary) and e.round == 1 and (e.val_accuracy or 0) >= 0.05 for e in seen))
    finally:
        session.stop()

    # Continued with a target the new model meets: the advisor proposes to finish (the case).
    session = Session.reopen(_longer(settings, target_accuracy=0.05), session.run)
    withdrawn: list[str] = []
    session.on_withdrawn = lambda _turn, line: withdrawn.append(line)
    try:
        turn = session.assess("demand")
        assert isinstance(turn, AdvisorTurn) and turn.proposal.kind == "finish"

        info = session.rollback(0).round
        assert session.pending() is None
        reason = f"the model changed: rolled back to r0 (now {info.label})"
        assert withdrawn == [f"proposal withdrawn: {reason} (it was: {turn.proposal.summary})"]
        entry = read_ledger(session.run)[-1]
        assert entry.proposal == turn.proposal and entry.verdict == Verdict(decision="withdrawn", reason=reason)
        assert session.trainer_state != "stopped", "a withdrawn finish does not end the run"
        with pytest.raises(AdvisorError, match="no proposal is waiting"):
            session.decide(Verdict(decision="accept"))
        # The gate is free: the advisor may look again (whatever it finds for r0's model).
        try:
            session.assess("demand")
        except AdvisorError as error:
            assert "still waiting" not in error.message
    finally:
        session.stop()


def _checkpoint_written(round_number: int, epochs: int):
    """Done once round `round_number` has checkpointed at the end of `epochs` of its own epochs."""

    def done(events: list[Event]) -> bool:
        ends = [e.epoch for e in events if isinstance(e, CheckpointWritten) and e.round == round_number and e.path.endswith(".pt")]
        return len(set(ends)) >= epochs

    return done


def test_rollback_then_undo_never_rewrites_a_rounds_note_or_checkpoint_and_undo_restores_its_weights(project: Path) -> None:
    session = Session.start(_longer(tiny_settings(project)), str(project / "bad_cnn.py"), run_name="record")
    try:
        _accept_the_first_round(session)
        run_until(session, _checkpoint_written(1, 2))
        session.pause()
        run_until(session, lambda _seen: session.trainer_state == "paused")
        session.record_results()
        noted = session.history.round(1).results
        assert noted is not None and noted.checkpoint is not None and noted.epoch is not None
        assert not Path(noted.checkpoint).is_absolute(), "notes store paths relative to the run folder"
        r1_checkpoint = session.run.path / noted.checkpoint
        r1_bytes = hashlib.sha256(r1_checkpoint.read_bytes()).hexdigest()

        rolled = session.rollback(0)
        assert rolled.round.round == 2 and "checkpoint" in rolled.message
        session.resume_training()
        # Round 0's line trains past the epoch r1's checkpoint was written at: the same names again.
        run_until(session, lambda seen: any(isinstance(e, EpochSummary) and e.round == 2 and e.epoch > noted.epoch + 1 for e in seen))

        moved = session.undo()
        assert moved.round.round == 1 and session.round == 1
        assert moved.message == f"undone: the branch is at r1; training continues from r1's checkpoint {r1_checkpoint.name} (its weights)"
        saved = load_checkpoint(r1_checkpoint)
        events = run_until(session, lambda seen: any(isinstance(e, EpochSummary) and e.round == 1 for e in seen))
        restarted = [index for index, e in enumerate(events) if isinstance(e, RunStarted)][-1]
        assert events[restarted].resumed_from_epoch == saved.epoch
        first_steps = next(e for e in events[restarted:] if isinstance(e, StepBatch))
        assert first_steps.records[0].step == saved.step + 1, "training goes on from r1's checkpoint, not the weights before the undo"
        session.pause()
        run_until(session, lambda _seen: session.trainer_state == "paused")
        session.record_results()

        kept = session.history.round(1).results
        assert kept is not None and kept.final
        assert kept.model_copy(update={"final": None}) == noted, "r1's measured result is never rewritten"
        assert hashlib.sha256(r1_checkpoint.read_bytes()).hexdigest() == r1_bytes, "nor is its checkpoint"
        names = sorted(path.name for path in session.run.checkpoints.glob("*.pt"))
        assert len(names) == len(set(names)) and any("-2" in name for name in names), names
    finally:
        session.stop()
