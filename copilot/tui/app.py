"""The Textual app: one co-pilot session on screen, and `run_app`, the way the CLI starts it.

The app owns no training, advisor or git logic; it drives a `Session` and shows what
comes back. Threads, each with its own worker group so `exclusive` never cancels
the wrong kind of work:
- "ingest": drains `session.poll_events(timeout=...)` into the `MetricsStore` (a
  plain, lock-protected object), posts a message only for the few events that need
  an answer on screen, and asks `session.due_assessment()` when the advisor is free;
- "advisor": `session.assess` / `decide` / `pending`, which block for seconds;
- "git": rounds, diffs, rollback, undo, redo, serialised by one lock;
- "control": pause, resume, the report; "lifecycle": the checkpoint on quit;
- "charts": the `ChartBuilder`, which builds the plotext charts one at a time.
The screen in front redraws on a timer (`settings.tui.refresh_hz`) and only when the
store's version or the app's own state moved. Blocking calls run in daemon threads
that the worker waits on while watching for cancellation (`workers.py`), so quitting
never waits for an LLM or a slow trainer to answer. What the threads post back is in
`messages.py`; editing a proposal in $EDITOR is `editor.py`.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.text import Text
from textual import work
from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import ActiveBinding, Binding
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.worker import Worker, WorkerCancelled, get_current_worker

from copilot.advisor.schemas import ArchitectureProposal, FinishProposal, Verdict
from copilot.config import Settings
from copilot.errors import CopilotError, error_summary
from copilot.events import ENDED_STATES, Finished, HParamsApplied, ModelSwapped, TrainerError
from copilot.session.shutdown import STOPPING_SIGNALS, BoundedShutdown
from copilot.tui.editor import edit_proposal
from copilot.tui.messages import (
    AssessmentDue,
    BackgroundDone,
    BackgroundFailed,
    HistoryChanged,
    ProposalWithdrawn,
    TrainerNotice,
    TrialsStarted,
)
from copilot.tui.screens.dialogs import ConfirmDialog, ReasonDialog, TextDialog
from copilot.tui.screens.history import HistoryScreen
from copilot.tui.screens.layers import LayersScreen
from copilot.tui.screens.live import LiveScreen
from copilot.tui.screens.run import RunScreen
from copilot.tui.store import LogPaneEntry, LogSource, MetricsStore, StoreView
from copilot.tui.widgets.charts import ChartBuilder
from copilot.tui.widgets.proposal import sandbox_details
from copilot.tui.widgets.status import AdvisorActivity, StatusInfo
from copilot.tui.workers import call_interruptibly
from copilot.tuning.study import TuneRequest
from copilot.tuning.summary import table_lines, trial_line, verdict_line

if TYPE_CHECKING:
    from copilot.advisor.schemas import Diagnosis
    from copilot.session.controller import AdvisorTurn, BranchMoved, Continuing, Session, VerdictResult
    from copilot.tuning.study import TunedTrial, TunePlan, TuneResult

# How long a toast stays, by severity: short, since the log pane keeps every line (Enter: its full
# text). At 8 s and more they piled up over the panes after what they said was done.
TOAST_TIMEOUT_S: dict[SeverityLevel, float] = {"information": 4.0, "warning": 6.0, "error": 8.0}
POLL_TIMEOUT_S = 0.1  # how long the ingest thread waits for events; bounds how late it sees a quit
NOTABLE_EVENTS = (TrainerError, Finished, ModelSwapped, HParamsApplied)

# Help text for the command palette, by action name; every binding of the app and its screens is listed.
ACTION_HELP = {
    "accept": "Accept the proposal: commit it on the experiment branch and apply it to the trainer",
    "reject": "Reject the proposal and tell the advisor why",
    "edit": "Edit the proposal in $EDITOR; edited code is checked in the sandbox before use",
    "sandbox_report": "Show the sandbox's full report on the proposed code",
    "toggle_side_by_side": "Switch the architecture diff between unified and side by side",
    "toggle_module_series": "Draw the modules with the most unusual gradient norms on the gradient chart",
    "last_error": "Show the full text of the latest error",
    "next_chart_page": "Show the other pair of charts (short terminals)",
    "pane": "Bring a pane forward (narrow terminals)",
    "maximize_pane": "Zoom the focused pane to the whole screen, or back",
    "pause": "Pause or resume training",
    "ask": "Ask the advisor to assess the run now",
    "tune": "An Optuna study of the hyperparameters from the current checkpoint, the advisor's guess among its trials",
    "history": "Rounds from git: diffs, rollback, undo, redo",
    "layers": "Every module's gradient norm, update ratio and dead or saturated units",
    "show_run": "Back to the run screen",
    "quit": "Write a checkpoint, stop training and quit",
    "mark": "Mark a round to compare (two marks show the diff)",
    "rollback": "Roll the branch back to the highlighted round",
    "undo": "Undo the last round on the branch",
    "redo": "Redo the round undo removed",
    "reload": "Read the rounds from git again",
    "report": "Write the run's report (report.md in the run folder) now",
    "next_sort": "Sort by the next column",
    "reverse_sort": "Reverse the sort order",
}

# In the palette from every screen, unless the screen in front has a key for it: (name, title, action).
PALETTE_ONLY = (
    ("undo", "Undo", "undo_round"),
    ("redo", "Redo", "redo_round"),
    ("rollback", "Roll back", "pick_rollback"),
    ("report", "Report", "write_report"),
)


def error_line(error: BaseException) -> str:
    """One line for the screen: a CopilotError's message and hint, anything else by type and first line."""
    return str(error) if isinstance(error, CopilotError) else error_summary(error)  # a CopilotError's str is "message (hint: hint)"


class CopilotApp(App[int]):
    """Charts, diagnosis, proposal and log of one session, with history and layers a key away."""

    CSS_PATH = "app.tcss"
    TITLE = "copilot"
    MODES = {"run": RunScreen, "history": HistoryScreen, "layers": LayersScreen}
    DEFAULT_MODE = "run"
    BINDINGS = [
        Binding("p", "pause", "Pause"),
        Binding("question_mark", "ask", "Ask"),
        Binding("t", "tune", "Tune hyperparameters", show=False),  # the footer is full; the palette lists it
        Binding("h", "history", "History"),
        Binding("l", "layers", "Layers"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        session: "Session",
        settings: Settings,
        *,
        banner: Sequence[str] | None = None,  # wordings of the one-row banner (see `Banner`)
        clock: Callable[[], float] = time.time,
        handle_signals: bool = False,
    ) -> None:
        super().__init__()
        self.session = session
        self.settings = settings
        self.banner = banner
        self.store = MetricsStore(clock=clock)
        self.chart_builder = ChartBuilder()
        self.handle_signals = handle_signals
        self.advisor_state: AdvisorActivity = "idle"
        self.trigger: str | None = None
        self.turn: AdvisorTurn | None = None
        self.last_diagnosis: tuple[Diagnosis, str] | None = None
        self.side_by_side = False
        self.drafts: dict[str, str] = {}  # the user's last edit of each proposal, reopened by the next `e`
        self.state_version = 0  # moves whenever something the screens show changes outside the store
        self.session_stopped = False
        self.crash: BaseException | None = None
        self._view: StoreView | None = None
        self._shown: tuple[int, int, Screen] | None = None
        self._git_lock = threading.Lock()
        self._ingest_done = threading.Event()
        self._withdrawn: AdvisorTurn | None = None  # the last turn withdrawn, should its arrival come after
        self._toasts_until: dict[str, float] = {}  # each toast up and when it goes (monotonic): one of each

    # ------------------------------------------------------------------ start

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """A toast for `TOAST_TIMEOUT_S[severity]`, unless the same one is still up (a key pressed
        twice said it twice, stacked). Plain text: messages quote model code and paths, not markup.

        Counted here, not from Textual's list of notifications, which a toast joins only once
        its message is handled: two presses in a row both found it empty."""
        now = time.monotonic()
        if self._toasts_until.get(message, 0.0) > now:
            return
        timeout = TOAST_TIMEOUT_S[severity] if timeout is None else timeout
        self._toasts_until = {shown: until for shown, until in self._toasts_until.items() if until > now} | {message: now + timeout}
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def clear_notifications(self) -> None:
        self._toasts_until = {}
        super().clear_notifications()

    def on_mount(self) -> None:
        self.set_interval(1 / self.settings.tui.refresh_hz, self.refresh_screen)
        self.session.on_trials = lambda line: self.post_message(TrialsStarted(line))
        self.session.on_withdrawn = lambda turn, line: self.post_message(ProposalWithdrawn(turn, line))
        self.session.on_history_changed = lambda: self.post_message(HistoryChanged())
        self._ingest()
        self._build_charts()
        self._in_background("advisor", "advisor", "looking for a pending proposal", self._pending_or_last, then=self._show_pending)
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            shutdown = BoundedShutdown(self.session)

            def stop_signal(signum: int, _frame: object) -> None:
                # The SSH connection dropped or the system asks us to stop: the checkpoint and a
                # bounded end start at once, in a thread of their own (the loop may be blocked on a
                # terminal nobody reads); the app's own exit restores the terminal if it can.
                shutdown.begin(signum)
                loop.call_soon_threadsafe(partial(self.exit, return_code=128 + signum))

            for signum in STOPPING_SIGNALS:
                signal.signal(signum, stop_signal)

    def _pending_or_last(self) -> tuple[AdvisorTurn | None, tuple[Diagnosis, str] | None]:
        """The proposal waiting at the gate, and the ledger's last diagnosis (a reopened run's advisor pane)."""
        return self.session.pending(), self.session.recorded_diagnosis()

    def _show_pending(self, found: tuple[AdvisorTurn | None, tuple[Diagnosis, str] | None]) -> None:
        turn, recorded = found
        if turn is not None:
            self.store.note("advisor", "info", f"a proposal from before the restart is waiting: {turn.proposal.summary}")
            self._receive_turn(turn)
        elif recorded is not None and self.last_diagnosis is None:
            self.last_diagnosis = recorded
            self.touch()

    # ------------------------------------------------------------------ redraw

    def touch(self) -> None:
        """Something the screens show changed outside the store: redraw now, not at the next tick."""
        self.state_version += 1
        self.refresh_screen()

    def refresh_screen(self, force: bool = False) -> None:
        try:
            screen = self.screen
        except ScreenStackError:  # shutting down: no screen left to draw on
            return
        if not isinstance(screen, LiveScreen):
            return
        if self._view is None or self._view.version != self.store.version:
            self._view = self.store.view()
        shown = (self._view.version, self.state_version, screen)
        if shown == self._shown and not force:
            return
        self._shown = shown
        screen.refresh_from(self._view)

    def status_info(self, view: StoreView) -> StatusInfo:
        return StatusInfo(
            run_name=self.session.run_id,
            requested_model=self.session.requested_model,
            model=view.model_name,
            device=view.device,
            trainer_state="held" if view.state == "paused" and self.session.held_for_advisor else view.state,
            epoch=view.epoch,
            epochs_total=view.hparams.epochs if view.hparams else None,
            step=view.step,
            samples_per_sec=view.samples_per_sec,
            advisor_name=self.session.advisor_name,
            advisor_state=self.advisor_state,
            trigger=self.trigger,
            round=self.session.round,
            tokens=self.session.tokens_spent,
        )

    # ------------------------------------------------------------------ the ingest thread

    @work(thread=True, group="ingest", exit_on_error=False, name="ingest")
    def _ingest(self) -> None:
        worker = get_current_worker()
        # A reopened run's screen comes back as it was (charts, round markers, step and speed) before live events.
        self.store.ingest_many(self.session.take_recorded())
        try:
            while not worker.is_cancelled:
                try:
                    events = self.session.poll_events(timeout=POLL_TIMEOUT_S)
                    trigger = self.session.due_assessment()
                except Exception as error:  # the trainer link broke: say so, keep the app up, retry
                    self.post_message(BackgroundFailed("trainer", "reading the trainer's events", error, None))
                    worker.cancelled_event.wait(1.0)
                    continue
                if events:
                    self.store.ingest_many(events)
                    notable = tuple(event for event in events if isinstance(event, NOTABLE_EVENTS))
                    if notable:
                        self.post_message(TrainerNotice(notable))
                if trigger and self.advisor_state == "idle":
                    self.post_message(AssessmentDue(trigger))
        finally:
            self._ingest_done.set()

    def on_trials_started(self, message: TrialsStarted) -> None:
        self.store.note("advisor", "info", message.line)
        self.notify(message.line)

    @work(thread=True, group="charts", exit_on_error=False, name="charts")
    def _build_charts(self) -> None:
        worker = get_current_worker()
        self.chart_builder.run(lambda: worker.is_cancelled)

    def on_assessment_due(self, message: AssessmentDue) -> None:
        self.start_assessment(message.trigger)

    def on_trainer_notice(self, message: TrainerNotice) -> None:
        for event in message.events:
            if isinstance(event, TrainerError):
                self.notify(f"{event.kind} error: {event.message} (x: full text)", severity="error")
            elif isinstance(event, ModelSwapped):
                self.notify(f"model swapped to {event.model.class_name}: {event.transferred}/{event.total} tensors carried over")
            elif isinstance(event, HParamsApplied):
                self.notify("new hyperparameters applied")
            elif isinstance(event, Finished):
                self._finished(event)
        self.touch()

    def _finished(self, event: Finished) -> None:
        if event.reason == "epochs_done":
            self.notify("Training finished: the epoch budget is spent. Writing the report…")
            self.action_write_report()
        elif event.reason == "error":
            self.notify(
                "The trainer stopped on an error; the advisor looks at it. "
                f"Or quit and continue later with `copilot resume {self.session.run_id}`.",
                severity="error",
            )

    def _report_written(self, path: Path) -> None:
        self.store.note("app", "info", f"report written: {path}")
        self.notify(f"Report: {path}")

    # ------------------------------------------------------------------ background calls

    def _in_background(
        self,
        source: LogSource,
        group: str,
        what: str,
        function: Callable[..., Any],
        *args: Any,
        then: Callable[[Any], None],
        failed: Callable[[], None] | None = None,
    ) -> Worker:
        """Run a blocking session call in a thread worker of `group`; `then` gets its result on the UI thread."""

        def call() -> None:
            try:
                result = call_interruptibly(function, *args)
            except WorkerCancelled:
                return
            except Exception as error:
                self.post_message(BackgroundFailed(source, what, error, failed))
                return
            self.post_message(BackgroundDone(then, result))

        return self.run_worker(call, name=what, group=group, thread=True, exit_on_error=False)

    def on_background_done(self, message: BackgroundDone) -> None:
        if self.is_running:  # a result that lands while the app shuts down has no screen left to show it on
            message.then(message.result)

    def on_background_failed(self, message: BackgroundFailed) -> None:
        if not self.is_running:
            return
        line = f"{message.what} failed: {error_line(message.error)}"
        detail = message.detail if not isinstance(message.error, CopilotError) else ""
        self.store.note(message.source, "error", line, detail)
        self.notify(line, severity="error")
        if message.then is not None:
            message.then()
        self.touch()

    def run_git(self, what: str, function: Callable[..., Any], *args: Any, on_result: Callable[[Any], None]) -> None:
        """A history operation: one at a time (GitPython is not thread-safe), never on the UI thread."""

        def locked() -> Any:
            with self._git_lock:
                return function(*args)

        locked.__name__ = getattr(function, "__name__", "git")
        self._in_background("git", "git", what, locked, then=on_result)

    # ------------------------------------------------------------------ the advisor

    def _set_advisor(self, state: AdvisorActivity, trigger: str | None = None) -> None:
        self.advisor_state = state
        self.trigger = trigger
        self.refresh_bindings()
        self.touch()

    def start_assessment(self, trigger: str) -> None:
        if self.advisor_state != "idle":
            return
        self._set_advisor("thinking", trigger)
        self.store.note("advisor", "info", f"assessing the run (trigger: {trigger})")
        self._in_background(
            "advisor", "advisor", "the assessment", self.session.assess, trigger,
            then=self._receive_turn, failed=lambda: self._set_advisor("idle"),
        )

    def _receive_turn(self, turn: AdvisorTurn | Continuing) -> None:
        from copilot.session.controller import Continuing  # at run time only here: see the imports above

        if isinstance(turn, Continuing):
            # Nothing to accept: a short notice, and the advisor is free again.
            self.last_diagnosis = (turn.diagnosis, turn.trigger)
            self.store.note("advisor", "info", f"{turn.diagnosis.health}: continue: {turn.diagnosis.summary}")
            self.notify(f"Advisor: no change needed; training goes on. {turn.diagnosis.summary}")
            self._set_advisor("idle")
            return
        if turn is self._withdrawn:  # withdrawn before it reached the screen (a rollback meanwhile)
            self._set_advisor("idle")
            return
        self.turn = turn
        self.last_diagnosis = (turn.diagnosis, turn.trigger)
        self.store.note("advisor", "info", f"{turn.diagnosis.health}: proposes {turn.proposal.kind}: {turn.proposal.summary}")
        self._set_advisor("waiting")
        if isinstance(self.screen, RunScreen):
            self.screen.show_advisor()  # the pane itself says it: a toast on top would hide it
        else:
            self.notify(f"Proposal: {turn.proposal.summary} (a accept · r reject · e edit)")

    def _decide(self, verdict: Verdict) -> None:
        self._set_advisor("applying")
        self._in_background(
            "advisor", "advisor", f"{verdict.decision}ing the proposal", self.session.decide, verdict,
            then=self._decided, failed=lambda: self._set_advisor("waiting" if self.turn is not None else "idle"),
        )

    def on_history_changed(self, _message: HistoryChanged) -> None:
        """The rounds table in front reads git again; one behind reads it when it comes back."""
        if isinstance(self.screen, HistoryScreen):
            self.screen.action_reload()

    def on_proposal_withdrawn(self, message: ProposalWithdrawn) -> None:
        """What the proposal was made for changed: the pane clears, and the advisor is free to look again."""
        self._withdrawn = message.turn
        self.store.note("advisor", "info", message.line)
        self.notify(message.line, severity="warning")
        if self.turn is message.turn or self.turn is None:
            self.turn = None
            if self.advisor_state == "waiting":
                self._set_advisor("idle")
        self.touch()

    def _decided(self, decision: VerdictResult) -> None:
        if decision.retry is not None:
            self.turn = decision.retry
            self.store.note("advisor", "warning", decision.message)
            self.notify(decision.message, severity="warning")
            self._set_advisor("waiting")
            return
        self.turn = None
        self.drafts.clear()
        if decision.accepted and decision.round is not None:
            info = decision.round
            self.store.note("git", "info", f"{info.label} committed {info.short_sha}: {info.subject}")
        self.store.note("advisor", "info", decision.message)
        self.notify(decision.message)
        if decision.report is not None:
            self._report_written(decision.report)
        self._set_advisor("idle")

    def _waiting_turn(self) -> AdvisorTurn | None:
        return self.turn if self.advisor_state == "waiting" else None

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Proposal keys are greyed out (None) while nothing waits for a decision; a dialog keeps its keys."""
        if isinstance(self.screen, (ConfirmDialog, ReasonDialog, TextDialog)) and action in ACTION_HELP:
            return False
        turn = self._waiting_turn()
        if action in ("accept", "reject"):
            return turn is not None or None
        if action == "edit":
            return (turn is not None and not isinstance(turn.proposal, FinishProposal)) or None
        if action in ("sandbox_report", "toggle_side_by_side"):
            return (turn is not None and isinstance(turn.proposal, ArchitectureProposal)) or None
        return True

    def action_accept(self) -> None:
        if self._waiting_turn() is not None:
            self._decide(Verdict(decision="accept"))

    def action_reject(self) -> None:
        if self._waiting_turn() is None:
            return

        def answered(reason: str | None) -> None:
            if reason is not None and self._waiting_turn() is not None:
                self._decide(Verdict(decision="reject", reason=reason or None))

        self.push_screen(ReasonDialog("Why reject it? The advisor reads this.", "e.g. too many parameters"), answered)

    def action_edit(self) -> None:
        turn = self._waiting_turn()
        if turn is None or isinstance(turn.proposal, FinishProposal):
            return
        try:
            verdict = edit_proposal(self, turn.proposal, self.drafts)
        except CopilotError as error:
            self.notify(error_line(error), severity="error")
            return
        if verdict is None:
            self.notify("Nothing changed in the editor; the proposal still waits.", severity="warning")
            return
        self._decide(verdict)

    def action_sandbox_report(self) -> None:
        turn = self._waiting_turn()
        if turn is not None and isinstance(turn.proposal, ArchitectureProposal):
            self.push_screen(TextDialog("Sandbox report", sandbox_details(turn.proposal.sandbox)))

    def action_toggle_side_by_side(self) -> None:
        self.side_by_side = not self.side_by_side
        self.touch()

    def action_pause(self) -> None:
        state = self.store.state
        if state in ENDED_STATES:
            self.notify("Training is not running.", severity="warning")
            return
        # Held for the advisor (the header says "held"), the key trains on anyway, as from the user's own pause.
        paused = state == "paused"
        call = self.session.resume_training if paused else self.session.pause
        line = "pausing training" if not paused else "training on: it was held for the advisor" if self.session.held_for_advisor else "resuming training"
        self.store.note("app", "info", line)
        self._in_background("trainer", "control", "resume" if paused else "pause", call, then=lambda _: self.touch())
        self.touch()

    def action_ask(self) -> None:
        if self.advisor_state == "idle":
            self.start_assessment("demand")
        elif self.advisor_state == "waiting":
            self.notify("A proposal is waiting for you: a accept · r reject · e edit.", severity="warning")
        else:
            self.notify("The advisor is busy; it will show what it finds.", severity="warning")

    def action_tune(self) -> None:
        """The round's Optuna study in the background (the trainer held, as for trials), then its best trial to decide on."""
        if self.advisor_state != "idle":
            self.notify("The advisor is busy or a proposal waits: decide on it first.", severity="warning")
            return
        self._set_advisor("thinking", "tune")
        self.store.note("advisor", "info", "tuning the hyperparameters (an Optuna study; the trials are in the log as they end)")

        def finished(trial: TunedTrial, plan: TunePlan) -> None:
            self.store.note("advisor", "info", f"tune: {trial_line(trial, plan)}")

        self._in_background(
            "advisor", "advisor", "the tune", self.session.tune, TuneRequest(trials=self.settings.tune.trials, sampler=self.settings.tune.sampler), finished,
            then=self._decide_tune, failed=lambda: self._set_advisor("idle"),
        )  # fmt: skip

    def _decide_tune(self, result: TuneResult) -> None:
        if result.proposal is None:
            self._set_advisor("applying")
            self._in_background("advisor", "advisor", "the tune's verdict", self.session.decide_tune, result, False, then=self._tune_decided)
            return
        self._set_advisor("waiting", "tune")
        detail = "\n".join([verdict_line(result), "", *table_lines(result)])

        def answered(accept: bool | None) -> None:
            self._set_advisor("applying")
            self._in_background(
                "advisor", "advisor", "the tune's verdict", self.session.decide_tune, result, bool(accept), then=self._tune_decided,
                failed=lambda: self._set_advisor("idle"),
            )  # fmt: skip

        self.push_screen(ConfirmDialog(f"Commit the tuned values? {result.proposal.summary}", detail, confirm="Commit"), answered)

    def _tune_decided(self, decision: VerdictResult) -> None:
        self.store.note("advisor", "info", decision.message)
        self.notify(decision.message)
        self._set_advisor("idle")
        self.touch()

    def action_history(self) -> None:
        self.switch_mode("run" if self.current_mode == "history" else "history")

    def action_layers(self) -> None:
        self.switch_mode("run" if self.current_mode == "layers" else "layers")

    def action_show_run(self) -> None:
        self.switch_mode("run")

    async def action_quit(self) -> None:
        if self.advisor_state == "stopping":
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self._stop_and_exit()

        self.push_screen(
            ConfirmDialog(
                "Quit copilot?",
                f"Training stops after writing a checkpoint. Continue later with `copilot resume {self.session.run_id}`.",
                confirm="Quit",
            ),
            answered,
        )

    def _stop_and_exit(self) -> None:
        self._set_advisor("stopping")
        self.workers.cancel_group(self, "ingest")
        self.workers.cancel_group(self, "advisor")
        self._stop_session()

    @work(thread=True, group="lifecycle", exit_on_error=False, name="stop")
    def _stop_session(self) -> None:
        self._ingest_done.wait(POLL_TIMEOUT_S * 5)  # poll_events belongs to one thread at a time
        try:
            self.session.stop()
        except Exception as error:
            self.post_message(BackgroundFailed("trainer", "stopping the trainer", error, None))
        finally:
            self.session_stopped = True
            self.call_from_thread(self.exit, 0)

    # ------------------------------------------------------------------ full texts

    def show_log_entry(self, entry: LogPaneEntry) -> None:
        body = Group(Text(entry.message, "bold"), Text(entry.detail)) if entry.detail else Text(entry.message)
        self.push_screen(TextDialog(f"{entry.source} · {entry.level}", body))

    def show_last_error(self) -> None:
        view = self._view or self.store.view()
        error = next((entry for entry in reversed(view.log_tail) if entry.level == "error"), None)
        if error is None:
            self.notify("No errors so far.")
            return
        self.show_log_entry(error)

    # ------------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Every action once: the keys of the app and of the screen in front by name, the branch and
        report actions from any screen, and Textual's own commands but its Quit (ours checkpoints first)."""
        for command in super().get_system_commands(screen):
            if command.title != "Quit":
                yield command
        # One entry an action: q and Textual's hidden ctrl+q are one Quit, named by the key the footer shows.
        chosen: dict[str, ActiveBinding] = {}
        for active in screen.active_bindings.values():
            name = active.binding.action.removeprefix("app.").split("(")[0]
            if name in ACTION_HELP and active.enabled and (name not in chosen or active.binding.show > chosen[name].binding.show):
                chosen[name] = active
        for name, active in chosen.items():
            binding = active.binding
            title = f"{binding.description} ({self.get_key_display(binding)})"
            yield SystemCommand(title, ACTION_HELP[name], _runner(self, binding.action, active.node))
        for name, title, action in PALETTE_ONLY:
            if name not in chosen:
                yield SystemCommand(title, ACTION_HELP[name], _runner(self, action, self))

    def action_write_report(self) -> None:
        self._in_background("app", "control", "writing the report", self.session.write_report, then=self._report_written)

    def action_undo_round(self) -> None:
        self.run_git("undo", self.session.undo, on_result=self.branch_moved)

    def action_redo_round(self) -> None:
        self.run_git("redo", self.session.redo, on_result=self.branch_moved)

    def action_pick_rollback(self) -> None:
        """A rollback needs a round: the history screen, where b rolls back to the highlighted one."""
        self.switch_mode("history")
        self.notify("Highlight the round to go back to and press b.")

    def branch_moved(self, moved: BranchMoved) -> None:
        """After an undo, redo or rollback: say where the branch is and which weights train (the
        history in front reloads on the session's `on_history_changed`)."""
        line = f"{moved.message} ({moved.round.short_sha}: {moved.round.summary})"
        self.store.note("git", "info", line)
        self.notify(line)

    # ------------------------------------------------------------------ crashes

    def _handle_exception(self, error: Exception) -> None:
        # Our bug: keep it for run_app, which hands it to the CLI (one line on screen, traceback in a file).
        self.crash = self.crash or error
        super()._handle_exception(error)

    def _fatal_error(self) -> None:
        self._close_messages_no_wait()  # no traceback painted over the user's terminal


def _runner(app: App, action: str, node: Any) -> Callable[[], Any]:
    async def run() -> None:
        await app.run_action(action, node)

    return run


def run_app(session: "Session", settings: Settings, *, banner: Sequence[str] | None = None) -> int:
    """Run the app on this terminal until the user quits; the session is always stopped (checkpointed) after.

    Returns the exit status: 0 when the user quit, 129 on SIGHUP, 143 on SIGTERM. An
    unexpected error inside the app is raised again here, after the terminal is restored.
    It expects the process to end soon after: the app's objects are frozen out of the
    garbage collector, whose final pass over them took half of a one-second quit.
    """
    app = CopilotApp(session, settings, banner=banner, handle_signals=True)
    try:
        app.run()
    finally:
        if not app.session_stopped:
            session.stop()
        gc.freeze()
    if app.crash is not None:
        raise app.crash
    return app.return_code or 0
