"""Pilot tests: every key and screen of the app, driven through `App.run_test()`.

The session is the seeded `SyntheticSession` (tests/tui/synthetic.py), so each test
knows exactly which events arrive and what the advisor answers; the app's threads,
workers, dialogs and the editor round-trip are all real.
"""

from __future__ import annotations

import io
import re
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static, Tabs

from copilot.advisor.schemas import Diagnosis, Verdict
from copilot.config import Settings
from copilot.events import StateChanged, TrainerError
from copilot.tui.app import CopilotApp
from copilot.tui.screens.dialogs import ConfirmDialog, ReasonDialog, TextDialog
from copilot.tui.screens.history import HistoryScreen
from copilot.tui.screens.layers import LayersScreen
from copilot.tui.screens.run import RunScreen
from copilot.tui.widgets.charts import MetricChart
from copilot.tui.widgets.log import LogPane
from copilot.errors import CopilotError
from copilot.session.controller import Continuing
from tests.tui.synthetic import (
    START_TIME,
    SyntheticSession,
    Turn,
    VerdictResult,
    architecture_proposal,
    broken_diagnosis,
    hparam_proposal,
    seeded_run_events,
)
from tests.waiting import pilot_until

SIZE = (160, 48)
pytestmark = pytest.mark.anyio


def make_app(session: SyntheticSession) -> CopilotApp:
    return CopilotApp(session, Settings(tui={"refresh_hz": 20}), clock=lambda: START_TIME)


def shown_text(app: CopilotApp, selector: str) -> str:
    """What a widget shows, as plain text (a Static's content may be any Rich renderable)."""
    widget = app.screen.query_one(selector)
    console = Console(width=max(widget.size.width, 100), file=io.StringIO(), record=True)
    console.print(widget.content if isinstance(widget, Static) else widget.render())
    return console.export_text()


def proposal_session(**overrides) -> SyntheticSession:
    values = dict(
        events=seeded_run_events(epochs_fixed=0),
        turns=[Turn(broken_diagnosis(), architecture_proposal(), "schedule", ())],
        due=["schedule"],
    )
    values.update(overrides)
    return SyntheticSession(**values)


async def waiting_for_decision(pilot: Pilot) -> CopilotApp:
    app = pilot.app
    await pilot_until(pilot, lambda: app.advisor_state == "waiting")
    return app


async def background_calls_returned(pilot: Pilot) -> None:
    """Until what the keys pressed so far started is over: their handlers have run, every session
    call they made in a worker has returned, and its result has been handled. Before asserting that
    a key did nothing. (The ingest and chart workers run for the app's whole life: not waited for.)"""
    await pilot.pause()
    calls = [worker for worker in pilot.app.workers if worker.group not in ("ingest", "charts")]
    if calls:  # an empty list would mean every worker to wait_for_complete
        await pilot.app.workers.wait_for_complete(calls)
    await pilot.pause()


async def test_events_reach_the_charts_and_the_status_from_a_thread_of_their_own() -> None:
    session = SyntheticSession(events=seeded_run_events())
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.store.version > 0)
        await pilot_until(pilot, lambda: app.screen.query_one("#chart-loss", MetricChart).data is not None)
        await pilot_until(pilot, lambda: app.store.view().step == 2240)  # every seeded event has arrived
        view = app.store.view()
        assert view.step == 2240 and view.model_name == "BadCNN"
        assert threading.main_thread().name not in session.poll_threads
        status = shown_text(app, "#status")
        assert "epoch 7/12" in status and "step 2,240" in status and "advisor offline" in status
        loss = app.screen.query_one("#chart-loss", MetricChart)
        assert [series.label for series in loss.data.series] == ["train", "val"]
        assert loss.data.round_steps[-1] == (1, 1280)
        await pilot_until(pilot, lambda: any("r1" in line for line in loss.lines))  # drawn by the builder thread


async def test_a_due_assessment_shows_the_diagnosis_and_proposal_then_a_accepts() -> None:
    session = proposal_session()
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        assert ("assess", "schedule") in session.calls
        assert "waiting for you" in shown_text(app, "#status")
        proposal_text = shown_text(app, "#proposal Static")
        assert "ReLU instead of Sigmoid" in proposal_text and "nn.BatchNorm2d(16)" in proposal_text
        diagnosis_text = shown_text(app, "#diagnosis Static")
        assert "vanishing gradients" in diagnosis_text and "grad_norm = 5.1e-10" in diagnosis_text
        await pilot.press("a")
        await pilot_until(pilot, lambda: app.advisor_state == "idle")
        assert session.calls[-1] == ("decide", Verdict(decision="accept"))
        assert app.turn is None
        messages = [entry.message for entry in app.store.view().log_tail]
        assert "r1 committed abcdef1: arch(r1): ReLU instead of Sigmoid, batch norm after the first conv" in messages


async def test_proposal_keys_are_disabled_while_nothing_waits() -> None:
    session = SyntheticSession(events=seeded_run_events())
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await background_calls_returned(pilot)  # the app has looked for a proposal from before a restart
        for key in "are":
            await pilot.press(key)
        await background_calls_returned(pilot)
        assert "decide" not in session.names()
        assert app.check_action("accept", ()) is None and app.check_action("pause", ()) is True


async def test_r_asks_for_a_reason_and_sends_it_to_the_advisor() -> None:
    session = proposal_session()
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        await pilot.press("r")
        await pilot_until(pilot, lambda: isinstance(app.screen, ReasonDialog))
        app.screen.query_one(Input).value = "too many parameters"
        await pilot.press("enter")
        await pilot_until(pilot, lambda: app.advisor_state == "idle")
        assert session.calls[-1] == ("decide", Verdict(decision="reject", reason="too many parameters"))
        assert isinstance(app.screen, RunScreen)


async def test_escape_in_the_reason_dialog_keeps_the_proposal() -> None:
    session = proposal_session()
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        await pilot.press("r")
        await pilot_until(pilot, lambda: isinstance(app.screen, ReasonDialog))
        await pilot.press("escape")
        await pilot_until(pilot, lambda: not isinstance(app.screen, ReasonDialog))
        await background_calls_returned(pilot)
        assert app.advisor_state == "waiting" and "decide" not in session.names()


def _editor_script(tmp_path: Path, body: str) -> str:
    """A real executable that edits the file it is given, standing in for the user's $EDITOR."""
    script = tmp_path / "editor.py"
    script.write_text(f"import sys, pathlib\npath = pathlib.Path(sys.argv[1])\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return f"{sys.executable} {script}"


async def test_e_edits_the_code_in_the_editor_and_sends_it_for_checking(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDITOR", _editor_script(tmp_path, "path.write_text(path.read_text() + '# tuned by hand\\n')"))
    monkeypatch.delenv("VISUAL", raising=False)
    session = proposal_session()
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        await pilot.press("e")
        await pilot_until(pilot, lambda: "decide" in session.names())
        verdict = session.calls[-1][1]
        assert verdict.decision == "edit" and verdict.edited_code.endswith("# tuned by hand\n")
        assert "nn.BatchNorm2d(16)" in verdict.edited_code


async def test_an_edit_that_fails_the_sandbox_comes_back_as_a_new_proposal(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDITOR", _editor_script(tmp_path, "path.write_text('broken(')"))
    failed = architecture_proposal().model_copy(
        update={"sandbox": architecture_proposal().sandbox.model_copy(update={"ok": False, "stage": "import", "message": "SyntaxError line 1"})}
    )
    retry = Turn(broken_diagnosis(), failed, "schedule", (), "the edited code failed the sandbox at import")
    session = proposal_session()
    session.decide = lambda verdict: (session._record("decide", verdict), VerdictResult(False, None, "the edited code failed the sandbox at import", retry))[1]
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        await pilot.press("e")
        await pilot_until(pilot, lambda: app.turn is retry)
        assert app.advisor_state == "waiting"
        shown = shown_text(app, "#proposal Static")
        assert "✖ import: SyntaxError line 1" in shown
        assert "your edit was not taken: the edited code failed the sandbox at import" in shown


async def test_e_after_a_refused_edit_reopens_the_users_edit_not_the_advisors_code(tmp_path, monkeypatch) -> None:
    # The editor appends a line each time it runs: the second edit must start from the first.
    monkeypatch.setenv("EDITOR", _editor_script(tmp_path, "path.write_text(path.read_text() + '# tuned by hand\\n')"))
    monkeypatch.delenv("VISUAL", raising=False)
    failed = architecture_proposal().model_copy(
        update={"sandbox": architecture_proposal().sandbox.model_copy(update={"ok": False, "stage": "forward", "message": "shape mismatch"})}
    )
    problem = "the edited code fails the sandbox (forward: shape mismatch)"
    session = proposal_session(edit_retries=[Turn(broken_diagnosis(), failed, "schedule", (), problem)])
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        await pilot.press("e")
        await pilot_until(pilot, lambda: app.advisor_state == "waiting" and app.turn is not None and app.turn.edit_problem == problem)
        assert f"your edit was not taken: {problem}" in shown_text(app, "#proposal Static")
        await pilot.press("e")
        await pilot_until(pilot, lambda: session.names().count("decide") == 2)
        first, second = [call[1] for call in session.calls if call[0] == "decide"]
        assert first.edited_code == architecture_proposal().code + "# tuned by hand\n"
        assert second.edited_code == architecture_proposal().code + "# tuned by hand\n# tuned by hand\n"


async def test_a_refused_hyperparameter_value_is_reopened_to_fix(tmp_path, monkeypatch) -> None:
    # First run: an out-of-range lr, refused before anything is sent; second run: the editor sees that value.
    seen = tmp_path / "seen.toml"
    monkeypatch.setenv("EDITOR", _editor_script(tmp_path, (
        f"seen = pathlib.Path({str(seen)!r})\n"
        "if seen.exists():\n    seen.write_text(path.read_text()); path.write_text(path.read_text().replace('lr = 50.0', 'lr = 0.0015'))\n"
        "else:\n    seen.write_text(''); path.write_text(path.read_text().replace('lr = 0.001', 'lr = 50.0'))"
    )))
    monkeypatch.delenv("VISUAL", raising=False)
    session = proposal_session(turns=[Turn(broken_diagnosis(), hparam_proposal(), "plateau", ())])
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        await pilot.press("e")
        await pilot_until(pilot, lambda: any("edited hyperparameter 'lr'" in note.message for note in app._notifications))
        assert "decide" not in session.names()
        await pilot.press("e")
        await pilot_until(pilot, lambda: "decide" in session.names())
        assert "lr = 50.0" in seen.read_text()
        assert session.calls[-1][1].edited_change.changes() == {"optimizer": "Adam", "lr": 0.0015}


async def test_a_proposal_lists_only_the_keys_that_act_on_it() -> None:
    session = proposal_session(turns=[Turn(broken_diagnosis(), hparam_proposal(), "plateau", ()),
                                      Turn(broken_diagnosis(), architecture_proposal(), "schedule", ())],
                               due=["plateau"])  # fmt: skip
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        shown = shown_text(app, "#proposal Static")
        assert "a accept · r reject · e edit" in shown
        assert "sandbox" not in shown and "side by side" not in shown
        await pilot.press("r")
        await pilot_until(pilot, lambda: isinstance(app.screen, ReasonDialog))
        await pilot.press("enter")
        await pilot_until(pilot, lambda: app.advisor_state == "idle")
        await pilot.press("question_mark")
        await waiting_for_decision(pilot)
        await pilot_until(pilot, lambda: "d side by side" in shown_text(app, "#proposal Static"))
        assert "a accept · r reject · e edit · v sandbox · d side by side" in shown_text(app, "#proposal Static")


async def test_the_proposal_shows_the_change_its_measurement_and_the_diff_before_the_rationale() -> None:
    session = proposal_session(turns=[Turn(broken_diagnosis(), architecture_proposal(), "schedule", ())])
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        shown = shown_text(app, "#proposal Static")
        change, measured = shown.index("ReLU instead of Sigmoid"), shown.index("measured:")
        diff, predicted = shown.index("--- a/"), shown.index("predicted:")
        assert change < measured < diff < predicted, "what a person decides on comes first, the advisor's reasons after"


async def test_e_on_a_hyperparameter_proposal_sends_the_changed_values(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EDITOR", _editor_script(tmp_path, "path.write_text(path.read_text().replace('lr = 0.001', 'lr = 0.0005'))"))
    session = proposal_session(turns=[Turn(broken_diagnosis(), hparam_proposal(), "plateau", ())])
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        assert "Adam" in shown_text(app, "#proposal Static")
        await pilot.press("e")
        await pilot_until(pilot, lambda: "decide" in session.names())
        verdict = session.calls[-1][1]
        assert verdict.decision == "edit"
        assert verdict.edited_change.changes() == {"optimizer": "Adam", "lr": 0.0005}


async def test_a_missing_editor_is_one_line_not_a_crash(monkeypatch) -> None:
    monkeypatch.setenv("EDITOR", "no-such-editor-anywhere")
    session = proposal_session()
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        await pilot.press("e")
        await pilot_until(pilot, lambda: any("editor 'no-such-editor-anywhere' not found" in note.message for note in app._notifications))
        assert app.advisor_state == "waiting" and "decide" not in session.names()


async def test_v_shows_the_sandbox_report_and_d_switches_the_diff_view() -> None:
    session = proposal_session()
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        await pilot.press("v")
        await pilot_until(pilot, lambda: isinstance(app.screen, TextDialog))
        assert "286,538" in shown_text(app, ".dialog-body Static")
        await pilot.press("escape")
        await pilot_until(pilot, lambda: isinstance(app.screen, RunScreen))
        await pilot.press("z", "d")  # zoomed, the pane is wide enough for two sides
        await pilot_until(pilot, lambda: app.side_by_side and "a/bad_cnn.py" in shown_text(app, "#proposal Static"))
        text = shown_text(app, "#proposal Static")
        assert "a/bad_cnn.py" in text and "b/bad_cnn.py" in text and "@@" not in text


async def test_p_pauses_and_resumes_the_trainer() -> None:
    session = SyntheticSession(events=seeded_run_events())
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.store.view().state == "running")
        await pilot_until(pilot, lambda: "samples/s" in shown_text(app, "#status"))
        await pilot.press("p")
        await pilot_until(pilot, lambda: app.store.view().state == "paused")
        # Paused, the header says so instead of the rate it had before it stopped.
        await pilot_until(pilot, lambda: re.search(r"step [\d,]+  paused", shown_text(app, "#status")) is not None)
        assert "samples/s" not in shown_text(app, "#status")
        await pilot.press("p")
        await pilot_until(pilot, lambda: app.store.view().state == "running")
        await pilot_until(pilot, lambda: "samples/s" in shown_text(app, "#status"))
        assert [name for name in session.names() if name in ("pause", "resume_training")] == ["pause", "resume_training"]


async def test_a_trainer_held_for_the_advisor_says_so_and_p_trains_on() -> None:
    session = SyntheticSession(events=[*seeded_run_events(), StateChanged(state="paused")], held_for_advisor=True)
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: "held" in shown_text(app, "#status"))
        assert "for the advisor (p: train on)" in shown_text(app, "#status")
        await pilot.press("p")
        await pilot_until(pilot, lambda: app.store.view().state == "running")
        assert session.names().count("resume_training") == 1 and "pause" not in session.names()
        assert any(entry.message == "training on: it was held for the advisor" for entry in app.store.view().log_tail)


async def test_question_mark_asks_the_advisor_now() -> None:
    session = SyntheticSession(events=seeded_run_events(), turns=[Turn(broken_diagnosis(), hparam_proposal(), "x", ())])
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await background_calls_returned(pilot)  # the app has looked for a proposal from before a restart
        await pilot.press("question_mark")
        await waiting_for_decision(pilot)
        assert ("assess", "demand") in session.calls
        assert app.last_diagnosis[1] == "demand"


async def test_a_proposal_waiting_since_before_a_restart_is_shown_at_once() -> None:
    session = SyntheticSession(events=seeded_run_events(), waiting=Turn(broken_diagnosis(), architecture_proposal(), "error", ()))
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        assert "assess" not in session.names()


async def test_a_trainer_error_is_one_line_in_the_log_and_x_shows_all_of_it() -> None:
    error = TrainerError(kind="shape", message="mat1 and mat2 shapes cannot be multiplied (8x4096 and 1024x64)",
                         hint="match Linear's in_features", traceback="Traceback (most recent call last):\n  File \"bad_cnn.py\", line 14")
    session = SyntheticSession(events=[*seeded_run_events(epochs_fixed=0), error])
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.store.view().last_error is not None)
        log = app.screen.query_one(LogPane)
        await pilot_until(pilot, lambda: log.option_count and "shape error" in str(log.get_option_at_index(log.option_count - 1).prompt))
        last = log.get_option_at_index(log.option_count - 1)
        assert "shape error: mat1 and mat2" in str(last.prompt) and "\n" not in str(last.prompt)
        await pilot.press("x")
        await pilot_until(pilot, lambda: isinstance(app.screen, TextDialog))
        body = shown_text(app, ".dialog-body Static")
        assert 'File "bad_cnn.py", line 14' in body and "hint: match Linear's in_features" in body


async def test_enter_on_a_log_line_opens_its_full_text() -> None:
    session = SyntheticSession(events=seeded_run_events(epochs_broken=1, epochs_fixed=0))
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.screen.query_one(LogPane).option_count > 0)
        log = app.screen.query_one(LogPane)
        log.focus()
        log.highlighted = 0
        await pilot.press("enter")
        await pilot_until(pilot, lambda: isinstance(app.screen, TextDialog))
        assert "training BadCNN" in shown_text(app, ".dialog-body Static")


async def test_enter_in_the_log_pane_opens_the_newest_lines_full_text() -> None:
    session = SyntheticSession(events=seeded_run_events())
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.screen.query_one(LogPane).option_count > 0)
        await pilot.press("3")  # the log pane, focused
        await pilot_until(pilot, lambda: isinstance(app.focused, LogPane))
        newest = app.store.view().log_tail[-1]
        await pilot.press("enter")
        await pilot_until(pilot, lambda: isinstance(app.screen, TextDialog))
        assert newest.message in shown_text(app, ".dialog-body Static")


async def rounds_table(pilot: Pilot) -> DataTable:
    """h pressed, and the history screen's table once it shows the rounds."""
    app = pilot.app
    await pilot.press("h")
    await pilot_until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.rounds)
    return app.screen.query_one("#rounds", DataTable)


async def test_h_shows_rounds_and_two_marks_show_their_diff() -> None:
    session = SyntheticSession(events=seeded_run_events())
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        table = await rounds_table(pilot)
        assert table.row_count == 3
        assert "10.1% → 91.2%" in str(table.get_row_at(1)[3])
        await pilot.press("enter")  # Enter on the first round, where the cursor starts: the round itself
        await pilot_until(pilot, lambda: "r0 1a2b3c4" in shown_text(app, "#diff-text"))
        assert "bad_cnn.py as you wrote it" in shown_text(app, "#diff-text")
        await pilot.press("space", "down", "space")
        await pilot_until(pilot, lambda: ("diff", 0, 1) in session.calls)
        await pilot_until(pilot, lambda: "+0.811" in shown_text(app, "#diff-text"))
        await pilot.press("down", "enter")  # Enter: the highlighted round against the one before
        await pilot_until(pilot, lambda: ("diff", 1, 2) in session.calls)
        await pilot_until(pilot, lambda: "r1 5e6f7a8 → r2 9c0d1e2" in shown_text(app, "#diff-text"))
        await pilot.press("q")  # a dialog-free screen: q asks to quit...
        await pilot_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("h", "q")  # ...and while the dialog is open, app keys do nothing
        assert isinstance(app.screen, ConfirmDialog) and len(app.screen_stack) == 2
        await pilot.press("n")
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)


async def test_the_rounds_table_follows_results_written_while_it_is_open() -> None:
    session = SyntheticSession(events=seeded_run_events())
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        table = await rounds_table(pilot)
        before = str(table.get_row_at(2)[3])
        # The session notes r2's results from its own thread, as an assessment does.
        writer = threading.Thread(target=session.record_result, args=(2, {"val_accuracy": 0.529}))
        writer.start()
        writer.join()
        await pilot_until(pilot, lambda: str(table.get_row_at(2)[3]).endswith("→ 52.9%"))
        assert str(table.get_row_at(2)[3]) != before


async def test_rollback_asks_first_then_undo_and_redo_move_the_branch() -> None:
    session = SyntheticSession(events=seeded_run_events())
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("h")
        await pilot_until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.rounds)
        await pilot.press("down", "b")
        await pilot_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")
        await pilot_until(pilot, lambda: not isinstance(app.screen, ConfirmDialog))
        await background_calls_returned(pilot)
        assert "rollback" not in session.names()
        await pilot.press("b")
        await pilot_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await pilot_until(pilot, lambda: ("rollback", 1) in session.calls)
        await pilot_until(pilot, lambda: len(app.screen.rounds) == 4)
        await pilot.press("u")
        await pilot_until(pilot, lambda: len(app.screen.rounds) == 3)
        await pilot.press("U")
        await pilot_until(pilot, lambda: len(app.screen.rounds) == 4)
        assert [name for name in session.names() if name in ("rollback", "undo", "redo")] == ["rollback", "undo", "redo"]
        logged = [entry.message for entry in app.store.view().log_tail]
        assert any(line.startswith("rolled back to r1 as r3; training continues from r1's checkpoint") for line in logged)


async def test_l_shows_every_module_with_anomalies_and_sorts_by_column() -> None:
    session = SyntheticSession(events=seeded_run_events(epochs_fixed=0))
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.store.version > 0)
        await pilot.press("l")
        await pilot_until(pilot, lambda: isinstance(app.screen, LayersScreen) and app.screen.query_one(DataTable).row_count)
        table = app.screen.query_one(DataTable)
        rows = {str(table.get_row_at(index)[0]): table.get_row_at(index) for index in range(table.row_count)}
        assert str(rows["features.0"][1]) == "vanishing"
        assert str(rows["features.1"][1]) == "saturated"
        assert str(rows["features.1"][5]) == "93%"
        assert str(rows["classifier.0"][7]) == "Linear"
        def first_module() -> str:
            return str(table.get_row_at(0)[0])

        assert "sorted by definition order ↑" in str(table.border_title)
        shown = [str(table.get_row_at(index)[0]) for index in range(table.row_count)]
        defined = [module.name for module in app.store.view().model.modules]
        in_model = [name for name in defined if name in shown]
        assert shown[0] == "features.0" and shown[: len(in_model)] == in_model and shown != sorted(shown)
        await pilot.press("s")  # definition order -> module name
        await pilot_until(pilot, lambda: "sorted by module name" in str(table.border_title))
        assert app.screen.sort_column == "module" and "sorted by module name ↑" in str(table.border_title)
        names = [str(table.get_row_at(index)[0]) for index in range(table.row_count)]
        assert names[0].startswith("classifier.") and names == sorted(names)
        await pilot.press("s", "s", "s")  # module -> params -> grad -> ratio
        await pilot_until(pilot, lambda: "sorted by ratio" in str(table.border_title))
        assert app.screen.sort_column == "ratio" and first_module() == "features.0"  # smallest update ratio first
        await pilot.press("S")
        await pilot_until(pilot, lambda: first_module() == "classifier.2")
        assert first_module() == "classifier.2"
        assert [str(table.get_row_at(index)[0]) for index in range(5, 8)] == ["features.1", "features.3", "features.5"]
        app.screen.post_message(DataTable.HeaderSelected(table, table.columns["grad"].key, 3, table.columns["grad"].label))
        await pilot_until(pilot, lambda: app.screen.sort_column == "grad")
        assert app.screen.sort_column == "grad" and app.screen.sort_reverse
        assert first_module() == "classifier.2"
        await pilot.press("l")
        assert isinstance(app.screen, RunScreen)


async def test_q_asks_then_checkpoints_through_the_session_and_exits() -> None:
    session = SyntheticSession(events=seeded_run_events())
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")
        await pilot_until(pilot, lambda: not isinstance(app.screen, ConfirmDialog))
        await background_calls_returned(pilot)
        assert "stop" not in session.names()
        await pilot.press("q")
        await pilot_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await pilot_until(pilot, lambda: session.stopped.is_set())
    assert app.return_code == 0 and app.session_stopped


async def test_quitting_does_not_wait_for_a_slow_advisor() -> None:
    session = proposal_session(assess_delay_s=30.0)
    app = make_app(session)
    started = time.monotonic()
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.advisor_state == "thinking")
        await pilot.press("q")
        await pilot_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await pilot_until(pilot, lambda: session.stopped.is_set())
    assert time.monotonic() - started < 10.0


async def test_compact_layout_switches_panes_and_chart_pages() -> None:
    session = proposal_session()
    app = make_app(session)
    async with app.run_test(size=(80, 24)) as pilot:
        await waiting_for_decision(pilot)
        screen = app.screen
        assert screen.has_class("-narrow") and screen.has_class("-short")
        assert screen.query_one("#advisor").display and not screen.query_one("#log").display
        await pilot.press("3")
        assert screen.query_one("#log").display and not screen.query_one("#advisor").display
        assert screen.query_one("#pane-tabs", Tabs).active == "tab-log"
        await pilot.click("#tab-modules")  # the tabs answer the mouse too
        await pilot_until(pilot, lambda: screen.query_one("#modules").display)
        assert screen.query_one("#modules").display and not screen.query_one("#log").display
        assert screen.query_one("#chart-loss").display and screen.query_one("#chart-grad").display
        assert not screen.query_one("#chart-accuracy").display
        await pilot.press("c")
        assert screen.query_one("#chart-accuracy").display and screen.query_one("#chart-ratio").display
        assert not screen.query_one("#chart-loss").display
        await pilot.press("2", "z")
        assert screen.maximized is screen.query_one("#modules")
        await pilot.press("z")
        assert screen.maximized is None


async def test_g_draws_the_outlying_modules_on_the_gradient_chart() -> None:
    session = SyntheticSession(events=seeded_run_events(epochs_fixed=0))
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.store.version > 0)
        chart = app.screen.query_one("#chart-grad", MetricChart)
        await pilot_until(pilot, lambda: chart.data is not None)
        assert [series.label for series in chart.data.series] == ["total"]
        await pilot.press("g")
        await pilot_until(pilot, lambda: len(chart.data.series) > 1)
        labels = [series.label for series in chart.data.series]
        assert labels[0] == "total" and "features.0" in labels and len(labels) == 6


async def test_the_command_palette_lists_every_action_of_the_screen() -> None:
    session = proposal_session()
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await waiting_for_decision(pilot)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for expected in ("Accept (a)", "Reject (r)", "Edit (e)", "Sandbox (v)", "Pause (p)", "Ask (?)", "History (h)",
                         "Layers (l)", "Quit (q)", "Zoom pane (z)", "Last error (x)"):
            assert expected in titles
        await pilot.press("ctrl+p")
        await pilot_until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"Accept")
        await pilot_until(pilot, lambda: palette_settled(app, "Accept"))
        await pilot.press("enter")
        await pilot_until(pilot, lambda: "decide" in session.names())
        assert session.calls[-1] == ("decide", Verdict(decision="accept"))


def palette_settled(app: CopilotApp, title: str) -> bool:
    """The palette has finished searching for what was typed and highlights a command of that title."""
    if not isinstance(app.screen, CommandPalette) or app.screen.query_one(Input).value != title:
        return False
    if any(not worker.is_finished for worker in app.workers if worker.group == CommandPalette._GATHER_COMMANDS_GROUP):
        return False
    commands = app.screen.query_one(CommandList)
    if commands.highlighted is None:
        return False
    prompt = commands.get_option_at_index(commands.highlighted).prompt
    return title.lower() in getattr(prompt, "plain", str(prompt)).lower()


async def palette_run(pilot: Pilot, title: str) -> None:
    app = pilot.app
    await pilot.press("ctrl+p")
    await pilot_until(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*title)
    await pilot_until(pilot, lambda: palette_settled(app, title))
    await pilot.press("enter")
    await pilot_until(pilot, lambda: not isinstance(app.screen, CommandPalette))


async def test_the_command_palette_has_every_action_once_on_every_screen() -> None:
    session = SyntheticSession(events=seeded_run_events())
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.store.version > 0)
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for expected in ("Report", "Undo", "Redo", "Roll back", "Quit (q)"):
            assert titles.count(expected) == 1, (expected, titles)
        assert [title for title in titles if title.startswith("Quit")] == ["Quit (q)"]

        await palette_run(pilot, "Report")
        await pilot_until(pilot, lambda: any(note.message.startswith("Report: ") for note in app._notifications))
        assert "write_report" in session.names()
        await palette_run(pilot, "Undo")
        await pilot_until(pilot, lambda: any(note.message.startswith("undone: the branch is at r1") for note in app._notifications))
        assert "undo" in session.names() and isinstance(app.screen, RunScreen)
        await palette_run(pilot, "Redo")
        await pilot_until(pilot, lambda: any(note.message.startswith("redone: the branch is at r2") for note in app._notifications))
        await palette_run(pilot, "Roll back")
        await pilot_until(pilot, lambda: isinstance(app.screen, HistoryScreen))

        titles = [command.title for command in app.get_system_commands(app.screen)]
        for expected in ("Undo (u)", "Redo (U)", "Roll back (b)", "Report"):
            assert titles.count(expected) == 1, (expected, titles)
        assert "Undo" not in titles and "Roll back" not in titles
        assert [title for title in titles if title.startswith("Quit")] == ["Quit (q)"]


async def test_a_continue_is_a_short_notice_with_nothing_to_accept() -> None:
    session = proposal_session()
    summary = "Training is healthy at val_accuracy 97.0% after 4 epochs; still improving: no change, training goes on."
    continuing = Continuing(Diagnosis(health="healthy", route="continue", summary=summary), "schedule")
    session.assess = lambda trigger: continuing
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: any("continue" in entry.message for entry in app.store.view().log_tail))
        assert app.advisor_state == "idle" and app.turn is None
        assert app.check_action("accept", ()) is None, "nothing to accept"
        assert f"healthy: continue: {summary}" in [entry.message for entry in app.store.view().log_tail]


async def test_a_failing_session_call_is_logged_in_one_line() -> None:
    session = proposal_session()

    def broken_assess(trigger: str) -> Turn:
        raise CopilotError("Bedrock refused the request: model access denied", "enable the model in the Bedrock console")

    session.assess = broken_assess
    app = make_app(session)
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: any(entry.level == "error" for entry in app.store.view().log_tail))
        entry = [entry for entry in app.store.view().log_tail if entry.level == "error"][-1]
        assert entry.message == (
            "the assessment failed: Bedrock refused the request: model access denied "
            "(hint: enable the model in the Bedrock console)"
        )
        await pilot_until(pilot, lambda: app.advisor_state == "idle")

