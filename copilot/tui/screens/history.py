"""The history screen: the run's rounds as git records them, their diffs, rollback, undo and redo.

The table comes from `session.rounds()` (read from git, never from memory). Mark two
rounds with Space to compare them (their validation curves from metrics.jsonl on one
chart, the code diff and the metric diff), or press Enter on a round to compare it with
the one before. Rollback asks first; undo and redo do not, because each can take the
other back. Every git call runs in the app's git worker
group; this screen only shows and asks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from rich import box
from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.widgets import DataTable, Footer, Static

from copilot.history.rounds import RoundDiff, RoundInfo
from copilot.numbers import compact, percent
from copilot.tui.screens.dialogs import ConfirmDialog
from copilot.tui.screens.live import LiveScreen
from copilot.tui.widgets.charts import ChartData, ChartSeries, MetricChart
from copilot.tui.widgets.status import StatusBar

if TYPE_CHECKING:
    from copilot.events import EpochSummary
    from copilot.session.controller import Session

PICK_HINT = "Space marks two rounds to compare · Enter compares a round with the one before · b rolls back · u undo · U redo"
KIND_STYLES = {"baseline": "dim", "arch": "magenta", "hparams": "cyan", "tune": "blue", "rollback": "yellow"}


def accuracy_change(info: RoundInfo) -> Text:
    before, after = info.val_accuracy_before, info.val_accuracy_after
    text = Text(f"{percent(before)} → {percent(after)}")
    if before is not None and after is not None:
        text.stylize("green" if after > before else "red" if after < before else "")
    return text


def metric_table(diff: RoundDiff) -> Table:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    table.add_column("metric")
    table.add_column(f"r{diff.a.round}", justify="right")
    table.add_column(f"r{diff.b.round}", justify="right")
    table.add_column("change", justify="right")
    for change in diff.metrics:
        delta = change.change
        if delta is None:
            shown = Text("–", "dim")
        else:
            better = delta > 0 if "acc" in change.name else delta < 0
            shown = Text(f"{delta:+.4g}", "green" if better else "red" if delta else "")
        table.add_row(
            change.name,
            compact(float(change.old)) if change.old is not None else "–",
            compact(float(change.new)) if change.new is not None else "–",
            shown,
        )
    return table


def round_detail(info: RoundInfo) -> RenderableType:
    """A round on its own (the first one has nothing before it to compare with)."""
    return Group(
        Text(f"{info.label} {info.short_sha} · {info.kind}", "bold"),
        Text(info.subject),
        Text(f"val accuracy {accuracy_change(info)}"),
        Text("The first round: nothing before it to compare with. Space marks two rounds to compare.", "dim"),
    )


def diff_renderable(diff: RoundDiff) -> RenderableType:
    head = Text(f"r{diff.a.round} {diff.a.short_sha} → r{diff.b.round} {diff.b.short_sha}", "bold")
    files = Text("files: " + (", ".join(diff.files) if diff.files else "identical"), "dim")
    parts: list[RenderableType] = [head, files, metric_table(diff)]
    if diff.patch:
        parts.append(Syntax(diff.patch, "diff", theme="ansi_dark", background_color="default"))
    return Group(*parts)


def validation_chart(epochs: dict[int, list[EpochSummary]]) -> ChartData | None:
    """Each round's validation accuracy per epoch against the run's steps (loss when a round has no
    accuracy), one series per round; None when neither round has an epoch on record."""
    if not any(epochs.values()):
        return None
    every = [epoch for summaries in epochs.values() for epoch in summaries]
    metric = "val_accuracy" if every and all(epoch.val_accuracy is not None for epoch in every) else "val_loss"
    series = []
    for number, summaries in epochs.items():
        measured = [(epoch.step, getattr(epoch, metric)) for epoch in summaries if getattr(epoch, metric) is not None]
        steps = np.array([step for step, _ in measured], dtype=float)
        values = np.array([value for _, value in measured], dtype=float)
        series.append(ChartSeries(f"r{number} {'val acc' if metric == 'val_accuracy' else 'val loss'}", steps, values))
    return ChartData(key=tuple((s.label, s.steps.tobytes(), s.values.tobytes()) for s in series), series=tuple(series))


def diff_and_curves(session: Session, a: int, b: int) -> tuple[RoundDiff, dict[int, list[EpochSummary]]]:
    """One comparison's git diff and the two rounds' epochs, read together so neither lands on another's."""
    return session.diff(a, b), session.round_epochs(a, b)


class HistoryScreen(LiveScreen):
    BINDINGS = [
        Binding("escape,h", "app.show_run", "Back"),
        Binding("space", "mark", "Mark"),
        Binding("b", "rollback", "Roll back"),
        Binding("u", "undo", "Undo"),
        Binding("U", "redo", "Redo"),
        Binding("f5", "reload", "Reload", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rounds: list[RoundInfo] = []
        self.marked: list[int] = []

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        table: DataTable = DataTable(id="rounds", cursor_type="row", zebra_stripes=True)
        table.add_column("", key="mark", width=1)
        for label, key in (
            ("round", "round"),
            ("kind", "kind"),
            ("val acc before → after", "accuracy"),
            ("verdict", "verdict"),
            ("hash", "hash"),
            ("subject", "subject"),
        ):
            table.add_column(label, key=key)
        with Container(id="history-body"):
            yield table
            with VerticalScroll(id="round-diff"):
                yield MetricChart("validation", id="round-curves")
                yield Static(Text(PICK_HINT, "dim"), id="diff-text")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#rounds", DataTable).border_title = "Rounds (from git)"
        self.query_one("#round-diff").border_title = "Diff"

    def on_screen_resume(self) -> None:
        # Textual also calls LiveScreen's handler (it dispatches along the MRO).
        self.action_reload()

    # ------------------------------------------------------------------ table

    def action_reload(self) -> None:
        self.copilot.run_git("reading rounds", self.copilot.session.rounds, on_result=self.show_rounds)

    def show_rounds(self, rounds: list[RoundInfo]) -> None:
        self.rounds = rounds
        present = {info.round for info in rounds}
        self.marked = [number for number in self.marked if number in present]
        table = self.query_one("#rounds", DataTable)
        cursor = table.cursor_row
        table.clear()
        for info in rounds:
            table.add_row(*self._cells(info), key=str(info.round))
        if rounds:
            table.move_cursor(row=min(cursor, len(rounds) - 1))

    def _cells(self, info: RoundInfo) -> tuple[RenderableType, ...]:
        return (
            Text("●", "bold yellow") if info.round in self.marked else "",
            info.label,
            Text(info.kind, KIND_STYLES.get(info.kind, "")),
            accuracy_change(info),
            info.verdict or "–",
            info.short_sha,
            info.summary,
        )

    def _highlighted(self) -> RoundInfo | None:
        table = self.query_one("#rounds", DataTable)
        if not self.rounds or table.cursor_row < 0 or table.cursor_row >= len(self.rounds):
            return None
        return self.rounds[table.cursor_row]

    def _redraw_marks(self) -> None:
        table = self.query_one("#rounds", DataTable)
        for info in self.rounds:
            table.update_cell(str(info.round), "mark", self._cells(info)[0])

    # ------------------------------------------------------------------ compare

    def action_mark(self) -> None:
        info = self._highlighted()
        if info is None:
            return
        if info.round in self.marked:
            self.marked.remove(info.round)
        else:
            self.marked = (self.marked + [info.round])[-2:]
        self._redraw_marks()
        if len(self.marked) == 2:
            self.compare(*sorted(self.marked))

    def action_compare_previous(self) -> None:
        info = self._highlighted()
        if info is None:
            return
        index = self.rounds.index(info)
        if index == 0:
            # Nothing before it to diff against: what the round is, in the diff pane, instead of nothing.
            self.query_one("#round-curves", MetricChart).display = False
            self.query_one("#diff-text", Static).update(round_detail(info))
            return
        self.compare(self.rounds[index - 1].round, info.round)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_compare_previous()

    def compare(self, a: int, b: int) -> None:
        self.query_one("#diff-text", Static).update(Text(f"comparing r{a} with r{b}…", "dim"))
        self.copilot.run_git(f"diff r{a} r{b}", diff_and_curves, self.copilot.session, a, b, on_result=self.show_diff)

    def show_diff(self, compared: tuple[RoundDiff, dict[int, list[EpochSummary]]]) -> None:
        diff, epochs = compared
        chart, data = self.query_one("#round-curves", MetricChart), validation_chart(epochs)
        chart.display = data is not None
        if data is not None:
            chart.show(data)
        self.query_one("#diff-text", Static).update(diff_renderable(diff))
        self.query_one("#round-diff", VerticalScroll).scroll_home(animate=False)

    # ------------------------------------------------------------------ change the branch

    def action_rollback(self) -> None:
        info = self._highlighted()
        if info is None:
            return

        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.copilot.run_git(
                    f"roll back to r{info.round}", self.copilot.session.rollback, info.round, on_result=self.copilot.branch_moved
                )

        self.app.push_screen(
            ConfirmDialog(
                f"Roll back to {info.label} ({info.short_sha})?",
                "A new commit restores that round's files and training continues from its checkpoint. "
                "Nothing is lost: u undoes the rollback.",
                confirm="Roll back",
            ),
            answered,
        )

    def action_undo(self) -> None:
        self.copilot.action_undo_round()

    def action_redo(self) -> None:
        self.copilot.action_redo_round()
