"""The headless co-pilot: a `Session` driven from a plain terminal, a pipe or a batch job.

Training progress is printed with rich (the same table and bar as `copilot train`).
When the advisor has something to say, the display stops, the diagnosis and the
proposal are printed, and the human answers on stdin: y (accept), n (reject), r
(reject with a reason, asked next) or q (stop here; the proposal waits for
`copilot resume`). `auto_accept="validated"` accepts every proposal that passed its
checks and beat the unchanged run in its trial (model code must also have passed the
sandbox; a proposal "not trialled" is not accepted) and `"all"` accepts everything,
without asking: the study's autonomous mode. Trials are announced with their budget
before they start, and each proposal shows the advisor's claim beside what was measured:
the figures, and both arms' validation curves as a plain-text chart.

An assessment that finds nothing to change (the advisor's "continue") prints one line
and training goes on; nothing is asked. The run ends when the epoch budget is spent or
the human accepts the advisor's finish (converged, or the target met):
the report is written and the rounds are printed. SIGHUP (the SSH connection
dropped) and SIGTERM stop the session cleanly: a checkpoint is written, the trainer
stops, a waiting proposal stays in the advisor's checkpoint, and the process ends within
a bound whatever the terminal does (`copilot.session.shutdown`). No raw terminal mode is
ever used, so there is nothing to restore. This module prints and reads; the session
does the work.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Literal, TextIO

from rich import box
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from copilot.advisor.schemas import ArchitectureProposal, FinishProposal, HParamProposal, Proposal, Verdict
from copilot.advisor.trials.describe import arm_lines, measured_line
from copilot.console.advice import (
    print_architecture_proposal,
    print_diagnosis,
    print_hparam_proposal,
    print_tokens,
    print_trial_curves,
)
from copilot.console.progress import TrainingProgress
from copilot.errors import AdvisorError, CopilotError
from copilot.events import ENDED_STATES, Event, HParamsApplied, ModelSwapped
from copilot.numbers import percent
from copilot.session.controller import AdvisorTurn, Continuing, Session, VerdictResult, resume_command
from copilot.session.shutdown import STOPPING_SIGNALS, BoundedShutdown

AutoAccept = Literal["validated", "all"]
POLL_S = 0.2


class HangUp(Exception):
    """The terminal went away (SIGHUP) or the system asked us to stop (SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stopping_signals(session: Session) -> Iterator[None]:
    """SIGHUP and SIGTERM become `HangUp` in the main thread while the session runs, and start
    the bounded shutdown beside it: printing to a terminal that went away may block for good."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    shutdown = BoundedShutdown(session)

    def hang_up(signum: int, _frame: FrameType | None) -> None:
        shutdown.begin(signum)
        raise HangUp(signum)

    previous = {signum: signal.signal(signum, hang_up) for signum in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def failed_check(proposal: Proposal) -> str | None:
    """Why a proposal is not validated, or None when it is: code must pass its sandbox run, and a
    change must beat the unchanged run in its trial (hyperparameters validate by construction)."""
    if isinstance(proposal, FinishProposal):
        return None
    if isinstance(proposal, ArchitectureProposal) and not proposal.sandbox.ok:
        return f"the sandbox said: {proposal.sandbox.message}"
    if proposal.trials is None or not proposal.trials.beat_incumbent:
        return measured_line(proposal.trials)
    return None


def automatic_verdict(proposal: Proposal, mode: AutoAccept) -> Verdict:
    """Accept what passed its checks ("validated") or everything ("all").

    A finish is the advisor's call that training is done: accepting it stops the run and
    writes the report, as the human's "y" would.
    """
    problem = failed_check(proposal)
    if mode == "all" or problem is None:
        return Verdict(decision="accept")
    return Verdict(decision="reject", reason=f"auto-accept takes validated proposals only: {problem}")


def drive(session: Session, console: Console, *, auto_accept: AutoAccept | None = None, answers: TextIO | None = None) -> int:
    """Run `session` to its end on this console; the exit status (0, or 128 + the signal that stopped it).

    A trainer that ended on an error nobody fixed becomes a `CopilotError` (exit 2 when
    the user can fix it, 1 when it is ours), after the report is written.
    """
    driver = _HeadlessDriver(session, console, auto_accept, answers or sys.stdin)
    with _stopping_signals(session):
        try:
            return driver.run()
        except HangUp as hang_up:
            driver.leave(f"{hang_up}: writing a checkpoint and stopping")
            return 128 + hang_up.signum
        except KeyboardInterrupt:
            driver.leave("interrupted: writing a checkpoint and stopping")
            raise


class _HeadlessDriver:
    def __init__(self, session: Session, console: Console, auto_accept: AutoAccept | None, answers: TextIO) -> None:
        self.session = session
        self.console = console
        self.auto_accept = auto_accept
        self.answers = answers
        self.view = TrainingProgress(console)
        session.on_trials = lambda line: console.print(f"[bold]{escape(line)}[/]")

    def run(self) -> int:
        session = self.session
        self.console.print(
            f"run [bold]{escape(session.run_id)}[/] in {escape(str(session.run.path))}; "
            f"experiment branch [bold]{escape(session.history.branch)}[/]; advisor {escape(session.advisor_name)}"
        )
        turn = session.pending()
        if turn is not None:
            self.console.print("[bold]A proposal from before the restart is waiting.[/]")
        while True:
            if turn is None:
                trigger = self._train_until_due()
                if trigger is None:
                    return self._end()
                turn = self._assess(trigger)
                continue
            decision = self._decide(turn)
            if decision is None:
                self.leave("stopping here; the proposal waits")
                return 0
            self.console.print(("[green]" if decision.accepted else "[yellow]") + escape(decision.message) + "[/]")
            if decision.report is not None:
                self._print_rounds()
                return 0
            turn = decision.retry

    # ------------------------------------------------------------------ training

    def _train_until_due(self) -> str | None:
        """Show progress until the advisor should look (its trigger), or None when training is over."""
        session = self.session
        try:
            with Live(self.view.renderable, console=self.console, refresh_per_second=4, transient=False):
                while True:
                    for event in session.poll_events(POLL_S):
                        self._show(event)
                    trigger = session.due_assessment()
                    if trigger is not None:
                        return trigger
                    if session.trainer_state in ENDED_STATES or (session.paused_on_nonfinite and session.pending() is None):
                        return None
        finally:
            self.console.print()  # the display's last frame ends without a newline on a pipe
            self.view.next_table()

    def _show(self, event: Event) -> None:
        self.view.show(event)
        if isinstance(event, ModelSwapped):
            self.console.print(
                f"[bold]model is now {escape(event.model.class_name)}[/] ({event.model.total_params:,} parameters; "
                f"{event.transferred}/{event.total} tensors carried over) at step {event.step}"
            )
        elif isinstance(event, HParamsApplied):
            changed = ", ".join(f"{key}={value}" for key, value in event.hparams.model_dump().items())
            self.console.print(f"[bold]hyperparameters now:[/] {escape(changed)} (step {event.step})")

    def _end(self) -> int:
        session = self.session
        crashed = session.trainer_state == "crashed" or session.paused_on_nonfinite
        error = session.last_error
        session.stop()
        if error is not None and error.kind == "disk":  # the report would not fit either: say only what to do
            raise CopilotError(error.message, error.hint)
        report = session.write_report()
        self._print_rounds()
        self.console.print(f"report: [bold]{escape(str(report))}[/]")
        if crashed and error is not None:
            failure = CopilotError(error.message, error.hint or f"see {session.run.events_log}")
            failure.exit_code = 2 if error.user_error else 1
            raise failure
        return 0

    def leave(self, why: str) -> None:
        """Stop the session (checkpoint first) and say how to continue."""
        self.console.print(escape(why))
        self.session.stop()
        self.console.print(f"continue with [bold]{escape(resume_command(self.session.run, self.session.settings.runs_dir))}[/]")

    # ------------------------------------------------------------------ the advisor

    def _assess(self, trigger: str) -> AdvisorTurn | None:
        self.console.print(f"[bold]advisor[/] ({escape(self.session.advisor_name)}) assessing the run (trigger: {trigger})…")
        try:
            turn = self.session.assess(trigger)
        except AdvisorError as exc:
            self.console.print(f"[yellow]{escape(exc.message)}[/]" + (f" ({escape(exc.hint)})" if exc.hint else ""))
            return None
        if isinstance(turn, Continuing):
            # Nothing to decide: one line, and training goes on.
            self.console.print(f"[green]advisor: continue[/] {escape(turn.diagnosis.summary)}")
            return None
        return turn

    def _print_turn(self, turn: AdvisorTurn) -> None:
        print_diagnosis(self.console, turn.diagnosis)
        proposal = turn.proposal
        if isinstance(proposal, HParamProposal):
            print_hparam_proposal(self.console, proposal)
        elif isinstance(proposal, ArchitectureProposal):
            print_architecture_proposal(self.console, proposal)
        elif isinstance(proposal, FinishProposal):
            self.console.print(Markdown(proposal.report))
        if not isinstance(proposal, FinishProposal):
            self.console.print(f"[bold]predicted:[/] {escape(proposal.summary)}")
            self.console.print(f"[bold]{escape(measured_line(proposal.trials))}[/]")
            for line in arm_lines(proposal.trials):
                self.console.print(f"  {escape(line)}")
            print_trial_curves(self.console, proposal.trials)
        print_tokens(self.console, list(turn.tokens))
        if turn.edit_problem:
            self.console.print(f"[yellow]your edit was not taken:[/] {escape(turn.edit_problem)}")

    def _decide(self, turn: AdvisorTurn) -> VerdictResult | None:
        """The human's (or the automatic) verdict, applied; None when the human chose to stop here."""
        self._print_turn(turn)
        if self.auto_accept is not None:
            verdict = automatic_verdict(turn.proposal, self.auto_accept)
            self.console.print(f"auto-accept ({self.auto_accept}): {verdict.decision}")
        else:
            verdict = self._ask(turn.proposal)
            if verdict is None:
                return None
        return self.session.decide(verdict)

    def _ask(self, proposal: Proposal) -> Verdict | None:
        question = (
            "End training and write the report? [y]es, [n]o, [q]uit for now: "
            if isinstance(proposal, FinishProposal)
            else "Accept this change? [y]es, [n]o, [r]eject with a reason, [q]uit for now: "
        )
        while True:
            answer = self._read(question)
            if answer is None or answer in ("q", "quit"):
                return None
            if answer in ("y", "yes", "a", "accept"):
                return Verdict(decision="accept")
            if answer in ("n", "no"):
                return Verdict(decision="reject")
            if answer in ("r", "reject") and not isinstance(proposal, FinishProposal):
                reason = self._read("Why? The advisor reads this: ", keep_case=True)
                return Verdict(decision="reject", reason=reason or None)
            self.console.print("please answer y, n, r or q")

    def _read(self, question: str, *, keep_case: bool = False) -> str | None:
        """One line from the answers; None at the end of input (nobody is there to answer)."""
        self.console.print(question, end="")
        line = self.answers.readline()
        if not line:
            self.console.print()
            self.console.print("no answer: end of input")
            return None
        return line.strip() if keep_case else line.strip().lower()

    def _print_rounds(self) -> None:
        table = Table(title="rounds", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("round", "kind", "summary", "val acc before → after", "commit"):
            table.add_column(column)
        for info in self.session.rounds():
            before, after = info.val_accuracy_before, info.val_accuracy_after
            measured = f"{percent(before)} → {percent(after)}"
            table.add_row(info.label, info.kind, escape(info.summary), measured, info.short_sha)
        self.console.print(table)
