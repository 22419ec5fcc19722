"""Trials inside a real session: the trainer held at a fork, the advisor's fix measured against the
unchanged run, and an accepted winner continuing from its trial's end state."""

from __future__ import annotations

from pathlib import Path

from copilot.advisor.schemas import ArchitectureProposal, Verdict
from copilot.advisor.trials.runner import INCUMBENT
from copilot.events import HParamsApplied, RunStarted, StepBatch
from copilot.session.controller import Session
from tests.history.repos import git
from tests.session.conftest import TINY_TRIALS, run_until, tiny_settings


def test_a_crash_fix_is_trialled_and_the_accepted_winner_continues_from_its_trials_end(project: Path) -> None:
    settings = tiny_settings(project, trials=TINY_TRIALS)
    session = Session.start(settings, str(project / "broken_cnn.py"), run_name="trialled")
    announced: list[str] = []
    session.on_trials = announced.append
    try:
        run_until(session, lambda _seen: session.due_assessment() == "error" and session.trainer_state == "crashed")
        turn = session.assess("error")

        proposal = turn.proposal
        assert isinstance(proposal, ArchitectureProposal) and proposal.trials is not None
        report = proposal.trials
        assert announced and announced[0].startswith("trialling 1 candidate beside the unchanged run: 2 arms x 6 steps")
        assert report.winner == "c1" and report.budget_steps == 6
        unchanged, fix = report.arm(INCUMBENT), report.arm("c1")
        assert unchanged.status == "failed" and "shapes cannot be multiplied" in unchanged.message
        assert fix.status == "measured" and [p.trial_step for p in fix.points] == [2, 4, 6]
        assert fix.checkpoint and Path(fix.checkpoint).is_file()

        decision = session.decide(Verdict(decision="accept"))
        assert decision.accepted and "continues from its trial's end (6 trial steps kept)" in decision.message
        # The winner's training is the run's own now: its swap (round 1) is in the run's record, and
        # a new trainer resumes from its end checkpoint, kept in the run's checkpoints.
        events = run_until(session, lambda seen: any(isinstance(e, StepBatch) and e.records[-1].step > 6 for e in seen))
        # Nothing had trained to fork from, so the fix's trial started from its own file; the round is marked at step 0.
        marked = [e for e in events if isinstance(e, HParamsApplied)]
        assert marked and (marked[0].round, marked[0].step) == (1, 0)
        assert '"hparams_applied"' in session.run.metrics.read_text()
        started = [e for e in events if isinstance(e, RunStarted)]
        assert started and started[-1].model.has_residual and started[-1].resumed_from_epoch is not None
        assert (session.run.checkpoints / Path(fix.checkpoint).name).is_file()

        message = git(project, "log", "-1", "--format=%B", session.history.branch)
        assert "measured: unchanged" in message and "winner: " in message and "unchanged run: " in message
    finally:
        session.stop()
    note = session.rounds()[-1].results
    assert note is not None and note.trial is not None and note.trial.steps == 6 and note.trial.val_loss is not None
