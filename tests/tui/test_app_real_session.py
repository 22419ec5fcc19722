"""The app driving a real `Session`: a real trainer on tiny data, the offline advisor, real git.

Each test starts `Session.start` in a fresh git project and drives the app with the
pilot as a user would: watch the run, pause, let the advisor propose, accept, look at
history and layers, quit. Slow (real trainer processes), so marked `slow`.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from rich.console import Console
from textual.widgets import DataTable, Static

from copilot.advisor.ledger import read_ledger
from copilot.advisor.schemas import ArchitectureProposal, HParamProposal, Verdict
from copilot.config import Settings
from copilot.events import EpochSummary, ModelSwapped
from copilot.metrics_file import read_metrics
from copilot.session.controller import Session
from copilot.tui.app import CopilotApp
from copilot.tui.screens.dialogs import ConfirmDialog
from copilot.tui.screens.history import HistoryScreen
from copilot.tui.screens.layers import LayersScreen
from copilot.tui.screens.run import RunScreen
from copilot.tui.widgets.diagnosis import DiagnosisPane
from copilot.tui.widgets.log import LogPane
from tests.history.repos import git
from tests.session.conftest import git_home, project, run_until, until_due  # noqa: F401  (fixtures: a HOME of its own, a git project)
from tests.waiting import pilot_until

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(600)]

WAIT_S = 240.0  # trainer start-ups and sandbox checks on a busy 2-core machine


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def tiny_settings(project: Path) -> Settings:
    """A few dozen shapes samples, every step measured, an epoch budget that outlasts the test."""
    return Settings(
        runs_dir=project / ".copilot" / "runs",
        data={"train_size": 64, "val_size": 32},
        train={"device": "cpu", "log_every": 1, "activation_every": 2, "hparams": {"batch_size": 16, "epochs": 400}},
        advisor={"assess_every": 2},
        tui={"refresh_hz": 10},
    )


async def until(pilot: Pilot, condition: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """`pilot_until`, failing with the app's last log lines: with a real trainer and advisor, they say why."""
    app: CopilotApp = pilot.app  # type: ignore[assignment]
    await pilot_until(pilot, condition, lambda: f"log: {[entry.message for entry in app.store.view().log_tail[-6:]]}", timeout)


def diagnosis_text(app: CopilotApp) -> str:
    """The advisor pane as plain text."""
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(app.screen.query_one(DiagnosisPane).query_one(Static).content)
    return console.export_text()


async def quit_app(pilot: Pilot, app: CopilotApp) -> None:
    await pilot.press("q")
    await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), 10)
    await pilot.press("y")
    await until(pilot, lambda: app.session_stopped, 60)


async def test_watch_pause_accept_history_layers_quit(project: Path) -> None:
    user_head = git(project, "rev-parse", "HEAD")
    settings = tiny_settings(project)
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="app")
    app = CopilotApp(session, settings)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            # Pressed before the first step, the pause is the user's: no epoch has ended for the
            # advisor's schedule to hold training at (then `p` would train on instead).
            await pilot.press("p")
            await until(pilot, lambda: app.store.state == "paused" and not session.held_for_advisor)
            assert app.store.view().model_name and isinstance(app.screen, RunScreen)
            await pilot.press("p")
            # Running again, unless the schedule came due meanwhile (two epochs are a few steps here):
            # then the assessment holds the trainer for its trials, and the proposal keeps it held.
            await until(pilot, lambda: app.store.state == "running" or app.advisor_state != "idle")
            assert any(entry.message == "resuming training" for entry in app.store.view().log_tail)

            # The schedule trigger fires after two epochs; the app asks the advisor by itself.
            await until(pilot, lambda: app.advisor_state == "waiting")
            proposal = app.turn.proposal
            # The trainer runs on while the app notices the schedule, so how far it got (and with it
            # what the rules propose first for this sigmoid CNN) depends on the machine's load.
            assert isinstance(proposal, (ArchitectureProposal, HParamProposal)), proposal
            assert not isinstance(proposal, ArchitectureProposal) or proposal.sandbox.ok
            assert app.last_diagnosis[0].findings

            await pilot.press("a")
            # Once committed the advisor may look again at once (a plateau), so wait for the round, not for idle.
            await until(pilot, lambda: session.round == 1 and (app.turn is None or app.turn.proposal != proposal))
            assert session.round == 1
            subject = git(project, "log", "-1", "--format=%s", session.history.branch).strip()
            assert subject.startswith("arch(r1): " if isinstance(proposal, ArchitectureProposal) else "hparams(r1): ")
            assert git(project, "rev-parse", "HEAD") == user_head
            # The trainer reports the new model; the charts mark where round 1 starts.
            await until(pilot, lambda: any(number == 1 for number, _ in app.store.view().round_steps))

            await pilot.press("h")
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and len(app.screen.rounds) == 2)
            assert [info.round for info in app.screen.rounds] == [0, 1]
            await pilot.press("escape", "l")
            await until(pilot, lambda: isinstance(app.screen, LayersScreen) and app.screen.query_one(DataTable).row_count > 0)
            await pilot.press("l")

            await quit_app(pilot, app)
    finally:
        session.stop()
    assert session.run.latest_checkpoint() is not None


async def test_a_crash_is_shown_diagnosed_fixed_and_training_starts_again(project: Path) -> None:
    settings = tiny_settings(project)
    session = Session.start(settings, str(project / "broken_cnn.py"), run_name="crash")
    app = CopilotApp(session, settings)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.store.view().last_error is not None)
            error = app.store.view().last_error
            assert "shapes cannot be multiplied" in error.message
            log = app.screen.query_one(LogPane)
            await until(pilot, lambda: log.option_count > 0, 10)
            assert any("shapes cannot be multiplied" in str(option.prompt) for option in log.options)

            await until(pilot, lambda: app.advisor_state == "waiting")
            assert app.turn.trigger == "error"
            crashed_at = app.store.view().step
            await pilot.press("a")
            await until(pilot, lambda: session.round == 1)
            # A new trainer runs the fixed model: steps arrive. (Not "running" at the moment looked:
            # the advisor may already be trialling its next proposal, which holds the trainer.)
            await until(pilot, lambda: app.store.view().step > crashed_at and app.store.state != "crashed")
            await quit_app(pilot, app)
    finally:
        session.stop()


async def test_a_proposal_training_went_on_past_is_withdrawn_from_the_pane_and_the_log_says_so(project: Path) -> None:
    settings = tiny_settings(project)  # the advisor's schedule: every 2 epochs
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="outrun")
    app = CopilotApp(session, settings)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.advisor_state == "waiting")
            old = app.turn
            await until(pilot, lambda: app.store.state == "paused")  # held while the proposal waits
            await pilot.press("p")  # the user trains on anyway

            log = app.screen.query_one(LogPane)
            withdrawn = lambda: [str(o.prompt) for o in log.options if "proposal withdrawn" in str(o.prompt)]  # noqa: E731
            await until(pilot, lambda: bool(withdrawn()))
            assert "training went on past its evidence" in withdrawn()[0]
            assert app.turn is not old
            entry = next(e for e in read_ledger(session.run) if e.proposal == old.proposal)
            assert entry.verdict is not None and entry.verdict.decision == "withdrawn"

            # The advisor looks again by itself; what it proposes is about the model as it is now.
            await until(pilot, lambda: app.advisor_state == "waiting" and app.turn is not old)
            assert app.turn.epoch > old.epoch
            await quit_app(pilot, app)
    finally:
        session.stop()


async def test_a_reopened_run_brings_back_its_charts_round_markers_header_and_last_diagnosis(project: Path) -> None:
    settings = tiny_settings(project)
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="back")
    try:
        until_due(session)
        session.assess("schedule")
        session.decide(Verdict(decision="accept"))
        run_until(session, lambda seen: any(isinstance(e, ModelSwapped) for e in seen))
        session.resume_training()
        run_until(session, lambda seen: any(isinstance(e, EpochSummary) and e.round == 1 for e in seen))
    finally:
        session.stop()
    recorded_epochs = sorted({e.epoch for e in read_metrics(session.run.metrics) if isinstance(e, EpochSummary)})
    last_diagnosis = read_ledger(session.run)[-1].diagnosis
    assert len(recorded_epochs) >= 3

    # The reopened advisor does not look again soon: what the pane shows is the ledger's.
    quiet = settings.model_copy(update={"advisor": settings.advisor.model_copy(update={"assess_every": 1000, "plateau_window": 1000})})
    reopened = Session.reopen(quiet, session.run)
    app = CopilotApp(reopened, quiet)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.last_diagnosis is not None and bool(app.store.view().epochs))
            view = app.store.view()
            assert [point.epoch for point in view.epochs][: len(recorded_epochs)] == recorded_epochs, "the charts come back"
            assert any(number == 1 for number, _ in view.round_steps), "and the round markers"
            assert view.step > 0 and view.samples_per_sec is not None and view.model_name, "and the header's step and speed"
            assert app.last_diagnosis[0] == last_diagnosis
            await until(pilot, lambda: last_diagnosis.summary[:30] in diagnosis_text(app), 30)
            assert "No diagnosis yet" not in diagnosis_text(app)
            await quit_app(pilot, app)
    finally:
        reopened.stop()


async def test_the_tune_key_runs_the_study_beside_the_run_and_training_goes_on_after_it(project: Path) -> None:
    """One trial only (the current values): nothing can beat them, so the app says so and lets the trainer go on."""
    settings = tiny_settings(project).model_copy(
        update={"advisor": Settings().advisor.model_copy(update={"assess_every": 1000, "plateau_window": 1000}),  # no assessment of its own meanwhile
                "trials": Settings().trials.model_copy(update={"min_steps": 6, "evaluations": 3}),
                "tune": Settings().tune.model_copy(update={"trials": 1})}
    )  # fmt: skip
    session = Session.start(settings, str(project / "bad_cnn.py"), run_name="tuned")
    app = CopilotApp(session, settings)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.store.view().step > 0)
            assert "Tune hyperparameters (t)" in [command.title for command in app.get_system_commands(app.screen)]
            await pilot.press("t")
            await until(pilot, lambda: app.advisor_state == "thinking")
            await until(pilot, lambda: any(note.message.startswith("nothing to commit") for note in app._notifications))
            messages = [entry.message for entry in app.store.view().log_tail]
            assert any(message.startswith("tune: t0 current values: complete, val loss ") for message in messages)
            assert app.advisor_state == "idle" and session.rounds()[-1].round == 0
            step = app.store.view().step
            await until(pilot, lambda: app.store.state == "running" and app.store.view().step > step)  # released
            await quit_app(pilot, app)
    finally:
        session.stop()
    assert session.run.tune_db.is_file()
