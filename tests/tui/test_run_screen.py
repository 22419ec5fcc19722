"""The run screen as a new user sees it, at 160×48 and 80×24: each test reads what a widget paints.

Issue 13's walk-through found these; each test names what it saw. The lines come from
the widgets' own `render_lines` (borders, padding and all), not from a re-render of
their content on another console.
"""

from __future__ import annotations

import pytest
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable

from copilot.tui.app import CopilotApp
from copilot.tui.widgets.charts import PlotextChart
from tests.tui.test_app import make_app, proposal_session, until
from tests.tui.synthetic import SyntheticSession, seeded_run_events

pytestmark = pytest.mark.anyio
WIDE, COMPACT = (160, 48), (80, 24)


def painted(widget: Widget) -> list[str]:
    """Every line the widget paints (scrolled-off ones included), as plain text."""
    return [strip.text for strip in widget.render_lines(Region(0, 0, widget.outer_size.width, widget.outer_size.height))]


async def charts_drawn(pilot: Pilot) -> None:
    """Wait until every chart on screen shows its latest data."""
    app: CopilotApp = pilot.app  # type: ignore[assignment]
    await until(pilot, lambda: all(chart.up_to_date for chart in app.screen.query(PlotextChart) if chart.display), 20)


@pytest.mark.parametrize("size", [WIDE, COMPACT], ids=["160x48", "80x24"])
async def test_the_status_line_keeps_a_space_between_the_state_and_the_epoch(size) -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.store.view().step == 1280)
        await until(pilot, lambda: "step 1,280" in painted(app.screen.query_one("#status"))[0])
        first = painted(app.screen.query_one("#status"))[0]
        assert "● running  epoch 4/9  step 1,280" in first, first  # was "runningepoch 4/9"


async def test_diff_context_lines_keep_their_indentation_in_the_run_screen() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: app.advisor_state == "waiting")
        await until(pilot, lambda: any("nn.Conv2d(3, 16" in line for line in painted(app.screen.query_one("#proposal Static"))))
        lines = painted(app.screen.query_one("#proposal Static"))
        context = next(line for line in lines if "def __init__(self, num_classes" in line)
        removed = next(line for line in lines if line.lstrip().startswith("-") and "nn.Conv2d(3, 16" in line)
        # A context line is " " + the code, a removed one "-" + the code: the code starts one column after.
        assert context.index("def") == removed.index("-") + 1 + 4, (context, removed)
        body = next(line for line in lines if "super().__init__()" in line)
        assert body.index("super") == removed.index("-") + 1 + 8


async def test_diff_context_lines_keep_their_indentation_in_the_history_screen() -> None:
    app = make_app(SyntheticSession(events=seeded_run_events()))
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: app.store.view().step == 2240)
        await pilot.press("h")
        await until(pilot, lambda: app.screen.query_one(DataTable).row_count == 3)
        await pilot.press("space", "down", "space")
        await until(pilot, lambda: any("super().__init__()" in line for line in painted(app.screen.query_one("#diff-text"))))
        lines = painted(app.screen.query_one("#diff-text"))
        context = next(line for line in lines if "def __init__(self, num_classes" in line)
        removed = next(line for line in lines if line.lstrip().startswith("-") and "nn.Conv2d(3, 16" in line)
        assert context.index("def") == removed.index("-") + 1 + 4, (context, removed)


async def test_the_key_hint_line_stands_alone_above_the_diff() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: app.advisor_state == "waiting")
        await until(pilot, lambda: any("a accept · r reject" in line for line in painted(app.screen.query_one("#proposal Static"))))
        lines = [line.rstrip() for line in painted(app.screen.query_one("#proposal Static"))]
        hint = next(index for index, line in enumerate(lines) if "a accept · r reject" in line)
        # It wrapped before: "… d side" then "by side" ran straight into what came under it
        # (the bullets then; the diff now, which comes before the advisor's reasons).
        assert lines[hint].endswith("d side by side") and lines[hint + 1].strip() == ""
        assert lines[hint + 2].lstrip().startswith("--- a/")


async def test_long_legends_end_at_a_whole_entry_and_count_the_rest() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: app.store.view().step == 1280)
        await charts_drawn(pilot)
        legend = painted(app.screen.query_one("#chart-ratio"))[0].rstrip()
        # It was cut mid-name: "update/weight ━ features.0 2.7e-10 ━ feature".
        assert legend.startswith("update/weight  ━ features.0 2.7e-10")
        last = legend.split()[-1]
        assert last.startswith("+") or last[0].isdigit(), legend
        assert not legend.endswith("feature")


async def test_a_gradient_norm_chart_is_on_the_first_screen_at_80x24() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=COMPACT) as pilot:
        await until(pilot, lambda: app.store.view().step == 1280)
        await charts_drawn(pilot)
        chart = app.screen.query_one("#chart-grad", PlotextChart)
        assert chart.display and app.screen.region.contains_region(chart.region) and chart.region.height >= 8
        lines = painted(chart)
        assert lines[0].startswith("gradient norm  ━ total 0.018")
        assert any("┤" in line for line in lines[1:])  # an axis with its ticks: a drawn plot, not a placeholder


async def test_the_module_panel_shows_each_module_as_a_bar_with_its_anomaly() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: app.store.view().step == 1280)
        await charts_drawn(pilot)
        lines = painted(app.screen.query_one("#modules"))
        text = "\n".join(lines)
        assert "Gradient norm per module (log scale)" in lines[0]
        assert "features.0 5.3e-10 vanishing┤" in text and "classifier.2 0.018┤" in text
        assert "1e-9" in text or "1e-11" in text  # the log axis is labelled in decades
