"""The run screen as a new user sees it, at 160×48 and 80×24: each test reads what a widget paints.

Issue 13's walk-through found these; each test names what it saw. The lines come from
the widgets' own `render_lines` (borders, padding and all), not from a re-render of
their content on another console.
"""

from __future__ import annotations

import pytest
from textual.color import Color
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable
from textual.widgets._toast import Toast

from copilot.commands.session import DEMO_BANNER
from copilot.config import Settings
from copilot.tui.app import CopilotApp
from copilot.tui.widgets.charts import PlotextChart
from copilot.tui.widgets.log import LogPane
from copilot.tui.widgets.proposal import ProposalPane
from tests.tui.test_app import make_app, proposal_session, shown_text
from tests.tui.synthetic import SyntheticSession, Turn, architecture_proposal, broken_diagnosis, seeded_run_events
from tests.waiting import pilot_until

pytestmark = pytest.mark.anyio
WIDE, COMPACT = (160, 48), (80, 24)


def painted(widget: Widget) -> list[str]:
    """Every line the widget paints (scrolled-off ones included), as plain text."""
    return [strip.text for strip in widget.render_lines(Region(0, 0, widget.outer_size.width, widget.outer_size.height))]


async def charts_drawn(pilot: Pilot) -> None:
    """Wait until every chart on screen shows its latest data."""
    app: CopilotApp = pilot.app  # type: ignore[assignment]
    await pilot_until(pilot, lambda: all(chart.up_to_date for chart in app.screen.query(PlotextChart) if chart.display), "the charts were not drawn", timeout=20)


@pytest.mark.parametrize("size", [WIDE, COMPACT], ids=["160x48", "80x24"])
async def test_the_status_line_keeps_a_space_between_the_state_and_the_epoch(size) -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=size) as pilot:
        await pilot_until(pilot, lambda: app.store.view().step == 1280)
        await pilot_until(pilot, lambda: "step 1,280" in painted(app.screen.query_one("#status"))[0])
        first = painted(app.screen.query_one("#status"))[0]
        assert "● running  epoch 4/9  step 1,280" in first, first  # was "runningepoch 4/9"


async def test_diff_context_lines_keep_their_indentation_in_the_run_screen() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await pilot_until(pilot, lambda: app.advisor_state == "waiting")
        await pilot_until(pilot, lambda: any("nn.Conv2d(3, 16" in line for line in painted(app.screen.query_one("#proposal Static"))))
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
        await pilot_until(pilot, lambda: app.store.view().step == 2240)
        await pilot.press("h")
        await pilot_until(pilot, lambda: app.screen.query_one(DataTable).row_count == 3)
        await pilot.press("space", "down", "space")
        await pilot_until(pilot, lambda: any("super().__init__()" in line for line in painted(app.screen.query_one("#diff-text"))))
        lines = painted(app.screen.query_one("#diff-text"))
        context = next(line for line in lines if "def __init__(self, num_classes" in line)
        removed = next(line for line in lines if line.lstrip().startswith("-") and "nn.Conv2d(3, 16" in line)
        assert context.index("def") == removed.index("-") + 1 + 4, (context, removed)


async def test_the_key_hint_line_stands_alone_above_the_diff() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await pilot_until(pilot, lambda: app.advisor_state == "waiting")
        await pilot_until(pilot, lambda: any("a accept · r reject" in line for line in painted(app.screen.query_one("#proposal Static"))))
        lines = [line.rstrip() for line in painted(app.screen.query_one("#proposal Static"))]
        hint = next(index for index, line in enumerate(lines) if "a accept · r reject" in line)
        # It wrapped before: "… d side" then "by side" ran straight into what came under it
        # (the bullets then; the diff now, which comes before the advisor's reasons).
        assert lines[hint].endswith("d side by side") and lines[hint + 1].strip() == ""
        assert lines[hint + 2].lstrip().startswith("--- a/")


async def test_long_legends_end_at_a_whole_entry_and_count_the_rest() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await pilot_until(pilot, lambda: app.store.view().step == 1280)
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
        await pilot_until(pilot, lambda: app.store.view().step == 1280)
        await charts_drawn(pilot)
        chart = app.screen.query_one("#chart-grad", PlotextChart)
        assert chart.display and app.screen.region.contains_region(chart.region) and chart.region.height >= 8
        lines = painted(chart)
        assert lines[0].startswith("gradient norm  ━ total 0.018")
        assert any("┤" in line for line in lines[1:])  # an axis with its ticks: a drawn plot, not a placeholder


async def test_the_module_panel_shows_each_module_as_a_bar_with_its_anomaly() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await pilot_until(pilot, lambda: app.store.view().step == 1280)
        await charts_drawn(pilot)
        lines = painted(app.screen.query_one("#modules"))
        text = "\n".join(lines)
        assert "Gradient norm per module (log scale)" in lines[0]
        assert "features.0 5.3e-10 vanishing┤" in text and "classifier.2 0.018┤" in text
        assert "1e-9" in text or "1e-11" in text  # the log axis is labelled in decades


# ---------------------------------------------------------------- issue 16: finding your way


def focus_marked(app: CopilotApp, pane_id: str) -> bool:
    """Whether the pane's top border is drawn in the accent colour that marks the pane with the keys."""
    border_type, colour = app.screen.query_one(pane_id).styles.border_top
    return bool(border_type) and colour == Color.parse(app.get_css_variables()["accent"])


@pytest.mark.parametrize("size", [WIDE, COMPACT], ids=["160x48", "80x24"])
async def test_a_proposal_takes_the_scroll_keys_wherever_focus_was_and_its_pane_is_marked(size) -> None:
    session = SyntheticSession(events=seeded_run_events(epochs_fixed=0), turns=[Turn(broken_diagnosis(), architecture_proposal(), "demand", ())])
    app = make_app(session)
    async with app.run_test(size=size) as pilot:
        await pilot_until(pilot, lambda: app.store.view().step == 1280)
        await pilot.press("3")  # reading the log: it has the keys, and its pane says so
        await pilot_until(pilot, lambda: isinstance(app.focused, LogPane))
        assert focus_marked(app, "#log") and not focus_marked(app, "#advisor")
        await pilot.press("question_mark")
        await pilot_until(pilot, lambda: app.advisor_state == "waiting")
        pane = app.screen.query_one(ProposalPane)
        # It was Tab three times before arrows, j or PageDown moved the proposal.
        await pilot_until(pilot, lambda: app.focused is pane and pane.max_scroll_y > 0)
        assert focus_marked(app, "#advisor") and not focus_marked(app, "#log")
        await pilot.press("j", "j")
        await pilot_until(pilot, lambda: pane.scroll_y == 2)
        await pilot.press("k")
        await pilot_until(pilot, lambda: pane.scroll_y == 1)
        await pilot.press("pagedown")
        await pilot_until(pilot, lambda: pane.scroll_y > 2)


async def test_long_diff_lines_wrap_instead_of_being_cut() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await pilot_until(pilot, lambda: app.advisor_state == "waiting")
        await pilot_until(pilot, lambda: any("+++ b/bad_cnn.py" in line for line in painted(app.screen.query_one("#proposal Static"))))
        shown = "".join(line.strip() for line in painted(app.screen.query_one("#proposal Static"))).replace(" ", "")
        diff_lines = architecture_proposal().unified_diff().splitlines()
        long_lines = [line for line in diff_lines if len(line) > app.screen.query_one(ProposalPane).size.width]
        assert long_lines, "the seeded proposal has lines wider than the pane"
        for line in long_lines:  # "nn.BatchNorm2" was where the line ended, with nothing to say so
            assert line.replace(" ", "") in shown, line


async def test_side_by_side_in_a_narrow_pane_is_the_unified_diff_with_a_note_and_keeps_the_place() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=WIDE) as pilot:
        await pilot_until(pilot, lambda: app.advisor_state == "waiting")
        pane = app.screen.query_one(ProposalPane)
        await pilot_until(pilot, lambda: app.focused is pane and pane.max_scroll_y > 6)
        await pilot.press("j", "j", "j")
        await pilot_until(pilot, lambda: pane.scroll_y == 3)
        await pilot.press("d")  # the pane is 60 columns: each side had about 22 characters
        await pilot_until(pilot, lambda: "side by side needs" in shown_text(app, "#proposal Static"))
        text = shown_text(app, "#proposal Static")
        assert "@@" in text and "a/bad_cnn.py " not in text.replace("--- a/bad_cnn.py", "")
        assert pane.scroll_y == 3, "switching the view keeps the place"
        await pilot.press("z")  # zoomed to the whole screen, both sides fit
        await pilot_until(pilot, lambda: "side by side needs" not in shown_text(app, "#proposal Static"))
        text = shown_text(app, "#proposal Static")
        assert "a/bad_cnn.py" in text and "b/bad_cnn.py" in text and "@@" not in text
        row = next(line for line in painted(app.screen.query_one("#proposal Static")) if "nn.BatchNorm2d(16)" in line)
        assert "nn.Conv2d(3, 16, 3, padding=1), nn.Sigmoid()," in row, "each side shows a whole line of the model"
        await pilot.press("d")
        await pilot_until(pilot, lambda: "@@" in shown_text(app, "#proposal Static"))


@pytest.mark.parametrize(("size", "wording"), [(COMPACT, -1), (WIDE, 0)], ids=["80x24", "160x48"])
async def test_the_demo_banner_is_one_whole_sentence_on_one_row(size, wording) -> None:
    app = CopilotApp(proposal_session(), Settings(tui={"refresh_hz": 20}), banner=DEMO_BANNER)
    async with app.run_test(size=size) as pilot:
        await pilot_until(pilot, lambda: app.store.view().step == 1280)
        banner = app.screen.query_one("#banner")
        assert banner.outer_size.height == 1  # it took three rows at 80×24 and stopped mid-sentence
        assert painted(banner)[0].strip() == DEMO_BANNER[wording]


async def test_toasts_at_80x24_are_short_single_and_clear_of_the_advisor_pane() -> None:
    app = make_app(proposal_session())
    async with app.run_test(size=COMPACT, notifications=True) as pilot:
        await pilot_until(pilot, lambda: app.advisor_state == "waiting")
        await pilot.press("question_mark", "question_mark", "p")  # "a proposal is waiting" twice, then a notice
        await pilot_until(pilot, lambda: app.store.view().state == "paused")
        app.notify("training paused by the test, a line long enough to wrap over two rows of a toast")
        await pilot_until(pilot, lambda: len(app.screen.query(Toast)) == 2)
        await pilot_until(pilot, lambda: all(toast.region.area for toast in app.screen.query(Toast)))  # the rack's layout placed them
        messages = [notification.message for notification in app._notifications]
        assert messages.count("A proposal is waiting for you: a accept · r reject · e edit.") == 1, messages
        assert all(notification.timeout <= 8 for notification in app._notifications)
        advisor = app.screen.query_one("#advisor").region
        for toast in app.screen.query(Toast):
            assert not toast.region.overlaps(advisor), (toast.region, advisor)


async def test_the_header_names_the_requested_model_until_the_trainer_reports() -> None:
    app = make_app(SyntheticSession(events=[]))
    async with app.run_test(size=WIDE) as pilot:
        await pilot_until(pilot, lambda: "trainer starting" in painted(app.screen.query_one("#status"))[0])
        first = painted(app.screen.query_one("#status"))[0]
        assert "bad_cnn.py, trainer starting…" in first and " on ?" not in first, first  # was "model on ?" for 7 s
