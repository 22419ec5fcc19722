"""The proposal pane: what the advisor wants to change, shown so a human can judge it.

Architecture proposals show the model file's unified diff, syntax-highlighted with
Rich's `Syntax(..., "diff")` and wrapped (a cut line would hide the change), or side by
side where the pane is wide enough for two readable sides; hyperparameter proposals show a
before/after table; a finish proposal shows its summary. The sandbox's verdict is
one line here, marked advisory, and the whole report in a dialog (`v`). Beside the
advisor's claim (its summary and rationale) stands what the trials measured: the change
against the unchanged run, and every candidate tried with no gain. It renders; the app decides.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from rich import box
from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.events import Resize
from textual.message import Message
from textual.widgets import Static

from copilot.advisor.schemas import (
    SANDBOX_ADVISORY,
    ArchitectureProposal,
    FinishProposal,
    HParamProposal,
    Proposal,
    SandboxReport,
    TrialReport,
)
from copilot.advisor.trials.curves import TrialCurves, trial_curves
from copilot.advisor.trials.describe import arm_lines, measured_line, start_lines
from copilot.events import HPARAM_KEYS
from copilot.tui.widgets.trial_chart import draw_trial_chart, fits

# The keys that act on each kind of proposal, no others; the longest fits the advisor pane at 160 columns.
KEY_HINTS = {
    "architecture": "a accept · r reject · e edit · v sandbox · d side by side",
    "hyperparameters": "a accept · r reject · e edit",
    "finish": "a accept · r reject",
}
CONTEXT_LINES = 3
# Side by side, each side shows this much code at least, else the unified diff stands in:
# at 60 columns each side had about 22 characters, too few to read a line of a model.
SIDE_BY_SIDE_MIN_CODE = 40
SIDE_BY_SIDE_MIN_WIDTH = 2 * SIDE_BY_SIDE_MIN_CODE + 12  # the line numbers and the padding around them
NO_PROPOSAL_TEXT = "No proposal waiting. When the advisor proposes a change, it appears here for you to accept or reject."


def sandbox_summary(report: SandboxReport, fix_rounds: int = 0) -> Text:
    """One line: passed with the output shape, parameters and timing, or the stage that failed."""
    text = Text("sandbox ")
    if report.ok:
        text.append("✓ passed", "bold green")
        if report.output_shape is not None:
            text.append(f" · output {tuple(report.output_shape)}")
        if report.param_count is not None:
            text.append(f" · {report.param_count:,} params")
        if report.forward_backward_ms is not None:
            text.append(f" · forward+backward {report.forward_backward_ms:.1f} ms")
    else:
        text.append(f"✖ {report.stage}: ", "bold red")
        text.append(report.message, "red")
    if fix_rounds:
        text.append(f" · after {fix_rounds} fix round{'s' if fix_rounds > 1 else ''}", "dim")
    text.append(" · advisory (v)", "dim")
    return text


def sandbox_details(report: SandboxReport) -> Group:
    """The whole sandbox report, for the `v` dialog."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("result", Text("passed", "green") if report.ok else Text(f"failed at {report.stage}", "red"))
    table.add_row("message", report.message)
    for label, value in (
        ("line", report.line),
        ("output shape", report.output_shape),
        ("expected shape", report.expected_shape),
        ("parameters", f"{report.param_count:,}" if report.param_count is not None else None),
        ("forward+backward", f"{report.forward_backward_ms:.1f} ms" if report.forward_backward_ms is not None else None),
        ("CPU time (measured outside)", f"{report.observed_cpu_s:.2f} s" if report.observed_cpu_s is not None else None),
        ("peak memory (measured outside)", f"{report.observed_peak_mb:.0f} MB" if report.observed_peak_mb is not None else None),
        ("note", SANDBOX_ADVISORY),
    ):
        if value is not None:
            table.add_row(label, str(value))
    parts: list[RenderableType] = [table]
    if report.traceback:
        parts.append(Text("\ntraceback", "bold"))
        parts.append(Text(report.traceback))
    return Group(*parts)


def _side_by_side_rows(old: list[str], new: list[str]) -> Iterator[tuple[str, str, str, str, str]]:
    """(old number, old line, new number, new line, tag) rows, unchanged stretches folded to their context."""
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            length = i2 - i1
            if length > 2 * CONTEXT_LINES + 1:
                keep = list(range(CONTEXT_LINES)) + [-1] + list(range(length - CONTEXT_LINES, length))
            else:
                keep = list(range(length))
            for offset in keep:
                if offset < 0:
                    yield "", f"⋯ {length - 2 * CONTEXT_LINES} unchanged lines", "", "", "fold"
                else:
                    yield str(i1 + offset + 1), old[i1 + offset], str(j1 + offset + 1), new[j1 + offset], "equal"
            continue
        for row in range(max(i2 - i1, j2 - j1)):
            old_index, new_index = i1 + row, j1 + row
            yield (
                str(old_index + 1) if old_index < i2 else "",
                old[old_index] if old_index < i2 else "",
                str(new_index + 1) if new_index < j2 else "",
                new[new_index] if new_index < j2 else "",
                tag,
            )


def side_by_side(proposal: ArchitectureProposal) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, padding=(0, 1), show_edge=False)
    table.add_column("", justify="right", style="dim", no_wrap=True)
    table.add_column(f"a/{proposal.file_name}", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("", justify="right", style="dim", no_wrap=True)
    table.add_column(f"b/{proposal.file_name}", ratio=1, no_wrap=True, overflow="ellipsis")
    old_style = {"replace": "on #4a1c1c", "delete": "on #4a1c1c", "fold": "dim italic"}
    new_style = {"replace": "on #1c4a24", "insert": "on #1c4a24"}
    for old_number, old_line, new_number, new_line, tag in _side_by_side_rows(
        proposal.old_code.splitlines(), proposal.code.splitlines()
    ):
        table.add_row(
            old_number, Text(old_line, old_style.get(tag, "")), new_number, Text(new_line, new_style.get(tag, ""))
        )
    return table


def trial_summary(report: TrialReport | None) -> Group:
    """Predicted beside measured: the trial's line, then one line per arm."""
    won = report is not None and report.beat_incumbent
    lines: list[RenderableType] = [Text(measured_line(report), "bold green" if won else "yellow")]
    lines += [Text(f"  {line}", "dim") for line in arm_lines(report)]
    return Group(*lines)


def hparam_table(proposal: HParamProposal) -> Table:
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
    table.add_column("hyperparameter")
    table.add_column("before", justify="right")
    table.add_column("", justify="center")
    table.add_column("after", justify="right")
    changed = set(proposal.change.changes())
    for key in sorted(HPARAM_KEYS, key=lambda key: key not in changed):
        before, after = getattr(proposal.before, key), getattr(proposal.after, key)
        style = "bold yellow" if key in changed else "dim"
        table.add_row(key, str(before), "→" if key in changed else "", str(after), style=style)
    return table


def side_by_side_fits(width: int) -> bool:
    """Whether a pane `width` columns wide gives each side of the diff enough code to read."""
    return width >= SIDE_BY_SIDE_MIN_WIDTH


def proposal_renderable(
    proposal: Proposal | None,
    *,
    side_by_side_view: bool,
    edit_problem: str | None = None,
    width: int = SIDE_BY_SIDE_MIN_WIDTH,
    trial_chart: RenderableType | None = None,
) -> RenderableType:
    """The proposal as the pane shows it; side by side only when `width` fits it (see `side_by_side_fits`)."""
    if proposal is None:
        return Text(NO_PROPOSAL_TEXT, "dim")
    head = Text()
    head.append(f" {proposal.kind} ", "bold reverse magenta")
    head.append(f" {proposal.summary}", "bold")
    parts: list[RenderableType] = [head]
    if edit_problem:
        parts.append(Text(f"your edit was not taken: {edit_problem}", "bold red"))
    if isinstance(proposal, FinishProposal):
        parts.append(Text("The advisor sees nothing left to fix. Accept to finish and write the report.", "italic"))
        parts.append(Text(KEY_HINTS[proposal.kind], "dim", no_wrap=True, overflow="ellipsis"))
        parts.append(Markdown(proposal.report))
        return Group(*parts)
    # What a person decides on comes first: the change (above), what its trial measured, the
    # diff; what the advisor predicted and why, after (issue 13: the diff was below the fold).
    parts.append(trial_summary(proposal.trials))
    if trial_chart is not None:
        parts.append(trial_chart)
    parts += [Text(line, "bold yellow") for line in start_lines(proposal)]
    # One line of its own with a blank after: wrapped, it ran into the lines under it.
    parts.append(Text(KEY_HINTS[proposal.kind] + "\n", "dim", no_wrap=True, overflow="ellipsis"))
    if isinstance(proposal, HParamProposal):
        parts.append(hparam_table(proposal))
        parts.append(Text(f"\npredicted: {proposal.rationale}", "italic"))
        return Group(*parts)
    if side_by_side_view and side_by_side_fits(width):
        parts.append(side_by_side(proposal))
    else:
        if side_by_side_view:
            parts.append(
                Text(f"side by side needs {SIDE_BY_SIDE_MIN_WIDTH} columns: the unified diff instead (z zooms the pane)", "yellow")
            )
        parts.append(
            Syntax(
                proposal.unified_diff() or "(no change)", "diff", theme="ansi_dark", background_color="default", word_wrap=True
            )
        )
    parts.append(Text(f"\npredicted: {proposal.rationale}", "italic"))
    for change in proposal.changes:
        parts.append(Text(f"• {change}"))
    parts.append(sandbox_summary(proposal.sandbox, proposal.fix_rounds))
    return Group(*parts)


class ProposalPane(VerticalScroll):
    """Scrollable, focusable view of the proposal waiting at the gate.

    Besides the scroll keys every scrollable has (arrows, PageUp/PageDown, Home/End), j and k
    scroll, as in a pager. A new proposal opens at its top; switching its view keeps the place.
    """

    ALLOW_MAXIMIZE = True  # scroll containers are not zoomed by default; z zooms this one to read a wide diff
    BINDINGS = [
        Binding("j", "scroll_down", "Scroll down", show=False),
        Binding("k", "scroll_up", "Scroll up", show=False),
    ]

    DEFAULT_CSS = """
    ProposalPane > Static {
        width: 1fr;
    }
    """

    class TrialChartBuilt(Message):
        """The trial chart of `key` (the curves and the width) was drawn (posted from its worker thread)."""

        def __init__(self, key: tuple[TrialCurves, int], chart: Text) -> None:
            super().__init__()
            self.key = key
            self.chart = chart

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._proposal: tuple[Proposal | None, str | None] | None = None  # the proposal shown and its edit's problem
        self._view: tuple[bool, bool] | None = None  # side by side asked for, and whether it fits
        self._chart: tuple[tuple[TrialCurves, int], Text] | None = None  # the last chart drawn, by its key
        self._chart_wanted: tuple[TrialCurves, int] | None = None
        self._chart_building: tuple[TrialCurves, int] | None = None  # the key a worker draws now

    def compose(self) -> ComposeResult:
        yield Static(proposal_renderable(None, side_by_side_view=False))

    @property
    def trial_chart_pending(self) -> bool:
        """Whether a trial chart the pane will show is still being drawn (tests and snapshots wait on it)."""
        return self._chart_wanted is not None and (self._chart is None or self._chart[0] != self._chart_wanted)

    def show(self, proposal: Proposal | None, *, side_by_side_view: bool, edit_problem: str | None = None) -> None:
        width = self.scrollable_content_region.width
        shown, view = (proposal, edit_problem), (side_by_side_view, side_by_side_fits(width))
        if (shown, view) == (self._proposal, self._view):
            return
        new_proposal = shown != self._proposal
        self._proposal, self._view = shown, view
        self._paint()
        if new_proposal:
            self.scroll_home(animate=False)

    def _paint(self) -> None:
        assert self._proposal is not None and self._view is not None
        (proposal, edit_problem), (side_by_side_view, _fits) = self._proposal, self._view
        self.query_one(Static).update(
            proposal_renderable(
                proposal, side_by_side_view=side_by_side_view, edit_problem=edit_problem,
                width=self.scrollable_content_region.width, trial_chart=self._trial_chart(proposal),
            )  # fmt: skip
        )

    def _trial_chart(self, proposal: Proposal | None) -> Text | None:
        """The chart drawn for this proposal at this width, or None; a build is started when it is missing."""
        curves = trial_curves(getattr(proposal, "trials", None))
        width, height = self.scrollable_content_region.size
        self._chart_wanted = (curves, width) if curves is not None and fits(width, height) else None
        if self._chart_wanted is None:
            return None
        if self._chart is not None and self._chart[0] == self._chart_wanted:
            return self._chart[1]
        if self._chart_building != self._chart_wanted:
            self._chart_building = self._chart_wanted
            self._draw_trial_chart(self._chart_wanted)
        return None

    @work(thread=True, group="trial-chart", exclusive=True)
    def _draw_trial_chart(self, key: tuple[TrialCurves, int]) -> None:
        curves, width = key
        self.post_message(self.TrialChartBuilt(key, draw_trial_chart(curves, width)))

    def on_proposal_pane_trial_chart_built(self, message: TrialChartBuilt) -> None:
        message.stop()
        self._chart = (message.key, message.chart)
        if message.key == self._chart_building:
            self._chart_building = None
        if message.key == self._chart_wanted:
            self._paint()

    def on_resize(self, _event: Resize) -> None:
        """A new width draws the chart again (a pane too short for it drops it), and past what
        side by side needs, the view that now fits."""
        if self._proposal is not None and self._view is not None:
            side_by_side_view, _fits = self._view
            self._view = (side_by_side_view, side_by_side_fits(self.scrollable_content_region.width))
            self._paint()
