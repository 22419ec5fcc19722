"""`copilot log | diff R1 R2 | show R | rollback R | undo | redo`: a run's history on the command line.

Thin: parse the arguments, call one `ExperimentHistory` method, print the answer with
rich. Registering stays cheap; GitPython and the history package load in the handlers.
Rounds are given as `3` or `r3`; `--run` picks a run by id, id prefix or branch
(default: the latest), `--repo` the repository (default: the current folder). `show`
also draws the round's trial curves when the run's ledger (in its run folder under the
repository's `runs_dir`) holds the trial of the proposal the round applied.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from copilot.errors import HistoryError
from copilot.numbers import decimals

if TYPE_CHECKING:
    from copilot.advisor.schemas import TrialReport
    from copilot.history.experiment import ExperimentHistory
    from copilot.history.rounds import RoundInfo


def register(subparsers: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run", metavar="RUN", help="run id, a unique prefix of it, or its branch (default: the latest run)")
    common.add_argument("--repo", metavar="PATH", type=Path, help="the repository (default: the current folder)")

    log = subparsers.add_parser("log", parents=[common], help="list a run's rounds", description="List a run's rounds.")
    log.add_argument("--json", action="store_true", help="one JSON object per round instead of a table")
    log.set_defaults(handler=_closed_pipe_is_fine(run_log))

    diff = subparsers.add_parser(
        "diff", parents=[common], help="compare two rounds", description="Model and hyperparameter diff, and metrics."
    )
    diff.add_argument("first", metavar="R1", help="the older round, e.g. r2")
    diff.add_argument("second", metavar="R2", help="the newer round, e.g. r5")
    diff.set_defaults(handler=_closed_pipe_is_fine(run_diff))

    show = subparsers.add_parser("show", parents=[common], help="show one round", description="One round in full.")
    show.add_argument("round", metavar="R", help="the round, e.g. r3")
    show.add_argument("--json", action="store_true", help="print the round as JSON")
    show.set_defaults(handler=_closed_pipe_is_fine(run_show))

    rollback = subparsers.add_parser(
        "rollback",
        parents=[common],
        help="add a round that restores round R's files",
        description="Add a round whose files equal round R's; the rounds after R stay in the history.",
    )
    rollback.add_argument("round", metavar="R", help="the round to go back to, e.g. r3")
    rollback.set_defaults(handler=_closed_pipe_is_fine(run_rollback))

    undo = subparsers.add_parser(
        "undo", parents=[common], help="take the last round off the branch", description="Take the last round off."
    )
    undo.set_defaults(handler=_closed_pipe_is_fine(run_undo))
    redo = subparsers.add_parser(
        "redo", parents=[common], help="put back the round undo took off", description="Put back an undone round."
    )
    redo.set_defaults(handler=_closed_pipe_is_fine(run_redo))


class _StdoutConsole(Console):
    """A console that lets a closed pipe reach `_closed_pipe_is_fine`.

    rich answers a closed pipe by exiting with status 1 on its own (`Console.on_broken_pipe`),
    so `copilot log | head` failed in a `set -o pipefail` script.
    """

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


def _closed_pipe_is_fine(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`copilot log | head` closes the pipe early; that is the reader's choice, not an error."""

    @functools.wraps(handler)
    def guarded(args: argparse.Namespace) -> int:
        try:
            code = handler(args)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's final flush
            return code
        except BrokenPipeError:
            # Point stdout at /dev/null so the interpreter's final flush does not fail again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

    return guarded


def _open(args: argparse.Namespace) -> "ExperimentHistory":
    from copilot.history.experiment import ExperimentHistory

    return ExperimentHistory.open(args.repo or Path.cwd(), args.run)


def _round_number(text: str) -> int:
    from copilot.history.messages import parse_round_label

    number = parse_round_label(text)
    if number is None:
        raise HistoryError(f"{text!r} is not a round", "give a round as 3 or r3; `copilot log` lists them")
    return number


def _before_after(before: float | None, after: float | None) -> str:
    """`0.121→0.455`: what was measured when the round was proposed, and after it."""
    if before is None and after is None:
        return "–"
    return f"{decimals(before)}→{decimals(after)}"


def _print_patch(console: Console, patch: str) -> None:
    styles = (("+++", "bold"), ("---", "bold"), ("diff --git", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"))
    for line in patch.splitlines():
        style = next((style for prefix, style in styles if line.startswith(prefix)), "")
        console.print(Text(line, style=style), soft_wrap=True)


def run_log(args: argparse.Namespace) -> int:
    history = _open(args)
    rounds = history.rounds()
    console = _StdoutConsole(highlight=False)
    if args.json:
        for info in rounds:
            print(info.model_dump_json())
        return 0
    headers = ("round", "kind", "summary", "val acc", "val loss", "advisor", "commit", "time")
    rows = []
    for info in rounds:
        advisor = info.advisor or "–"
        rows.append(
            (
                info.label,
                info.kind,
                info.summary,
                _before_after(info.val_accuracy_before, info.val_accuracy_after),
                _before_after(info.val_loss_before, info.val_loss_after),
                f"{advisor} (edited)" if info.verdict == "edited" else advisor,
                info.short_sha,
                info.time.astimezone().strftime("%m-%d %H:%M"),
            )
        )
    # The summary takes what the other columns leave, so every round stays on one line;
    # on a narrow terminal the least needed columns go first.
    widths = dict(zip(headers, (max(len(cell) for cell in column) for column in zip(headers, *rows))))
    shown = list(headers)
    for optional in ("time", "advisor", "val loss"):
        if sum(widths[name] + 3 for name in shown if name != "summary") + 4 + 24 <= console.width:
            break
        shown.remove(optional)
    summary_width = console.width - sum(widths[name] + 3 for name in shown if name != "summary") - 4
    table = Table(
        title=f"run {escape(history.run_id)} · {escape(history.branch)} · {escape(history.run.model_relpath)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    for header in shown:
        table.add_column(
            header,
            justify="right" if header in ("round", "val acc", "val loss") else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=max(12, summary_width) if header == "summary" else None,
        )
    for row in rows:
        table.add_row(*(escape(cell) for header, cell in zip(headers, row) if header in shown))
    console.print(table)
    return 0


def run_diff(args: argparse.Namespace) -> int:
    first, second = _round_number(args.first), _round_number(args.second)
    diff = _open(args).diff(first, second)
    console = _StdoutConsole(highlight=False)
    console.print(f"[bold]r{first}[/] {escape(diff.a.subject)}  →  [bold]r{second}[/] {escape(diff.b.subject)}")
    if diff.metrics:
        table = Table("metric", f"r{first}", f"r{second}", "change")
        for change in diff.metrics:
            delta = "–" if change.change is None else f"{change.change:+.3f}"
            table.add_row(change.name, decimals(change.old), decimals(change.new), delta)
        console.print(table)
    else:
        console.print("no metrics recorded for these rounds yet")
    if diff.patch.strip():
        _print_patch(console, diff.patch)
    else:
        console.print(f"r{first} and r{second} have the same model and hyperparameter files")
    return 0


def _trial_of(args: argparse.Namespace, history: "ExperimentHistory", info: "RoundInfo") -> "TrialReport | None":
    """The trial of the proposal `info` applied, from the run's ledger; None when the run folder is not here
    (a clone of the repository) or the round applied no trialled proposal."""
    from copilot.advisor.ledger import entry_of_proposal
    from copilot.config import load_settings
    from copilot.run_folder import RunFolder

    if info.proposal_id is None:
        return None
    repo = args.repo or Path.cwd()
    runs = load_settings(config_dir=repo).runs_dir
    run = RunFolder((runs if runs.is_absolute() else repo / runs) / history.run_id)
    entry = entry_of_proposal(run, info.proposal_id)
    return getattr(entry.proposal, "trials", None) if entry is not None else None


def run_show(args: argparse.Namespace) -> int:
    from copilot.console.advice import print_trial_curves

    history = _open(args)
    detail = history.show(_round_number(args.round))
    console = _StdoutConsole(highlight=False)
    if args.json:
        print(detail.model_dump_json(indent=2))
        return 0
    info = detail.info
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("round", f"{info.label} ({info.kind})")
    facts.add_row("commit", info.sha)
    facts.add_row("time", info.time.astimezone().strftime("%Y-%m-%d %H:%M:%S %z"))
    if info.rollback_to is not None:
        facts.add_row("rolls back to", f"r{info.rollback_to}")
    facts.add_row("advisor", escape(info.advisor or "–"))
    facts.add_row("verdict", info.verdict or "–")
    facts.add_row("val acc", _before_after(info.val_accuracy_before, info.val_accuracy_after))
    facts.add_row("val loss", _before_after(info.val_loss_before, info.val_loss_after))
    if info.results is not None:
        for name, value in info.results.model_dump(exclude_none=True).items():
            facts.add_row(f"  {name}", escape(f"{value:.6g}" if isinstance(value, float) else str(value)))
    console.print(facts)
    console.print()
    if print_trial_curves(console, _trial_of(args, history, info)):
        console.print()
    console.print(Text(detail.message), soft_wrap=True)
    _print_patch(console, detail.patch)
    return 0


def _one_line(info: "RoundInfo") -> str:
    return f"[bold]{info.label}[/] {info.short_sha} {escape(info.subject)}"


def run_rollback(args: argparse.Namespace) -> int:
    target = _round_number(args.round)
    history = _open(args)
    info = history.rollback(target)
    console = _StdoutConsole(highlight=False)
    console.print(f"committed {_one_line(info)}")
    results = history.round(target).results
    if results is not None and results.checkpoint:
        where = "" if Path(results.checkpoint).is_absolute() else f" (in run {history.run_id}'s folder)"  # older notes: absolute
        console.print(f"resume training from r{target}'s checkpoint: {escape(results.checkpoint)}{where}")
    return 0


def run_undo(args: argparse.Namespace) -> int:
    history = _open(args)
    taken = history.rounds()[-1]
    now = history.undo()
    console = _StdoutConsole(highlight=False)
    console.print(f"took {_one_line(taken)} off {escape(history.branch)}; it is back at {_one_line(now)}")
    console.print(f"{taken.label} is parked at refs/copilot/{escape(history.run_id)}/attic/{taken.sha}; `copilot redo` puts it back")
    return 0


def run_redo(args: argparse.Namespace) -> int:
    info = _open(args).redo()
    _StdoutConsole(highlight=False).print(f"put back {_one_line(info)}")
    return 0
