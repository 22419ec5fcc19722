"""The trial's curves in the proposal pane: the change beside the unchanged run, under the measured line.

Each test reads what the pane paints (`painted`), at the sizes a new user tried.
"""

from __future__ import annotations

import pytest

from copilot.tui.widgets.proposal import ProposalPane
from copilot.tui.widgets.trial_chart import TRIAL_CHART_ROWS
from tests.tui.test_app import make_app, proposal_session, until
from tests.tui.test_run_screen import COMPACT, WIDE, painted

pytestmark = pytest.mark.anyio


async def test_the_proposal_pane_charts_both_arms_under_the_measured_line() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await until(pilot, lambda: app.advisor_state == "waiting")
        pane = app.screen.query_one(ProposalPane)
        await until(pilot, lambda: not pane.trial_chart_pending and any("this change" in line for line in painted(pane.query_one("Static"))))
        lines = [line.rstrip() for line in painted(pane.query_one("Static"))]
        measured = next(index for index, line in enumerate(lines) if line.lstrip().startswith("measured:"))
        legend = next(index for index, line in enumerate(lines) if "val accuracy %" in line)
        hint = next(index for index, line in enumerate(lines) if "a accept · r reject" in line)
        assert measured < legend < hint
        # Both arms with their last value (val accuracy, in percent), the noise, a drawn plot.
        assert "━ unchanged 6.5" in lines[legend] and "━ this change 46.5" in lines[legend], lines[legend]
        chart = lines[legend : legend + TRIAL_CHART_ROWS]
        assert any("┤" in line for line in chart) and any("└" in line for line in chart)
        # The numbers and their noise beside it: in the measured line above (the legend too, where it fits).
        assert "noise ±0.0040" in " ".join(lines[measured:legend])
        # The chart is small: the diff still starts on the pane's first screen.
        diff = next(index for index, line in enumerate(lines) if line.lstrip().startswith("--- a/"))
        assert diff < pane.size.height, (diff, pane.size.height)


async def test_at_80x24_the_pane_keeps_its_rows_for_the_diff() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=COMPACT) as pilot:
        await until(pilot, lambda: app.advisor_state == "waiting")
        pane = app.screen.query_one(ProposalPane)
        await until(pilot, lambda: any("--- a/" in line for line in painted(pane.query_one("Static"))))
        lines = painted(pane.query_one("Static"))
        assert not pane.trial_chart_pending
        assert any(line.lstrip().startswith("measured:") for line in lines)
        assert not any("━ this change" in line for line in lines)
