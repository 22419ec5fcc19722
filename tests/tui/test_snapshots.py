"""SVG snapshots of the run, history and layers screens at 80×24 and 160×48, with seeded data.

The data is the seeded synthetic run (tests/tui/synthetic.py) and the clock is frozen,
so every snapshot is byte-for-byte repeatable. Update them with
`pytest tests/tui/test_snapshots.py --snapshot-update` and look at the result.
"""

from __future__ import annotations

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from copilot.config import Settings
from copilot.tui.app import CopilotApp
from copilot.tui.widgets.charts import PlotextChart
from copilot.tui.widgets.proposal import ProposalPane
from tests.tui.synthetic import START_TIME, SyntheticSession, Turn, architecture_proposal, broken_diagnosis, seeded_run_events
from tests.waiting import pilot_until

SETTLE_S = 20.0  # a bound on a hung app, not a wait
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


def broken_run_app() -> CopilotApp:
    """The demo's key moment: gradients vanished, the advisor's proposal waits for a decision."""
    session = SyntheticSession(
        events=seeded_run_events(epochs_fixed=0),
        turns=[Turn(broken_diagnosis(), architecture_proposal(), "schedule", ())],
        due=["schedule"],
    )
    return CopilotApp(session, Settings(), clock=lambda: START_TIME, banner=None)


def recovered_run_app() -> CopilotApp:
    """After round 1: the whole seeded run, rounds in the history."""
    return CopilotApp(SyntheticSession(events=seeded_run_events()), Settings(), clock=lambda: START_TIME)


async def settle(pilot: Pilot, condition) -> None:
    """Wait for the ingest thread (and the advisor, where asked), then draw the final frame."""
    app: CopilotApp = pilot.app  # type: ignore[assignment]
    await pilot_until(pilot, lambda: condition(app), "the app did not settle", timeout=SETTLE_S)
    app.clear_notifications()
    # The charts are built in the builder thread (the proposal's trial chart in a worker): the frame
    # is final once each one on screen shows the store's last version, and the store has stopped moving.
    shown_version = None
    while shown_version != app.store.version:
        shown_version = app.store.version
        app.refresh_screen(force=True)
        await pilot_until(
            pilot,
            lambda: all(chart.up_to_date for chart in app.screen.query(PlotextChart) if chart.display)
            and not any(pane.trial_chart_pending for pane in app.screen.query(ProposalPane)),
            "the charts were not drawn",
            timeout=SETTLE_S,
        )
        await pilot.pause()  # what the builds posted is handled before the store's version is read again


@pytest.mark.parametrize("size", SIZES)
def test_run_screen_with_a_proposal_waiting(snap_compare, size) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda app: app.advisor_state == "waiting" and app.store.view().step == 1280)

    assert snap_compare(broken_run_app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_history_screen_comparing_two_rounds(snap_compare, size) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda app: app.store.view().step == 2240)
        await pilot.press("h")
        await settle(pilot, lambda app: app.screen.query_one(DataTable).row_count == 3)
        await pilot.press("space", "down", "space")
        await settle(pilot, lambda app: "files:" in str(app.screen.query_one("#diff-text").content.renderables[1]))

    assert snap_compare(recovered_run_app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_layers_screen_with_anomalies(snap_compare, size) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot, lambda app: app.advisor_state == "waiting")
        await pilot.press("l")
        await settle(pilot, lambda app: app.screen.query_one(DataTable).row_count == 8)

    assert snap_compare(broken_run_app(), terminal_size=size, run_before=run_before)
