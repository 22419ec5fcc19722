"""The run screen: charts, per-module gradients, the advisor's diagnosis and proposal, the log.

At 160×48 and above everything is on screen at once: charts and the per-module
gradient bars on the left, the advisor on the right, the log along the bottom. Below
120 columns or 36 rows the panes share one slot under the charts, picked with tabs
(1, 2, 3 or a click); on short terminals two charts show at a time (c switches), loss
and gradient norm first: the gradients are what this tool is for. The screen
turns the store's view into chart data and hands each widget its part; the
decisions behind the keys (accept, reject, edit) are the app's.
"""

from __future__ import annotations

import numpy as np
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.widgets import Footer, Tab, Tabs

from copilot.advisor.thresholds import UPDATE_RATIO_GUIDE
from copilot.tui.screens.live import LiveScreen
from copilot.tui.store import MAX_SERIES, StoreView
from copilot.tui.widgets.banner import Banner
from copilot.tui.widgets.charts import BarsData, ChartData, ChartSeries, MetricChart, ModuleBars
from copilot.tui.widgets.diagnosis import DiagnosisPane
from copilot.tui.widgets.log import LogPane
from copilot.tui.widgets.proposal import ProposalPane
from copilot.tui.widgets.status import StatusBar


PANES = ("advisor", "modules", "log")
# Short terminals show one pair of charts at a time; the first pair has the gradient norm.
CHART_PAGES = ("loss-and-gradients", "accuracy-and-updates")


def _epoch_series(view: StoreView, label: str, attribute: str) -> ChartSeries:
    points = [(point.step, getattr(point, attribute)) for point in view.epochs if getattr(point, attribute) is not None]
    steps = np.array([step for step, _ in points], dtype=np.float64)
    values = np.array([value for _, value in points], dtype=np.float64)
    return ChartSeries(label, steps, values)


def _first_step(view: StoreView) -> float | None:
    """The run's first logged step, where every chart's x axis starts."""
    steps, _values = view.steps["loss"]
    return float(steps[0]) if len(steps) else None


def train_val_chart(view: StoreView, metric: str) -> ChartData:
    """`metric` ("loss" or "accuracy") per logged step for training, per epoch for validation."""
    steps, values = view.steps[metric]
    return ChartData(
        key=view.version,
        series=(ChartSeries("train", steps, values), _epoch_series(view, "val", f"val_{metric}")),
        round_steps=view.round_steps,
        arrivals=view.arrivals,
        x_start=_first_step(view),
    )


def grad_norm_chart(view: StoreView, *, per_module: bool) -> ChartData:
    steps, values = view.steps["total_grad_norm"]
    series = [ChartSeries("total", steps, values)]
    if per_module:
        outliers = list(view.grad_norm_steps.items())[: MAX_SERIES - 1]
        series += [ChartSeries(name, *arrays) for name, arrays in outliers]
    return ChartData(
        key=(view.version, per_module),
        series=tuple(series),
        round_steps=view.round_steps,
        arrivals=view.arrivals,
        x_start=_first_step(view),
    )


def update_ratio_chart(view: StoreView) -> ChartData:
    series = tuple(ChartSeries(name, *arrays) for name, arrays in view.update_ratio_steps.items())
    return ChartData(
        key=view.version,
        series=series,
        round_steps=view.round_steps,
        guide=UPDATE_RATIO_GUIDE,
        arrivals=view.arrivals,
        x_start=_first_step(view),
    )


def module_bars(view: StoreView) -> BarsData:
    rows = tuple(row for row in view.modules if row.grad_norm is not None)
    return BarsData(key=rows, rows=rows, arrivals=view.arrivals)


class RunScreen(LiveScreen):
    # The proposal has focus from the start (arrows scroll the diff), whatever arrives first.
    AUTO_FOCUS = "#proposal"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    BINDINGS = [
        Binding("a", "app.accept", "Accept"),
        Binding("r", "app.reject", "Reject"),
        Binding("e", "app.edit", "Edit"),
        Binding("v", "app.sandbox_report", "Sandbox", show=False),
        Binding("d", "app.toggle_side_by_side", "Side by side", show=False),
        Binding("g", "toggle_module_series", "Module series", show=False),
        Binding("x", "last_error", "Last error", show=False),
        Binding("c", "next_chart_page", "Charts", show=False),
        Binding("1", "pane('advisor')", "Advisor pane", show=False),
        Binding("2", "pane('modules')", "Modules pane", show=False),
        Binding("3", "pane('log')", "Log pane", show=False),
        Binding("z", "maximize_pane", "Zoom pane", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.module_series = False
        self._chart_page = 0
        self._shown_version: object = None

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        if self.copilot.banner:
            yield Banner(self.copilot.banner, id="banner")
        with Container(id="body", classes="-pane-advisor"):
            with Container(id="charts", classes=f"-page-{CHART_PAGES[0]}"):
                yield MetricChart("loss", id="chart-loss", classes=f"page-{CHART_PAGES[0]}")
                yield MetricChart("gradient norm", log_scale=True, id="chart-grad", classes=f"page-{CHART_PAGES[0]}")
                yield MetricChart("accuracy", id="chart-accuracy", classes=f"page-{CHART_PAGES[1]}")
                yield MetricChart("update/weight", log_scale=True, id="chart-ratio", classes=f"page-{CHART_PAGES[1]}")
            yield Tabs(
                Tab("1 Advisor", id="tab-advisor"), Tab("2 Modules", id="tab-modules"), Tab("3 Log", id="tab-log"),
                id="pane-tabs",
            )
            with Vertical(id="advisor", classes="pane"):
                yield DiagnosisPane(id="diagnosis")
                yield ProposalPane(id="proposal")
            yield ModuleBars("latest per module", id="modules", classes="pane")
            yield LogPane(id="log", classes="pane")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#advisor").border_title = "Advisor"
        self.query_one("#modules").border_title = "Gradient norm per module (log scale) · g: chart the outliers"
        self.query_one("#log").border_title = "Log · Enter: full text"

    # ------------------------------------------------------------------ refresh

    def refresh_widgets(self, view: StoreView) -> None:
        copilot = self.copilot
        shown = (view.version, copilot.state_version, self.module_series)
        if shown == self._shown_version:
            return
        self._shown_version = shown
        self.query_one("#chart-loss", MetricChart).show(train_val_chart(view, "loss"))
        self.query_one("#chart-accuracy", MetricChart).show(train_val_chart(view, "accuracy"))
        self.query_one("#chart-grad", MetricChart).show(grad_norm_chart(view, per_module=self.module_series))
        self.query_one("#chart-ratio", MetricChart).show(update_ratio_chart(view))
        self.query_one(ModuleBars).show(module_bars(view))
        self.query_one(LogPane).show(view.log_total, view.log_tail)
        turn = copilot.turn
        diagnosis, trigger = copilot.last_diagnosis or (None, None)
        crashed = view.state == "crashed" or (trigger == "error" and view.last_error is not None)
        self.query_one(DiagnosisPane).show(
            diagnosis,
            trigger=trigger,
            error=view.last_error if crashed else None,
            thinking=copilot.advisor_state == "thinking",
        )
        self.query_one(ProposalPane).show(
            turn.proposal if turn else None,
            side_by_side_view=copilot.side_by_side,
            edit_problem=turn.edit_problem if turn else None,
        )

    # ------------------------------------------------------------------ actions of this screen

    def action_toggle_module_series(self) -> None:
        self.module_series = not self.module_series
        self.copilot.refresh_screen(force=True)

    def action_next_chart_page(self) -> None:
        charts = self.query_one("#charts")
        charts.remove_class(f"-page-{CHART_PAGES[self._chart_page]}")
        self._chart_page = (self._chart_page + 1) % len(CHART_PAGES)
        charts.add_class(f"-page-{CHART_PAGES[self._chart_page]}")

    def action_pane(self, pane: str) -> None:
        """Bring a pane forward in the compact layout (in the wide layout all are shown) and focus it."""
        self.query_one("#pane-tabs", Tabs).active = f"tab-{pane}"
        self._show_pane(pane)
        target = self.query_one("#proposal" if pane == "advisor" else f"#{pane}")
        target.focus()

    def _show_pane(self, pane: str) -> None:
        body = self.query_one("#body")
        for name in PANES:
            body.set_class(name == pane, f"-pane-{name}")

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab is not None and event.tab.id:
            self._show_pane(event.tab.id.removeprefix("tab-"))

    def action_maximize_pane(self) -> None:
        if self.maximized is not None:
            self.minimize()
            return
        focused = self.focused
        if focused is not None:
            self.maximize(focused)

    def action_last_error(self) -> None:
        self.copilot.show_last_error()

    def on_log_pane_detail_requested(self, message: LogPane.DetailRequested) -> None:
        self.copilot.show_log_entry(message.entry)

    def show_advisor(self) -> None:
        """A proposal arrived: make sure it is in view, and that the scroll keys move it (not the log
        or the tabs, wherever focus was), so its diff is reached without Tab."""
        self.query_one("#pane-tabs", Tabs).active = "tab-advisor"
        self._show_pane("advisor")
        self.query_one("#proposal").focus()
