"""The braille chart renderer and the widget's build cache, without a running app where possible."""

from __future__ import annotations

import numpy as np
import pytest
from rich.style import Style

from copilot.tui.widgets.charts import (
    ChartData,
    ChartSeries,
    ChartStyles,
    MetricChart,
    draw_chart,
    format_step,
    format_value,
    log10_ticks,
    raster_columns,
)
from copilot.tui.widgets.modules import text_sparkline

STYLES = ChartStyles.on(Style())


def lines_of(data: ChartData | None, width: int = 60, height: int = 14, **options) -> list[str]:
    options.setdefault("title", "loss")
    options.setdefault("log_scale", False)
    return [strip.text for strip in draw_chart(data, width, height, styles=STYLES, **options)]


def series(values, steps=None, label="train") -> ChartSeries:
    values = np.asarray(values, dtype=float)
    steps = np.arange(len(values), dtype=float) if steps is None else np.asarray(steps, dtype=float)
    return ChartSeries(label, steps, values)


def test_every_strip_has_the_chart_width_and_the_title_carries_the_latest_values() -> None:
    data = ChartData(key=1, series=(series([2.3, 2.0, 1.5]), series([2.4, 2.1], [0, 2], label="val")))
    lines = lines_of(data)
    assert len(lines) == 14 and all(len(line) == 60 for line in lines)
    assert lines[0].startswith("loss  ━ train 1.5  ━ val 2.1")
    assert lines[-1].strip().startswith("0") and lines[-1].rstrip().endswith("2")


def test_an_empty_chart_says_it_is_waiting() -> None:
    lines = lines_of(None, width=30, height=6)
    assert lines[0].startswith("loss") and "waiting for data" in lines[3]


def test_a_single_spike_among_100000_steps_survives_downsampling() -> None:
    values = np.full(100_000, 1.0)
    values[61_234] = 50.0
    lines = lines_of(ChartData(key=1, series=(series(values),)), width=60, height=12)
    label, _, plot = lines[1].partition("┤")
    assert float(label) >= 50 and any(char not in " ⠀" for char in plot)


def test_non_finite_values_are_not_drawn_but_the_legend_shows_them() -> None:
    data = ChartData(key=1, series=(series([2.3, 2.2, float("nan")]),))
    lines = lines_of(data)
    assert "train nan" in lines[0]
    assert "2.3" in "".join(lines[1:4])


def test_log_scale_labels_decades_and_draws_the_guide_line() -> None:
    ratios = series(10.0 ** np.linspace(-7, -2, 200), label="conv")
    lines = lines_of(ChartData(key=1, series=(ratios,), guide=1e-3), width=50, height=14, log_scale=True)
    labels = [line.split("┤")[0].strip() for line in lines[1:-1] if "┤" in line]
    assert "1e-3" in labels and "1e-7" in labels
    guide_row = next(line for line in lines if line.lstrip().startswith("1e-3"))
    assert "┈" in guide_row


def test_round_boundaries_are_marked_on_the_plot_and_the_axis() -> None:
    data = ChartData(key=1, series=(series(np.linspace(2.3, 0.2, 500)),), round_steps=((0, 0), (1, 250)))
    lines = lines_of(data, width=60)
    assert "r1" in lines[-1]
    assert sum("┊" in line for line in lines[1:-1]) >= 3


def test_raster_connects_steep_lines_between_columns() -> None:
    covered, low, high = raster_columns(np.array([0.0, 1.0, 2.0]), np.array([0.0, 40.0, 0.0]), 3)
    assert covered.all()
    assert high[1] == 40.0 and low[0] == 0.0 and high[0] >= 20.0 and high[2] >= 20.0


@pytest.mark.parametrize(
    ("value", "text"), [(0.0412, "0.0412"), (2.302585, "2.3"), (1.2e-5, "1.2e-5"), (3e7, "3.0e7"), (float("nan"), "nan")]
)
def test_numbers_fit_the_gutter(value: float, text: str) -> None:
    assert format_value(value) == text


def test_steps_and_decade_ticks_read_naturally() -> None:
    assert [format_step(s) for s in (950, 12_300, 1_200_000)] == ["950", "12.3k", "1.2M"]
    assert log10_ticks(-7.2, -1.5)[1] == ["1e-2", "1e-3", "1e-4", "1e-5", "1e-6", "1e-7"]
    assert log10_ticks(-2.4, -2.1)[1] == ["0.00794", "0.00398"]  # less than a decade: the ends
    assert log10_ticks(-2.1, -1.3)[1] == ["0.0501", "1e-2", "0.00794"]  # one decade: with the ends


def test_sparkline_uses_the_shared_scale_and_marks_zero_and_nan() -> None:
    line = text_sparkline([1e-9, 1e-5, 1e-1, 0.0, float("nan")], 6, (-9.0, -1.0))
    assert line == " ▁▅█_!"


@pytest.mark.anyio
async def test_the_widget_rebuilds_only_for_new_data_or_a_new_size() -> None:
    from textual.app import App, ComposeResult

    class OneChart(App):
        def compose(self) -> ComposeResult:
            yield MetricChart("loss", id="chart")

    app = OneChart()
    async with app.run_test(size=(60, 16)) as pilot:
        chart = app.query_one(MetricChart)
        data = ChartData(key=1, series=(series(np.linspace(2.3, 0.1, 1000)),))
        chart.show(data)
        await pilot.pause()
        builds = chart.builds
        chart.show(ChartData(key=1, series=data.series))  # same key: nothing to do
        chart.refresh()
        await pilot.pause()
        assert chart.builds == builds
        chart.show(ChartData(key=2, series=data.series))
        await pilot.pause()
        assert chart.builds == builds + 1
        await pilot.resize_terminal(80, 20)
        await pilot.pause()
        assert chart.builds == builds + 2
