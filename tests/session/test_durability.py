"""No accepted decision is lost, and the notebook tells the truth: sessions killed and resumed.

Real copilot processes are SIGKILLed at the worst moments (tests/session/die_at_accept.py),
real trainers are killed from outside, and the run is continued with `Session.reopen`, as
`copilot resume` does. Each test reads what is on disk afterwards: the ledger, the
experiment branch and its notes, and metrics.jsonl.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from copilot.advisor.ledger import proposal_id, read_ledger
from copilot.advisor.schemas import Verdict
from copilot.events import CheckpointWritten, EpochSummary, Finished, LogLine, ModelSwapped, RunStarted, StepBatch
from copilot.metrics_file import read_metrics
from copilot.run_folder import RunFolder
from copilot.session.controller import Session
from tests.history.repos import git
from tests.session.conftest import WAIT_S, CountingAdvisor, run_until, tiny_settings, until_due
from tests.waiting import poll_until

pytestmark = pytest.mark.timeout(600)

REPOSITORY = Path(__file__).resolve().parents[2]


def die_at_accept(project: Path, run_name: str, when: str) -> None:
    """Run a session in its own process that dies by SIGKILL while applying an accepted verdict."""
    dying = subprocess.run(
        [sys.executable, "-m", "tests.session.die_at_accept", str(project), "bad_cnn.py", run_name, when],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=WAIT_S * 2,
    )
    assert dying.returncode == -signal.SIGKILL, dying.stderr[-2000:]


def round_commits(project: Path, branch: str) -> list[str]:
    return git(project, "log", "--format=%s", f"main..{branch}").splitlines()


@pytest.mark.parametrize("when", ["before-commit", "after-commit"])
def test_an_accepted_verdict_cut_short_by_sigkill_is_completed_once_on_resume(project: Path, when: str) -> None:
    die_at_accept(project, "killed", when)
    settings = tiny_settings(project)
    run = RunFolder((settings.runs_dir / "killed").resolve())
    accepted = read_ledger(run)[-1]
    assert accepted.verdict == Verdict(decision="accept") and accepted.commit is None, "accepted, with no commit yet"

    advisor = CountingAdvisor()
    session = Session.reopen(settings, run, roles=advisor)
    try:
        assert session.pending() is None, "an accepted proposal is never offered again"
        completed = read_ledger(run)[-1]
        assert completed.commit is not None and session.round == 1
        subjects = round_commits(project, session.history.branch)
        assert len(subjects) == 2 and subjects[0].startswith("arch(r1): "), subjects  # r1 on top of r0, once
        message = git(project, "log", "-1", "--format=%B", session.history.branch)
        assert f"Copilot-Proposal: {proposal_id(accepted)}" in message
        events = run_until(session, lambda seen: any(isinstance(e, ModelSwapped) and e.round == 1 for e in seen))
        assert next(e for e in events if isinstance(e, ModelSwapped)).model.has_normalization
        assert advisor.calls == []
    finally:
        session.stop()

    again = Session.reopen(settings, run, roles=CountingAdvisor())
    try:
        assert again.pending() is None
        assert len(round_commits(project, again.history.branch)) == 2, "a second resume commits nothing"
        assert [entry.commit for entry in read_ledger(run)] == [completed.commit]
    finally:
        again.stop()


def wait_for_file_text(path: Path, text: str) -> None:
    """Until `text` is in the file the trainer writes (it runs on while the session is not polled)."""
    poll_until(lambda: text in (path.read_text(encoding="utf-8") if path.exists() else ""), f"{text!r} never appeared in {path}", WAIT_S)


def test_a_rounds_note_never_records_the_previous_models_numbers(project: Path) -> None:
    # Tiny epochs, no hold: the old model finishes its whole budget while the verdict is given.
    session = Session.start(
        tiny_settings(project, hold_training_while_waiting=False), str(project / "bad_cnn.py"), run_name="note"
    )
    try:
        until_due(session)
        session.resume_training()
        session.assess("schedule")
        wait_for_file_text(session.run.metrics, '"reason":"epochs_done"')
        decision = session.decide(Verdict(decision="accept"))
        assert decision.accepted and decision.round.round == 1 and "training has ended" in decision.message
        events = run_until(session, lambda seen: any(isinstance(e, Finished) for e in seen))
        late = [e for e in events if isinstance(e, EpochSummary)]
        assert late and all(e.round == 0 for e in late), "round 0's model went on training after the commit"
    finally:
        session.stop()
    r1 = session.rounds()[1]
    assert r1.results is None, f"r1 never trained, yet its note says {r1.results}"


def test_a_trainer_killed_from_outside_resumes_from_its_checkpoint_without_an_advisor_round(project: Path) -> None:
    settings = tiny_settings(project)
    settings = settings.model_copy(update={"train": settings.train.model_copy(update={"hparams": {"batch_size": 16, "epochs": 8}})})
    advisor = CountingAdvisor()
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="outside", roles=advisor)
    try:
        run_until(session, lambda seen: any(isinstance(e, CheckpointWritten) for e in seen))
        os.kill(session.trainer_pid, signal.SIGKILL)
        events = run_until(session, lambda seen: any(isinstance(e, RunStarted) for e in seen))
        notice = next(e for e in events if isinstance(e, LogLine) and "killed by SIGKILL" in e.message)
        assert "resumed from its last checkpoint" in notice.message
        resumed = next(e for e in events if isinstance(e, RunStarted))
        assert resumed.resumed_from_epoch is not None
        assert session.due_assessment() != "error", "a kill is a fault to recover from, not a diagnosis"
        run_until(session, lambda seen: any(isinstance(e, Finished) for e in seen))
    finally:
        session.stop()
    assert advisor.calls == [] and read_ledger(session.run) == []

    # The resumed trainer replayed steps after its checkpoint; readers count each step once.
    raw_steps = [
        record.step for line in session.run.metrics.read_text().splitlines() if '"type":"steps"' in line
        for record in StepBatch.model_validate_json(line).records
    ]  # fmt: skip
    kept = [record.step for event in read_metrics(session.run.metrics) if isinstance(event, StepBatch) for record in event.records]
    epochs = [event.epoch for event in read_metrics(session.run.metrics) if isinstance(event, EpochSummary)]
    assert len(kept) == len(set(kept)) == max(kept) and sorted(kept) == kept
    assert epochs == list(range(1, 9))
    assert len(raw_steps) >= len(kept), "replayed steps stay on record, marked by their attempt"


def wait_until_dead(pid: int) -> None:
    """Until the process is gone or a zombie (its parent reaps it at the next poll)."""
    stat = Path(f"/proc/{pid}/stat")
    poll_until(lambda: not stat.exists() or stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z", f"process {pid} outlived SIGKILL", WAIT_S)


def test_a_trainer_killed_during_an_assessment_gets_the_accepted_change_once(project: Path) -> None:
    session = Session.start(tiny_settings(project), str(project / "bad_cnn.py"), run_name="during")
    try:
        until_due(session)
        killed = session.trainer_pid
        os.kill(killed, signal.SIGKILL)
        wait_until_dead(killed)  # dead while the advisor works, before the session has seen it
        session.assess("schedule")
        decision = session.decide(Verdict(decision="accept"))
        assert decision.accepted and "new trainer" in decision.message
        events = run_until(session, lambda seen: any(isinstance(e, ModelSwapped) and e.round == 1 for e in seen))
        assert session.trainer_pid != killed
        assert not any(isinstance(e, LogLine) and "killed by" in e.message for e in events), "one restart, with the change"
        session.resume_training()
        run_until(session, lambda seen: any(isinstance(e, EpochSummary) and e.round == 1 for e in seen))
        assert session.due_assessment() != "error"
    finally:
        session.stop()
    subjects = round_commits(project, session.history.branch)
    assert len(subjects) == 2 and len(read_ledger(session.run)) == 1, subjects
