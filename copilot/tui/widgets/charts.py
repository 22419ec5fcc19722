"""Line charts that cost almost nothing per frame, drawn in braille from numpy arrays.

A chart's cost must not grow with the run's length or repeat when nothing changed, so
a `MetricChart`:
- rasterises every series to its pixel columns (min, max and the line between
  neighbours per column, so spikes survive) in a few numpy operations,
- draws at most `MAX_SERIES` series,
- rebuilds its strips only when it was handed new data, resized or restyled, and
  otherwise hands Textual the strips it built last time (Textual's line API).
Log scales plot log10 values with decade tick labels.

We measured plotext (through textual-plotext) at 20-75 ms per chart build on this
machine, before Rich re-parses its ANSI output; four of them blow the 25 ms frame
budget however few points they get. `benchmarks/tui_frame.py` keeps that
comparison. This module draws; it knows nothing about runs or trainers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Size
from textual.strip import Strip
from textual.widget import Widget

from copilot.tui.store import MAX_SERIES, minmax_downsample

SERIES_COLORS = ("#4fc3f7", "#ffb74d", "#81c784", "#f06292", "#fff176", "#b39ddb", "#e57373", "#e0e0e0")
GUIDE_COLOR = "#9e9e9e"
ROUND_COLOR = "#ef5350"
NONFINITE_COLOR = "#ff5252"

# Braille dot bits by (row within the cell from the top, column within the cell).
_BRAILLE_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.uint32)
_BRAILLE_BASE = 0x2800
_GUIDE_CHAR = ord("┈")
_ROUND_CHAR = ord("┊")


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
    round_steps: tuple[tuple[int, int], ...] = ()  # (round, step where it starts): marked on the x axis
    guide: float | None = None  # a horizontal reference line, e.g. the 1e-3 update ratio


@dataclass(frozen=True)
class ChartStyles:
    """The styles one build uses, derived from the widget's CSS so charts follow the theme."""

    base: Style
    title: Style
    axis: Style
    guide: Style
    round_marker: Style
    nonfinite: Style
    series: tuple[Style, ...]

    @classmethod
    def on(cls, base: Style) -> "ChartStyles":
        return cls(
            base=base,
            title=base + Style(bold=True),
            axis=base + Style(dim=True),
            guide=base + Style(color=GUIDE_COLOR),
            round_marker=base + Style(color=ROUND_COLOR),
            nonfinite=base + Style(color=NONFINITE_COLOR, bold=True),
            series=tuple(base + Style(color=color) for color in SERIES_COLORS),
        )


def format_value(value: float) -> str:
    """A y value or legend number in at most 7 characters: 2.31, 0.0412, 1.2e-05, nan."""
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e5:
        return f"{value:.3g}"
    return f"{value:.1e}".replace("e+0", "e").replace("e-0", "e-")


def format_step(step: float) -> str:
    """An x label: 950, 12.3k, 1.2M."""
    step = int(step)
    if abs(step) < 10_000:
        return str(step)
    if abs(step) < 1_000_000:
        return f"{step / 1000:.3g}k"
    return f"{step / 1_000_000:.3g}M"


def log10_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Tick positions (in log10 space) for [low, high] and their labels, top first.

    Decades ("1e-3") when two or more fit; otherwise the ends with their values, around
    the one decade inside, if any, so a narrow range still reads.
    """
    first, last = math.ceil(low), math.floor(high)
    step = max(1, (last - first) // 4)
    decades = [float(p) for p in range(last, first - 1, -step)]
    if len(decades) >= 2:
        return decades, [f"1e{int(p)}" for p in decades]
    positions = [high, *decades, low]
    return positions, [format_value(10**high), *(f"1e{int(p)}" for p in decades), format_value(10**low)]


def _prepared(series: ChartSeries, log_scale: bool, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """The series reduced to at most 2 points per bucket (min and max) before any per-point work.

    The cost of a frame then depends on the chart's width, not on the run's length.
    """
    steps, values = minmax_downsample(np.asarray(series.steps), np.asarray(series.values), buckets)
    if log_scale:
        positive = values > 0
        steps, values = steps[positive], np.log10(values[positive])
    return steps.astype(np.float64), values.astype(np.float64)


def raster_columns(
    px: np.ndarray, py: np.ndarray, pixel_columns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel column: whether the line passes, and the lowest and highest pixel row it covers.

    `px` must be sorted. Points sharing a column contribute their min and max (spikes
    survive however many steps fall in one column), in one pass over the points;
    columns between points are interpolated; each column's span reaches halfway to
    its neighbours, so steep lines stay connected.
    """
    index = np.clip(np.rint(px).astype(np.int64), 0, pixel_columns - 1)
    starts = np.flatnonzero(np.diff(index, prepend=-1))
    used = index[starts]
    column_low = np.minimum.reduceat(py, starts)
    column_high = np.maximum.reduceat(py, starts)
    counts = np.diff(np.append(starts, len(py)))
    columns = np.arange(pixel_columns, dtype=np.float64)
    covered = (columns >= used[0]) & (columns <= used[-1])
    line = np.interp(columns, used, np.add.reduceat(py, starts) / counts)
    low, high = line.copy(), line.copy()
    low[used], high[used] = column_low, column_high
    middle = (line[1:] + line[:-1]) / 2
    inner = covered[1:] & covered[:-1]  # the line does not reach towards columns it never gets to
    low[1:] = np.where(inner, np.minimum(low[1:], middle), low[1:])
    high[1:] = np.where(inner, np.maximum(high[1:], middle), high[1:])
    low[:-1] = np.where(inner, np.minimum(low[:-1], middle), low[:-1])
    high[:-1] = np.where(inner, np.maximum(high[:-1], middle), high[:-1])
    return covered, low, high


def braille_cells(covered: np.ndarray, low: np.ndarray, high: np.ndarray, rows: int) -> np.ndarray:
    """Braille dot bits per cell, (rows, columns), top row first, from per-column pixel spans."""
    pixel_rows = rows * 4
    low_row = np.clip(np.rint(low), 0, pixel_rows - 1)
    high_row = np.clip(np.rint(high), 0, pixel_rows - 1)
    heights = np.arange(pixel_rows, dtype=np.float64)[:, None]
    on = (heights >= low_row[None, :]) & (heights <= high_row[None, :]) & covered[None, :]
    on = on[::-1]  # pixel row 0 is the bottom; cells are listed from the top
    cells = on.reshape(rows, 4, -1, 2) * _BRAILLE_BITS[None, :, None, :]
    return cells.sum(axis=(1, 3), dtype=np.uint32)


def _row_strip(codes: np.ndarray, style_ids: np.ndarray, styles: list[Style]) -> list[Segment]:
    """One row of cells as segments, one segment per run of equal style."""
    text = codes.astype("<u4").tobytes().decode("utf-32-le")
    cuts = np.flatnonzero(style_ids[1:] != style_ids[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(text)]
    return [Segment(text[a:b], styles[style_ids[a]]) for a, b in zip(bounds, bounds[1:])]


def _place(line: list[str], owners: list[int], text: str, column: int, owner: int) -> bool:
    """Write `text` into a label row at `column` if it fits without touching another label."""
    end = column + len(text)
    if column < 0 or end > len(line) or any(char != " " for char in line[max(0, column - 1) : end + 1]):
        return False
    line[column:end] = list(text)
    owners[column:end] = [owner] * len(text)
    return True


def _segments_of(line: list[str], owners: list[int], styles: list[Style]) -> list[Segment]:
    segments: list[Segment] = []
    start = 0
    for index in range(1, len(line) + 1):
        if index == len(line) or owners[index] != owners[start]:
            segments.append(Segment("".join(line[start:index]), styles[owners[start]]))
            start = index
    return segments


def draw_chart(
    data: ChartData | None, width: int, height: int, *, title: str, log_scale: bool, styles: ChartStyles
) -> list[Strip]:
    """The chart as `height` strips of `width` cells: a title row with the latest values, the plot, the x axis."""
    if width <= 0 or height <= 0:
        return []
    blank = Strip.blank(width, styles.base)
    chosen = data.series[:MAX_SERIES] if data else ()
    prepared = [(series, *_prepared(series, log_scale, buckets=width * 2)) for series in chosen]
    title_strip = _title_strip(title, prepared, width, styles)
    drawn = [(series, steps, values) for series, steps, values in prepared if len(steps)]
    plot_rows = height - 2
    if not drawn or plot_rows < 1:
        strips = [title_strip] + [blank] * (height - 1)
        if height >= 3:
            message = "waiting for data" if not drawn else ""
            strips[height // 2] = Strip([Segment(message.center(width)[:width], styles.axis)], width)
        return strips[:height]

    assert data is not None
    # The x range comes from the full series: downsampling may have dropped the first step.
    x_low = min(float(series.steps[0]) for series, _, _ in drawn)
    x_high = max(float(series.steps[-1]) for series, _, _ in drawn)
    if x_high <= x_low:
        x_high = x_low + 1.0
    all_values = np.concatenate([values for _, _, values in drawn])
    y_low, y_high = float(all_values.min()), float(all_values.max())
    guide = None
    if data.guide is not None and data.guide > 0:
        guide = math.log10(data.guide) if log_scale else data.guide
        y_low, y_high = min(y_low, guide), max(y_high, guide)
    if y_high <= y_low:
        pad = 0.5 if log_scale else max(abs(y_low) * 0.1, 1e-12)
        y_low, y_high = y_low - pad, y_high + pad
    margin = (y_high - y_low) * 0.04
    y_low, y_high = y_low - margin, y_high + margin

    tick_rows, tick_labels = _y_ticks(y_low, y_high, plot_rows, log_scale)
    gutter = max(len(label) for label in tick_labels) + 1
    plot_columns = width - gutter
    if plot_columns < 4:
        return [title_strip] + [blank] * (height - 1)
    pixel_columns, pixel_rows = plot_columns * 2, plot_rows * 4

    codes = np.zeros((plot_rows, plot_columns), dtype=np.uint32)
    style_ids = np.zeros((plot_rows, plot_columns), dtype=np.int64)  # 0: base
    palette: list[Style] = [styles.base, styles.guide, styles.round_marker, *styles.series]
    # Series 0 is drawn last, so the primary line stays on top where lines cross.
    for index in reversed(range(len(drawn))):
        _, steps, values = drawn[index]
        if np.any(np.diff(steps) < 0):  # a resumed trainer can repeat steps; draw them in order
            order = np.argsort(steps, kind="stable")
            steps, values = steps[order], values[order]
        px = (steps - x_low) / (x_high - x_low) * (pixel_columns - 1)
        py = (values - y_low) / (y_high - y_low) * (pixel_rows - 1)
        cells = braille_cells(*raster_columns(px, py, pixel_columns), plot_rows)
        hit = cells > 0
        codes |= cells
        style_ids[hit] = 3 + index

    empty = codes == 0
    chars = codes + _BRAILLE_BASE
    if guide is not None:
        guide_row = plot_rows - 1 - int((guide - y_low) / (y_high - y_low) * (pixel_rows - 1)) // 4
        row_cells = empty[guide_row]
        chars[guide_row, row_cells] = _GUIDE_CHAR
        style_ids[guide_row, row_cells] = 1
    marker_columns: list[tuple[int, int]] = []
    for round_number, step in data.round_steps:
        if round_number == 0 or not (x_low <= step <= x_high):
            continue
        column = int((step - x_low) / (x_high - x_low) * (pixel_columns - 1)) // 2
        marker_columns.append((round_number, column))
        column_cells = empty[:, column]
        chars[column_cells, column] = _ROUND_CHAR
        style_ids[column_cells, column] = 2

    label_at = dict(zip(tick_rows, tick_labels))
    strips = [title_strip]
    for row in range(plot_rows):
        label = label_at.get(row)
        gutter_text = (label.rjust(gutter - 1) + "┤") if label is not None else " " * (gutter - 1) + "│"
        segments = [Segment(gutter_text, styles.axis), *_row_strip(chars[row], style_ids[row], palette)]
        strips.append(Strip(segments, width))
    strips.append(_x_axis_strip(x_low, x_high, marker_columns, gutter, plot_columns, styles))
    return strips


def _y_ticks(low: float, high: float, rows: int, log_scale: bool) -> tuple[list[int], list[str]]:
    """Rows (from the top) that carry a y label, and the labels."""

    def row_of(value: float) -> int:
        return min(rows - 1, max(0, int(round((high - value) / (high - low) * (rows - 1)))))

    if log_scale:
        positions, labels = log10_ticks(low, high)
    else:
        count = 3 if rows >= 5 else 2
        positions = [high - (high - low) * i / (count - 1) for i in range(count)]
        labels = [format_value(position) for position in positions]
    chosen: dict[int, str] = {}
    for position, label in zip(positions, labels):
        chosen.setdefault(row_of(position), label)
    return list(chosen), list(chosen.values())


def _x_axis_strip(
    x_low: float, x_high: float, markers: list[tuple[int, int]], gutter: int, columns: int, styles: ChartStyles
) -> Strip:
    line = [" "] * columns
    owners = [0] * columns  # 0 axis, 1 round marker
    _place(line, owners, format_step(x_low), 0, 0)
    high_label = format_step(x_high)
    _place(line, owners, high_label, columns - len(high_label), 0)
    for round_number, column in markers:
        _place(line, owners, f"r{round_number}", column, 1)
    if columns >= 30:
        middle = format_step((x_low + x_high) / 2)
        _place(line, owners, middle, (columns - len(middle)) // 2, 0)
    segments = [Segment(" " * gutter, styles.axis), *_segments_of(line, owners, [styles.axis, styles.round_marker])]
    return Strip(segments, gutter + columns)


def _title_strip(
    title: str, prepared: list[tuple[ChartSeries, np.ndarray, np.ndarray]], width: int, styles: ChartStyles
) -> Strip:
    """`title  ━ train 0.412  ━ val 0.380`: each series' colour and its latest value (nan in red)."""
    segments = [Segment(title, styles.title)]
    for index, (series, _, _) in enumerate(prepared):
        if not len(series.values):
            continue
        latest = float(series.values[-1])
        segments.append(Segment("  ━ ", styles.series[index]))
        segments.append(Segment(f"{series.label} ", styles.base))
        segments.append(Segment(format_value(latest), styles.base if math.isfinite(latest) else styles.nonfinite))
    return Strip(segments).crop_extend(0, width, styles.base)


class MetricChart(Widget):
    """One chart of the run screen; feed it with `show(ChartData)`."""

    DEFAULT_CSS = """
    MetricChart {
        height: 1fr;
        min-height: 5;
    }
    """

    def __init__(self, title: str, *, log_scale: bool = False, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.log_scale = log_scale
        self._data: ChartData | None = None
        self._strips: list[Strip] | None = None
        self._built_for: tuple[Size, Style] | None = None
        self.builds = 0  # how many real builds happened (tests and the benchmark read it)

    @property
    def data(self) -> ChartData | None:
        return self._data

    def show(self, data: ChartData) -> None:
        """Hand the chart new data; it redraws only if the data actually changed."""
        if self._data is not None and self._data.key == data.key:
            return
        self._data = data
        self._strips = None
        self.refresh()

    def build(self) -> list[Strip]:
        """The chart's strips for its current size, rebuilt only when data, size or style changed.

        Textual re-applies styles on every screen switch; comparing the resulting style
        (a theme change alters it) keeps those switches from rebuilding every chart.
        """
        built_for = (self.size, self.rich_style)
        if self._strips is None or self._built_for != built_for:
            self._strips = draw_chart(
                self._data,
                self.size.width,
                self.size.height,
                title=self.title,
                log_scale=self.log_scale,
                styles=ChartStyles.on(built_for[1]),
            )
            self._built_for = built_for
            self.builds += 1
        return self._strips

    def render_lines(self, crop: Region) -> list[Strip]:
        """One build per paint, not one style lookup per line."""
        strips = self.build()
        blank = Strip.blank(self.size.width, self.rich_style)
        return [strips[y] if y < len(strips) else blank for y in range(crop.y, crop.bottom)]

    def render_line(self, y: int) -> Strip:
        strips = self.build()
        return strips[y] if y < len(strips) else Strip.blank(self.size.width, self.rich_style)
