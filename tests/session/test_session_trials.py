"""Trials inside a real session: the trainer held at a fork, the advisor's fix measured against the
unchanged run, and an accepted winner continuing from its trial's end state."""

from __future__ import annotations

import math
from pathlib import Path

from copilot.advisor.ledger import read_ledger
from copilot.advisor.schemas import ArchitectureProposal, HParamProposal, Verdict
from copilot.advisor.trials.describe import start_lines
from copilot.advisor.trials.runner import INCUMBENT
from copilot.events import CheckpointWritten, EpochSummary, HParamsApplied, RunStarted, StepBatch
from copilot.metrics_file import read_metrics
from copilot.run_folder import RunFolder
from copilot.session.controller import Session
from copilot.training.checkpoints import load_checkpoint
from tests.history.repos import git
from tests.session.conftest import EXPLODING_MODEL, SAMPLE_MODELS, TINY_TRIALS, run_until, tiny_settings, until_due


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
        # The ledger keeps every arm's validation curve, not only its end: `copilot show` draws it from there.
        entry = next(entry for entry in read_ledger(session.run) if entry.verdict is not None)
        assert entry.proposal.trials is not None and entry.proposal.trials.arm("c1").points == fix.points  # type: ignore[union-attr]
    finally:
        session.stop()
    note = session.rounds()[-1].results
    assert note is not None and note.trial is not None and note.trial.steps == 6 and note.trial.val_loss is not None


# The exploding model without its huge logits, under a one-cycle rate that warms up to 10: the first
# epochs learn, then the rising rate blows the loss up (measured: 3.09 at step 8, 3.86 at step 10,
# 66 at step 12, 1e5 by epoch 4).
RAMPING_MODEL = EXPLODING_MODEL.replace("1000.0 * ", "").replace(
    '"batch_size": 16, "epochs": 30}', '"momentum": 0.9, "batch_size": 16, "epochs": 30, "schedule": "one-cycle"}'
)


def _committed(project: Path, name: str, source: str) -> None:
    (project / name).write_text(source.lstrip(), encoding="utf-8")
    git(project, "add", name)
    git(project, "commit", "-q", "-m", f"add {name}")


def _first_step(folder: Path) -> int:
    return min(record.step for event in read_metrics(RunFolder(folder).metrics) if isinstance(event, StepBatch) for record in event.records)


def test_a_change_after_an_explosion_is_trialled_and_applied_from_the_checkpoint_before_it(project: Path) -> None:
    _committed(project, "ramping.py", RAMPING_MODEL)
    settings = tiny_settings(project, trials=TINY_TRIALS, assess_every=1000)
    settings = settings.model_copy(update={"train": settings.train.model_copy(update={"hparams": {}})})
    session = Session.start(settings, str(project / "ramping.py"), run_name="exploded")
    try:
        run_until(session, lambda seen: any(isinstance(e, EpochSummary) and e.epoch >= 4 for e in seen))
        turn = session.assess("demand")
        proposal = turn.proposal
        assert isinstance(proposal, HParamProposal), proposal
        start = proposal.start_from
        assert start is not None and start.checkpoint is not None and start.exploded_at is not None
        # The last checkpoint before the blow-up: a real one of the run, from before the step it blew up at.
        written = {Path(e.path): e for e in read_metrics(session.run.metrics) if isinstance(e, CheckpointWritten)}
        assert Path(start.checkpoint) in written and written[Path(start.checkpoint)].step == start.step < start.exploded_at
        assert start.step >= 4  # the run learned for an epoch or more first: not the run's start
        assert any(e.step >= start.exploded_at for e in written.values())  # later checkpoints were passed over
        lines = start_lines(proposal)
        assert lines == [f"applied from the checkpoint at step {start.step} (epoch {start.epoch}), before the loss exploded at step {start.exploded_at}: {start.evidence}"]
        assert "training loss" in start.evidence

        # Every arm forked from that checkpoint, the unchanged one too: the comparison stays paired.
        report = proposal.trials
        assert report is not None and report.status == "trialled", report
        for arm in report.arms:
            started = next(e for e in read_metrics(RunFolder(Path(arm.folders[0])).metrics) if isinstance(e, RunStarted))
            assert started.resumed_from_epoch == start.epoch, arm.arm
            assert _first_step(Path(arm.folders[0])) == start.step + 1, arm.arm
        assert report.winner == "c1", report.reason

        decision = session.decide(Verdict(decision="accept"))
        assert decision.accepted and "continues from its trial's end" in decision.message
        run_until(session, lambda seen: any(isinstance(e, RunStarted) for e in seen))
        # The run's record is the trial's from the checkpoint on: its exploded epochs after it are superseded.
        epochs = {e.epoch: e for e in read_metrics(session.run.metrics) if isinstance(e, EpochSummary)}
        redone = [epoch for epoch in epochs.values() if epoch.step > start.step]
        assert redone and all(epoch.round == 1 for epoch in redone), [(e.epoch, e.step, e.round, e.attempt, e.train_loss) for e in epochs.values()]
        assert "applied from the checkpoint at step" in git(project, "log", "-1", "--format=%B", session.history.branch)
    finally:
        session.stop()


def test_an_accepted_init_edit_starts_the_run_over_from_the_new_initialisation(project: Path) -> None:
    _committed(project, "tiny_init_tanh.py", (SAMPLE_MODELS / "tiny_init_tanh.py").read_text(encoding="utf-8"))
    session = Session.start(tiny_settings(project), str(project / "tiny_init_tanh.py"), run_name="reinit")
    try:
        trigger = until_due(session)
        proposal = session.assess(trigger).proposal
        assert isinstance(proposal, ArchitectureProposal) and "xavier_normal_" in proposal.code, proposal.summary
        assert proposal.carry_weights is False
        assert proposal.start_from is not None and proposal.start_from.checkpoint is None
        assert start_lines(proposal)[0].startswith("weights re-initialised: the edit changes their initial scale")
        assert start_lines(proposal)[1] == "applied from the run's start (the model file's fresh weights): its weights are re-initialised, so the run starts over"

        decision = session.decide(Verdict(decision="accept"))
        assert decision.accepted and "from the run's start" in decision.message
        events = run_until(session, lambda seen: any(isinstance(e, CheckpointWritten) and e.round == 1 for e in seen))
        started = [e for e in events if isinstance(e, RunStarted)]
        assert started and started[-1].resumed_from_epoch is None  # a fresh start, not a resume of the tiny weights
        written = next(e for e in events if isinstance(e, CheckpointWritten) and e.round == 1)
        weights = load_checkpoint(Path(written.path)).model_state
    finally:
        session.stop()
    # After a few steps the hidden layers still have Glorot's scale (gain 5/3 for tanh), not the old 0.001.
    glorot = 5 / 3 * math.sqrt(2 / (256 + 256))
    for name in ("body.3.weight", "body.11.weight", "body.19.weight"):
        assert abs(weights[name].std().item() - glorot) < 0.25 * glorot, name
