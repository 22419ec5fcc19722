"""`copilot tune` in a plain terminal: each trial as it finishes, the table, the chart, the verdict.

The study runs in the session (`Session.tune`); this module prints and reads. Each trial
prints one line when it ends; then the trials table, plotext's chart of the study's
progress and the best trial against the current values. The human answers y/n on
stdin, or `auto_accept` takes the best trial only when it beat the current values'
trial beyond the ranking's noise rule (the check `copilot run --auto-accept validated`
applies). Accepting commits a `tune` round; the run goes on with `copilot resume`.
"""

from __future__ import annotations

import sys
from typing import TextIO

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from copilot.advisor.trials.describe import measured_line
from copilot.console.headless import automatic_verdict
from copilot.session.controller import Session, resume_command
from copilot.tuning.study import TuneRequest, TuneResult
from copilot.tuning.summary import TRIAL_COLUMNS, progress_chart, trial_line, trial_row, verdict_line


def drive_tune(session: Session, console: Console, request: TuneRequest, *, auto_accept: bool, answers: TextIO | None = None) -> int:
    """Run the round's study on `session`, show it, and decide; the exit status."""
    console.print(f"tuning run [bold]{escape(session.run_id)}[/] (study in {escape(str(session.run.tune_db))})")
    session.on_trials = lambda line: console.print(f"[bold]{escape(line)}[/]")
    result = session.tune(request, on_trial=lambda trial, plan: console.print(f"  {escape(trial_line(trial, plan))}"))
    print_tune_result(console, result)
    if result.proposal is None:
        accept = False
    elif auto_accept:
        verdict = automatic_verdict(result.proposal, "validated")
        console.print(f"auto-accept (validated): {verdict.decision}" + (f" ({escape(verdict.reason)})" if verdict.reason else ""))
        accept = verdict.decision == "accept"
    else:
        accept = _ask(console, answers or sys.stdin)
    decision = session.decide_tune(result, accept=accept)
    console.print(("[green]" if decision.accepted else "[yellow]") + escape(decision.message) + "[/]")
    console.print(f"continue training with [bold]{escape(resume_command(session.run, session.settings.runs_dir))}[/]")
    return 0


def print_tune_result(console: Console, result: TuneResult) -> None:
    """The trials table (the enqueued ones named), the progress chart, the best against the current values."""
    table = Table(title=f"{result.study}: {len(result.trials)} trials", title_justify="left", box=box.SIMPLE_HEAD)
    for column in TRIAL_COLUMNS:
        table.add_column(column)
    best = result.best
    for trial in result.trials:
        row = trial_row(trial, result.plan)
        table.add_row(*(escape(cell) for cell in row), style="bold green" if best is not None and trial.number == best.number else None)
    console.print(table)
    console.out(progress_chart(result, width=min(console.width, 100)))
    console.print(f"[bold]{escape(verdict_line(result))}[/]")
    if result.proposal is not None:
        console.print(f"[bold]proposal:[/] {escape(result.proposal.summary)}")
        console.print(escape(measured_line(result.proposal.trials)))


def _ask(console: Console, answers: TextIO) -> bool:
    """y or n on stdin; the end of input (nobody is there to answer) is a no."""
    while True:
        console.print("Commit the best trial's values as a tune round? [y]es, [n]o: ", end="")
        line = answers.readline()
        if not line:
            console.print("\nno answer: end of input")
            return False
        answer = line.strip().lower()
        if answer in ("y", "yes", "n", "no"):
            return answer.startswith("y")
        console.print("please answer y or n")
