"""A session restarts its trainer walled when it accepts code the user did not write, and stays walled.

The user's own model trains unwalled (allow-listed environment, full capabilities of
the user); the accepted architecture runs in a new trainer started behind the walls
from the checkpoint written as the old one stopped. What is checked is what the
operating system says about the trainer process, not what the trainer reports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot.advisor.schemas import ArchitectureProposal, Verdict
from copilot.events import ModelSwapped, RunStarted, StepBatch
from copilot.session.controller import Session
from copilot.training.launcher import TrainerSpec
from tests.session.conftest import _trainers_use_one_thread, git_home, project, run_until, tiny_settings, until_due  # noqa: F401 (fixtures)

pytestmark = pytest.mark.timeout(600)


def process_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines()
    return {key: value.strip() for key, _colon, value in (line.partition(":") for line in lines)}


def test_accepted_code_runs_in_a_new_walled_trainer_from_the_checkpoint(project: Path) -> None:
    session = Session.start(tiny_settings(project, assess_every=2), str(project / "bad_cnn.py"), run_name="walls")
    try:
        until_due(session)
        user_trainer = session._trainer  # the process itself, to ask the kernel about it
        assert user_trainer is not None and user_trainer.pid is not None
        assert process_status(user_trainer.pid)["NoNewPrivs"] == "0"
        assert not TrainerSpec.model_validate_json(session.run.session.read_text(encoding="utf-8")).walled

        turn = session.assess("schedule")
        assert isinstance(turn.proposal, ArchitectureProposal)
        decision = session.decide(Verdict(decision="accept"))
        assert decision.accepted and "behind the walls" in decision.message

        walled_trainer = session._trainer
        assert walled_trainer is not None and walled_trainer is not user_trainer and not user_trainer.is_alive
        events = run_until(session, lambda seen: any(isinstance(event, ModelSwapped) for event in seen))
        status = process_status(walled_trainer.pid)
        assert status["NoNewPrivs"] == "1" and int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
        assert status["Seccomp"] == "2"
        restarted = [event for event in events if isinstance(event, RunStarted)][-1]
        assert restarted.resumed_from_epoch is not None  # from the checkpoint, not from scratch
        assert TrainerSpec.model_validate_json(session.run.session.read_text(encoding="utf-8")).walled
        swapped = [event for event in events if isinstance(event, ModelSwapped)][-1]
        session.resume_training()
        run_until(
            session,
            lambda seen: any(isinstance(e, StepBatch) and any(r.step > swapped.step for r in e.records) for e in seen),
        )
        assert session._trainer is walled_trainer  # later commands go to the walled trainer in place
    finally:
        session.stop()
