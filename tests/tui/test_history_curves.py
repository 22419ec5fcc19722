"""The history screen's comparison of two rounds draws both rounds' validation curves on one chart."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable

from copilot.tui.widgets.charts import MetricChart
from tests.tui.synthetic import SyntheticSession, seeded_run_events
from tests.tui.test_app import make_app
from tests.tui.test_run_screen import WIDE, painted
from tests.waiting import pilot_until

pytestmark = pytest.mark.anyio


async def test_comparing_two_rounds_charts_their_validation_curves_above_the_diff() -> None:
    session = SyntheticSession(events=seeded_run_events())
    app = make_app(session)
    async with app.run_test(size=WIDE) as pilot:
        await pilot_until(pilot, lambda: app.store.view().step == 2240)
        await pilot.press("h")
        await pilot_until(pilot, lambda: app.screen.query_one(DataTable).row_count == 3)
        chart = app.screen.query_one("#round-curves", MetricChart)
        assert not chart.display  # nothing compared yet: the hint alone
        await pilot.press("space", "down", "space")
        await pilot_until(pilot, lambda: chart.display and chart.up_to_date)
        assert ("round_epochs", 0, 1) in session.calls
        lines = painted(chart)
        # The seeded run: r0 (the broken model) ends at 12% validation accuracy, r1 (the fix) at 93%.
        legend = lines[0]
        assert legend.startswith("validation  ━ r0 val acc ") and "━ r1 val acc " in legend, legend
        r0_last, r1_last = (float(legend.split(f"r{n} val acc ")[1].split()[0]) for n in (0, 1))
        assert r0_last < 0.2 < 0.9 < r1_last
        assert any("┤" in line for line in lines[1:])  # a drawn plot, not a placeholder
        # Under it, the diff as before.
        assert any("files:" in line for line in painted(app.screen.query_one("#diff-text")))
