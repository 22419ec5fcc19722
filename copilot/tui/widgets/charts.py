"""Line charts on plotext that cost nothing when nothing changed.

A plotext build is the expensive part of a frame and its cost grows with points
and series, so a `MetricChart`:
- downsamples every series to its width (min/max per bucket, so spikes survive),
- draws at most `MAX_SERIES` series,
- rebuilds only when it was handed new data or was resized, and otherwise returns
  the text it built last time.
Log scales are drawn by plotting log10 values with our own tick labels: plotext 5's
`yscale("log")` logs the data in place and the next rebuild (every resize) fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual_plotext import PlotextPlot

from copilot.tui.store import MAX_SERIES, minmax_downsample

SERIES_COLORS = ("cyan", "orange", "green", "magenta", "yellow", "blue", "red", "white")


@dataclass(frozen=True)
class ChartSeries:
    label: str
    steps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class ChartData:
    """Everything one chart draws; `key` says whether it differs from the last frame."""

    key: object  # e.g. the store version: equal keys mean equal data
    series: tuple[ChartSeries, ...]
    round_steps: tuple[int, ...] = ()  # x positions where accepted rounds start
    guide: float | None = None  # a horizontal reference line, e.g. the 1e-3 update ratio


def log10_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Tick positions (in log10 space) and their labels ("1e-3") covering [low, high]."""
    first, last = math.floor(low), math.ceil(high)
    step = max(1, (last - first) // 5)
    positions = [float(p) for p in range(first, last + 1, step)]
    return positions, [f"1e{int(p)}" for p in positions]


class MetricChart(PlotextPlot):
    """One chart of the run screen; feed it with `show(ChartData)`."""

    DEFAULT_CSS = """
    MetricChart {
        height: 1fr;
        min-height: 6;
    }
    """

    def __init__(self, title: str, *, log_scale: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self.log_scale = log_scale
        self._data: ChartData | None = None
        self._built_for: tuple[object, int, int, str] | None = None
        self._built: Text = Text("")
        self.builds = 0  # how many real plotext builds happened (the benchmark reads it)

    def show(self, data: ChartData) -> None:
        """Hand the chart new data; it redraws only if the data actually changed."""
        if self._data is not None and self._data.key == data.key:
            return
        self._data = data
        self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        key = (self._data.key if self._data else None, width, height, self.app.theme)
        if key != self._built_for and width > 0 and height > 0:
            self._built = self._build(width, height)
            self._built_for = key
            self.builds += 1
        return self._built

    def _build(self, width: int, height: int) -> Text:
        plt = self.plt
        plt.clear_figure()
        plt.plotsize(width, height)
        plt._set_size(width, height)
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        plt.title(self.title)
        data = self._data
        drawn = self._draw_series(plt, data, buckets=max(8, (width - 8) // 2)) if data else []
        if not drawn:
            plt.xticks([])
            plt.yticks([])
            return Text.from_ansi(plt.build())
        all_values = np.concatenate([values for _, values in drawn])
        low, high = float(all_values.min()), float(all_values.max())
        if data.guide is not None:
            guide = math.log10(data.guide) if self.log_scale else data.guide
            plt.horizontal_line(guide, color="gray")
            low, high = min(low, guide), max(high, guide)
        for step in data.round_steps:
            plt.vertical_line(step, color="red")
        if self.log_scale:
            positions, labels = log10_ticks(low, high)
            plt.yticks(positions, labels)
        if high > low:
            margin = (high - low) * 0.05
            plt.ylim(low - margin, high + margin)
        return Text.from_ansi(plt.build())

    def _draw_series(self, plt, data: ChartData, buckets: int) -> list[tuple[np.ndarray, np.ndarray]]:
        drawn = []
        for color, series in zip(SERIES_COLORS, data.series[:MAX_SERIES]):
            steps, values = series.steps, series.values
            if self.log_scale:
                positive = values > 0
                steps, values = steps[positive], np.log10(values[positive])
            steps, values = minmax_downsample(steps, values, buckets)
            if not len(steps):
                continue
            plt.plot(steps.tolist(), values.tolist(), label=series.label, color=color, marker="hd")
            drawn.append((steps, values))
        return drawn
