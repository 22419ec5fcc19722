"""The plotext charts: what they draw, and that the widget builds only changed, visible charts, off the event loop."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from textual import work
from textual.app import App, ComposeResult
from textual.worker import get_current_worker

from copilot.numbers import compact, step_label
from copilot.tui.store import ModuleRow
from copilot.tui.widgets.charts import (
    BarsData,
    ChartBuilder,
    ChartData,
    ChartSeries,
    MetricChart,
    ModuleBars,
    bar_order,
    draw_line_chart,
    draw_module_bars,
    legend_line,
    log10_ticks,
)
from copilot.tui.widgets.modules import text_sparkline
from tests.waiting import pilot_until


def lines_of(data: ChartData | None, width: int = 60, height: int = 14, **options) -> list[str]:
    options.setdefault("title", "loss")
    options.setdefault("log_scale", False)
    return draw_line_chart(data, width, height, **options).plain.splitlines()


def series(values, steps=None, label="train") -> ChartSeries:
    values = np.asarray(values, dtype=float)
    steps = np.arange(len(values), dtype=float) if steps is None else np.asarray(steps, dtype=float)
    return ChartSeries(label, steps, values)


def module(name: str, norm: float | None, ratio: float | None = 1e-3) -> ModuleRow:
    return ModuleRow(name, norm, ratio, None, None, (norm,) if norm is not None else ())


def test_the_legend_line_carries_the_latest_values_and_the_plot_its_axes() -> None:
    data = ChartData(key=1, series=(series(np.linspace(2.3, 1.5, 300)), series([2.4, 2.1], [0, 299], label="val")))
    lines = lines_of(data)
    assert len(lines) == 14
    assert lines[0].startswith("loss  ━ train 1.5  ━ val 2.1")
    assert "┤" in "".join(lines[1:]) and lines[-1].split() == ["0", "149", "299"]


def test_an_empty_chart_says_it_is_waiting() -> None:
    lines = lines_of(None, width=30, height=6)
    assert lines[0].startswith("loss") and "waiting for data" in lines[3]


def test_a_single_spike_among_100000_steps_survives_downsampling() -> None:
    values = np.full(100_000, 1.0)
    values[61_234] = 50.0
    lines = lines_of(ChartData(key=1, series=(series(values),)), width=60, height=12)
    top_label = next(line for line in lines[1:] if "┤" in line).split("┤")[0]
    assert float(top_label) >= 50


def test_non_finite_values_are_not_drawn_but_the_legend_shows_them() -> None:
    lines = lines_of(ChartData(key=1, series=(series([2.3, 2.2, float("nan")]),)))
    assert "train nan" in lines[0]


def test_log_scale_labels_decades_and_draws_the_guide_line() -> None:
    ratios = series(10.0 ** np.linspace(-7, -2, 200), label="conv")
    lines = lines_of(ChartData(key=1, series=(ratios,), guide=1e-3), width=50, height=14, log_scale=True)
    labels = [line[:4].strip() for line in lines[1:] if line[4:5] in ("┤", "├")]
    assert "1e-3" in labels and "1e-7" in labels
    guide_row = next(line for line in lines if line.lstrip().startswith("1e-3"))
    assert guide_row.count("─") >= 10  # plotext's hline, through the plot


def test_round_boundaries_are_vertical_lines_with_their_round() -> None:
    data = ChartData(key=1, series=(series(np.linspace(2.3, 0.2, 500)),), round_steps=((0, 0), (1, 250)))
    lines = lines_of(data, width=60)
    assert any("r1" in line for line in lines[1:])
    assert sum("│" in line[8:-1] for line in lines[2:-2]) >= 5


def test_a_flat_accuracy_at_zero_keeps_its_axis_at_or_above_zero() -> None:
    lines = lines_of(ChartData(key=1, series=(series([0.0] * 50),)), title="accuracy")
    gutter = [line.split("┤")[0].strip() for line in lines[1:] if "┤" in line]
    assert gutter and not any(label.startswith("-") for label in gutter)


def test_a_series_that_began_after_a_swap_is_drawn_on_the_runs_x_axis() -> None:
    late = series(np.linspace(1e-3, 2e-3, 100), steps=np.arange(391, 491))
    assert lines_of(ChartData(key=1, series=(late,)))[-1].split()[0] == "391"
    assert lines_of(ChartData(key=1, series=(late,), x_start=1.0))[-1].split()[0] == "1"


def test_a_legend_too_long_for_its_line_ends_at_a_whole_entry_and_counts_the_rest() -> None:
    entries = [(f"features.{index}", "2.7e-10", (255, 0, 0)) for index in range(6)]
    line = legend_line("update/weight", entries, 46).plain
    assert line == "update/weight  ━ features.0 2.7e-10 +5" or line.endswith(("+4", "+3"))
    assert len(line) <= 46 and "featu" not in line.split("━")[-1].split()[-1]
    one_long = legend_line("gradient norm", [("encoder.layers.11.attention.output", "0.5", (0, 0, 0))], 40).plain
    assert len(one_long) <= 40 and one_long.endswith("output 0.5") and "…" in one_long


def test_module_bars_put_names_and_values_on_the_axis_and_group_the_rest() -> None:
    rows = tuple(module(f"layer.{index}", 10.0 ** (-2 - (index % 3))) for index in range(120))
    rows = rows[:50] + (module("layer.vanished", 1e-9),) + rows[50:]
    drawn, others = bar_order(rows, 6)
    assert "layer.vanished" in [row.name for row in drawn] and len(drawn) == 5 and len(others) == 116
    lines = draw_module_bars(BarsData(key=1, rows=rows), 90, 12, title="latest per module").plain.splitlines()
    text = "\n".join(lines)
    assert "layer.vanished 1.0e-9 vanishing┤" in text and "114 others (median 0.001)┤" in text
    assert "1e-10" in lines[-1]


def test_sparkline_uses_the_shared_scale_and_marks_zero_and_nan() -> None:
    line = text_sparkline([1e-9, 1e-5, 1e-1, 0.0, float("nan")], 6, (-9.0, -1.0))
    assert line == " ▁▅█_!"


@pytest.mark.parametrize(
    ("value", "text"), [(0.0412, "0.0412"), (2.302585, "2.3"), (1.2e-5, "1.2e-5"), (3e7, "3.0e7"), (float("nan"), "nan")]
)
def test_numbers_fit_the_gutter(value: float, text: str) -> None:
    assert compact(value) == text


def test_steps_and_decade_ticks_read_naturally() -> None:
    assert [step_label(s) for s in (950, 12_300, 1_200_000)] == ["950", "12.3k", "1.2M"]
    assert log10_ticks(-7.2, -1.5)[1] == ["1e-2", "1e-3", "1e-4", "1e-5", "1e-6", "1e-7"]
    assert log10_ticks(-2.4, -2.1)[1] == ["0.00794", "0.00398"]  # less than a decade: the ends
    assert log10_ticks(-2.1, -1.3)[1] == ["0.0501", "1e-2", "0.00794"]  # one decade: with the ends
    assert log10_ticks(-2.04, -1.19)[1] == ["0.0646", "1e-2"]  # an end next to the decade would share its row


class ChartsApp(App):
    """Two charts and the builder thread, as the app runs them; the second chart starts hidden."""

    def __init__(self) -> None:
        super().__init__()
        self.chart_builder = ChartBuilder(rebuild_interval_s=0.0)

    def compose(self) -> ComposeResult:
        yield MetricChart("loss", id="shown")
        yield ModuleBars("per module", id="hidden")

    def on_mount(self) -> None:
        self.query_one("#hidden").display = False
        self._build_charts()

    @work(thread=True, group="charts")
    def _build_charts(self) -> None:
        worker = get_current_worker()
        self.chart_builder.run(lambda: worker.is_cancelled)


@pytest.mark.anyio
async def test_charts_build_in_the_builder_thread_only_when_visible_and_changed() -> None:
    app = ChartsApp()
    async with app.run_test(size=(80, 30)) as pilot:
        builder = app.chart_builder
        drawn_in: list[str] = []
        shown, hidden = app.query_one("#shown", MetricChart), app.query_one("#hidden", ModuleBars)
        original = shown.draw

        def recording(width: int, height: int):
            draw = original(width, height)
            return lambda: drawn_in.append(threading.current_thread().name) or draw()

        shown.draw = recording  # type: ignore[method-assign]
        data = ChartData(key=1, series=(series(np.linspace(2.3, 0.1, 1000)),))
        shown.show(data)
        hidden.show(BarsData(key=1, rows=(module("conv", 1e-9),)))
        await pilot_until(pilot, lambda: shown.lines)
        assert shown.lines[0].startswith("loss  ━ train 0.1") and hidden.lines == []
        assert drawn_in and threading.main_thread().name not in drawn_in
        builds = builder.builds
        shown.show(ChartData(key=1, series=data.series))  # same key: nothing to build
        await pilot.pause(0.2)  # not a wait on an event: time for a build that must not happen to show up
        assert builder.builds == builds
        hidden.display = True  # shown now: its data is built
        await pilot_until(pilot, lambda: hidden.lines)
        assert any("conv 1.0e-9 vanishing" in line for line in hidden.lines)


@pytest.mark.anyio
async def test_a_chart_that_cannot_be_drawn_says_so_and_the_builder_goes_on() -> None:
    app = ChartsApp()
    async with app.run_test(size=(80, 30)) as pilot:
        shown = app.query_one("#shown", MetricChart)

        def broken(width: int, height: int):
            def draw():
                raise ValueError("no finite values")
            return draw

        shown.draw = broken  # type: ignore[method-assign]
        shown.show(ChartData(key=1, series=(series([1.0, 2.0]),)))
        await pilot_until(pilot, lambda: shown.lines)
        assert shown.lines[0].startswith("could not draw this chart: ValueError: no finite values")
        del shown.draw  # the real drawing again: the builder thread is still there
        shown.show(ChartData(key=2, series=(series([1.0, 2.0]),)))
        await pilot_until(pilot, lambda: shown.up_to_date)
        assert shown.lines[0].startswith("loss  ━ train 2")
