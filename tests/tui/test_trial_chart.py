"""The trial's curves in the proposal pane: the change beside the unchanged run, under the measured line.

Each test reads what the pane paints (`painted`), at the sizes a new user tried.
"""

from __future__ import annotations

import pytest

from copilot.advisor.trials.curves import trial_curves
from copilot.tui.widgets.proposal import ProposalPane
from copilot.tui.widgets.trial_chart import TRIAL_CHART_ROWS, draw_trial_chart
from tests.tui.synthetic import trial_report
from tests.tui.test_app import make_app, proposal_session
from tests.tui.test_run_screen import COMPACT, WIDE, painted
from tests.waiting import pilot_until

pytestmark = pytest.mark.anyio


async def test_the_proposal_pane_charts_both_arms_under_the_measured_line() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await pilot_until(pilot, lambda: app.advisor_state == "waiting")
        pane = app.screen.query_one(ProposalPane)
        await pilot_until(pilot, lambda: not pane.trial_chart_pending and any("this change" in line for line in painted(pane.query_one("Static"))))
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
        await pilot_until(pilot, lambda: app.advisor_state == "waiting")
        pane = app.screen.query_one(ProposalPane)
        await pilot_until(pilot, lambda: any("--- a/" in line for line in painted(pane.query_one("Static"))))
        lines = painted(pane.query_one("Static"))
        assert not pane.trial_chart_pending
        assert any(line.lstrip().startswith("measured:") for line in lines)
        assert not any("━ this change" in line for line in lines)


def test_the_chart_is_its_rows_high_and_names_the_noise_where_the_legend_has_room() -> None:
    curves = trial_curves(trial_report())
    assert curves is not None
    wide, narrow = (draw_trial_chart(curves, width).plain.splitlines() for width in (90, 56))
    assert len(wide) == len(narrow) == TRIAL_CHART_ROWS
    assert wide[0].startswith("val accuracy %  ━ unchanged 6.5  ━ this change 46.5  noise ±0.0040 (loss)")
    assert "noise" not in narrow[0] and "━ this change 46.5" in narrow[0]  # the arms before the noise
    assert "200" in wide[-1]  # the x axis ends at the trial's last step
