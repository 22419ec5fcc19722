"""The proposal pane's trial chart: the change beside the unchanged run, a few rows under the measured line.

What it shows is picked once for every view (`copilot.advisor.trials.curves`); this
module colours it the way the live charts are coloured (`draw_line_chart`: the legend
line with each arm's last value and the noise, the plot under it, in trial steps). A build holds the
plotext lock and costs tens of milliseconds, so the pane runs it in a thread worker and
keeps the result until the proposal or the width changes; nothing here runs plotext on
the event loop. The chart is left out when the pane is too short for it and the diff.
"""

from __future__ import annotations

import numpy as np
from rich.text import Text

from copilot.advisor.trials.curves import TrialCurves
from copilot.advisor.trials.describe import noise_text
from copilot.tui.widgets.charts import LEGEND_GAP, ChartData, ChartSeries, draw_line_chart

TRIAL_CHART_ROWS = 7  # the legend line and a 6-row plot: at 160×48 the diff still starts on the pane's first screen
MIN_PANE_ROWS = 20  # a shorter pane (80×24) keeps its rows for the diff
MIN_CHART_WIDTH = 30


def fits(width: int, height: int) -> bool:
    """Whether a pane of this size shows the chart."""
    return width >= MIN_CHART_WIDTH and height >= MIN_PANE_ROWS


def draw_trial_chart(curves: TrialCurves, width: int) -> Text:
    """The legend (the metric, each arm's last value, the noise where it fits) and both arms on one plot:
    `TRIAL_CHART_ROWS` lines. The measured line above it says the same figures in full."""
    series = tuple(ChartSeries(curve.label, np.asarray(curve.steps), np.asarray(curve.values)) for curve in curves.drawn)
    chart = draw_line_chart(ChartData(key=None, series=series), width, TRIAL_CHART_ROWS, title=curves.metric_label, log_scale=False)
    chart.rstrip()  # plotext ends its plot with a newline
    legend, *plot = chart.split("\n")
    noise = f"{LEGEND_GAP}{noise_text(curves.noise)} (loss)" if curves.noise is not None else ""
    if noise and legend.cell_len + len(noise) <= width:
        legend.append(noise, "dim")
    return Text("\n").join([legend, *plot])
