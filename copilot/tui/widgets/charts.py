"""The live charts, drawn by plotext off the event loop and painted from a cache.

A plotext build costs tens of milliseconds (more with points and series) and its
module-level API is one global figure, so:
- a `PlotextChart` widget never builds: it hands its data to the app's `ChartBuilder`
  and paints the strips the builder sent back last (Textual's line API);
- the builder is one thread that builds one chart at a time under `PLOTEXT_LOCK`,
  only charts that are on screen and whose data or size changed, each at most once
  per `REBUILD_INTERVAL_S`, and together within `BUILD_DUTY` of one core over a few
  seconds, so builds are staggered and the app's CPU stays bounded;
- plotext's ANSI output is parsed once (`Text.from_ansi`) into strips, in the builder;
- series are downsampled to the plot's pixel width with min and max per bucket, so
  spikes survive; log axes plot log10 values with ticks labelled here
  (plotext's `yscale("log")` crashes on the second build).
The legend is one line above each plot that always fits its width.

This module draws; it knows nothing about runs or trainers.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import plotext as plt
from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.events import Resize, Show
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from copilot.numbers import compact, step_label
from copilot.plotext_lock import PLOTEXT_LOCK
from copilot.tui.store import MAX_SERIES, ModuleRow, minmax_downsample, module_anomaly
from copilot.tui.widgets.modules import ANOMALY_COLORS, HEALTHY_SPARK

SERIES_COLORS = ((79, 195, 247), (255, 183, 77), (129, 199, 132), (240, 98, 146), (255, 241, 118), (179, 157, 219),
                 (229, 115, 115), (224, 224, 224))
GUIDE_COLOR = (158, 158, 158)
ROUND_COLOR = (239, 83, 80)
OTHERS_BAR_COLOR = GUIDE_COLOR


def _rgb(style: str) -> tuple[int, int, int]:
    """A Rich colour ("bold red", "#ff8a65") as the RGB triple plotext takes."""
    color = Style.parse(style).color
    assert color is not None
    return tuple(color.get_truecolor())  # type: ignore[return-value]


HEALTHY_BAR_COLOR = _rgb(HEALTHY_SPARK)
ANOMALY_BAR_COLORS = {anomaly: _rgb(style) for anomaly, style in ANOMALY_COLORS.items()}  # as in the layers table
REBUILD_INTERVAL_S = 0.6  # per chart: keeps staleness p95 under 1.5 s; each build costs 10-80 ms
BUILD_DUTY = 0.15  # the most CPU (fraction of one core) the builds may take over a `BUILD_WINDOW_S`
BUILD_GAP_S = 0.03  # between two builds: the event loop paints one before the next lands
BUILD_WINDOW_S = 2.0  # long enough that one slow build (GC, a big figure) does not stall the others
LEGEND_GAP = "  "


def log10_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Tick positions (in log10 space) for [low, high] and their labels, top first.

    Decades ("1e-3") when two or more fit; otherwise the ends with their values, around
    the one decade inside, if any, so a narrow range still reads. An end closer to that
    decade than a tenth of the range is left out: both would land on one row, and which
    label plotext shows there is not stable from run to run.
    """
    first, last = math.ceil(low), math.floor(high)
    step = max(1, (last - first) // 4)
    decades = [float(p) for p in range(last, first - 1, -step)]
    if len(decades) >= 2:
        return decades, [f"1e{int(p)}" for p in decades]
    near = (high - low) / 10
    ends = [end for end in (high, low) if all(abs(end - decade) > near for decade in decades)]
    ticks = sorted([(end, compact(10**end)) for end in ends] + [(p, f"1e{int(p)}") for p in decades], reverse=True)
    return [position for position, _ in ticks], [label for _, label in ticks]


# --------------------------------------------------------------------------- what a chart draws


@dataclass(frozen=True)
class ChartSeries:
    label: str
    steps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class ChartData:
    """Everything one line chart draws; `key` says whether it differs from the last frame."""

    key: object  # e.g. the store version: equal keys mean equal data
    series: tuple[ChartSeries, ...]
    round_steps: tuple[tuple[int, int], ...] = ()  # (round, step where it starts): vertical lines
    guide: float | None = None  # a horizontal reference line, e.g. the 1e-3 update ratio
    arrivals: tuple[float, ...] = ()  # when the data in it reached the app (time.monotonic()), oldest first
    # The run's first step: every chart of a screen starts its x axis there, also one whose
    # series began later (modules swapped in by an accepted round have no earlier history).
    x_start: float | None = None


@dataclass(frozen=True)
class BarsData:
    """One horizontal bar per module: its latest gradient norm, coloured by its anomaly."""

    key: object
    rows: tuple[ModuleRow, ...]
    arrivals: tuple[float, ...] = ()


def legend_line(title: str, entries: list[tuple[str, str, tuple[int, int, int]]], width: int) -> Text:
    """`title  ━ train 0.412  ━ val 0.380`, cut at a whole entry: what does not fit is counted, `+2`.

    A name too long for the line keeps its end (`…features.10`), where module names differ.
    """
    line = Text(title, style="bold", no_wrap=True, overflow="crop")
    for index, (name, value, color) in enumerate(entries):
        left = len(entries) - index - 1
        reserve = len(f" +{left}") if left else 0
        entry_width = len(f"{LEGEND_GAP}━ {name} {value}")
        room = width - line.cell_len - reserve
        if entry_width > room:
            short = room - len(f"{LEGEND_GAP}━  {value}") - 1
            if index == 0 and short >= 6:  # the first entry is worth a shortened name
                name = "…" + name[-short:]
            else:
                line.append(f" +{len(entries) - index}", style="dim")
                break
        line.append(f"{LEGEND_GAP}━ ", style=Style(color=f"rgb{color}"))
        line.append(f"{name} ")
        line.append(value, style="bold red" if value in ("nan", "inf", "-inf") else "")
    line.truncate(width)
    return line


# Rows plotext takes from a plot's height for its frame (top and bottom) and the x tick labels.
PLOT_FRAME_ROWS = 3


def _linear_ticks(low: float, high: float, canvas_rows: int) -> tuple[list[float], list[str]]:
    """The top, middle and bottom of the axis; the top and bottom only on a canvas too short to
    give the middle a row of its own (two ticks on one row are drawn as either, by chance)."""
    count = 3 if canvas_rows >= 3 else 2
    positions = [high - (high - low) * index / (count - 1) for index in range(count)]
    return positions, [compact(position) for position in positions]


def draw_line_chart(data: ChartData | None, width: int, height: int, *, title: str, log_scale: bool) -> Text:
    """The legend line and the plotext plot under it, as one Rich `Text` of `height` lines."""
    chosen = data.series[:MAX_SERIES] if data else ()
    entries = [(series.label, compact(float(series.values[-1])), SERIES_COLORS[index])
               for index, series in enumerate(chosen) if len(series.values)]
    legend = legend_line(title, entries, width)
    plot_height = height - 1
    prepared = []
    for index, series in enumerate(chosen):
        # Two points per text column: the min and max of its bucket, so a spike of one step survives.
        steps, values = minmax_downsample(np.asarray(series.steps), np.asarray(series.values), max(1, width))
        if log_scale:
            positive = values > 0
            steps, values = steps[positive], np.log10(values[positive])
        if len(steps):
            prepared.append((index, steps, values))
    if not prepared or plot_height < 4 or width < 20:
        return _waiting(legend, width, height, "waiting for data" if not prepared else "")
    assert data is not None
    x_low = min(float(steps[0]) for _, steps, _ in prepared)
    if data.x_start is not None:
        x_low = min(x_low, data.x_start)
    x_high = max(float(steps[-1]) for _, steps, _ in prepared)
    all_values = np.concatenate([values for _, _, values in prepared])
    y_low, y_high = float(all_values.min()), float(all_values.max())
    never_negative = not log_scale and y_low >= 0  # a loss or an accuracy: its axis stops at zero
    guide = None
    if data.guide is not None and data.guide > 0:
        guide = math.log10(data.guide) if log_scale else data.guide
        y_low, y_high = min(y_low, guide), max(y_high, guide)
    if y_high <= y_low:
        pad = 0.5 if log_scale else max(abs(y_low) * 0.1, 1e-12)
        y_low, y_high = y_low - pad, y_high + pad
    if never_negative:
        y_low = max(y_low, 0.0)
    y_ticks, y_labels = log10_ticks(y_low, y_high) if log_scale else _linear_ticks(y_low, y_high, plot_height - PLOT_FRAME_ROWS)
    x_ticks = [x_low, (x_low + x_high) / 2, x_high] if x_high > x_low else [x_low]
    with PLOTEXT_LOCK:
        plt.clear_figure()
        # plotext caps a plot at the terminal size it detects (80 columns where stdout is no
        # terminal, as under tests): a wider chart (the history screen's) would draw at 80.
        plt.limitsize(False, False)
        plt.plotsize(width, plot_height)
        plt.theme("clear")  # no background of its own: the app's theme shows through
        for index, steps, values in reversed(prepared):  # series 0 last: the primary line stays on top
            plt.plot(steps.tolist(), values.tolist(), marker="braille", color=SERIES_COLORS[index])
        if guide is not None:
            plt.hline(guide, GUIDE_COLOR)
        for round_number, step in data.round_steps:
            if round_number and x_low <= step <= x_high:
                plt.vline(step, ROUND_COLOR)
                plt.text(f"r{round_number}", step, y_high, color=ROUND_COLOR)
        plt.ylim(y_low, y_high)
        if x_high > x_low:
            plt.xlim(x_low, x_high)
        plt.yticks(y_ticks, y_labels)
        plt.xticks(x_ticks, [step_label(x) for x in x_ticks])
        ansi = plt.build()
        plt.clear_figure()
    return Text("\n").join([legend, Text.from_ansi(ansi)])


def _waiting(legend: Text, width: int, height: int, message: str) -> Text:
    lines = [legend] + [Text("") for _ in range(height - 1)]
    if height >= 3:
        lines[height // 2] = Text(message.center(width), style="dim")
    return Text("\n").join(lines)


def bar_order(rows: tuple[ModuleRow, ...], shown: int) -> tuple[list[ModuleRow], list[ModuleRow]]:
    """(the modules to draw, in model order; the rest) when only `shown` bars fit.

    Anomalies first, then the modules furthest (in decades) from the model's median
    norm: the few a person should look at. The rest become one "N others" bar.
    """
    if len(rows) <= shown:
        return list(rows), []
    logs = [math.log10(row.grad_norm) for row in rows if row.grad_norm and row.grad_norm > 0 and math.isfinite(row.grad_norm)]
    median = float(np.median(logs)) if logs else 0.0

    def unusual(row: ModuleRow) -> tuple[bool, float]:
        norm = row.grad_norm
        distance = abs(math.log10(norm) - median) if norm and norm > 0 and math.isfinite(norm) else math.inf
        return module_anomaly(row) is not None, distance

    keep = {row.name for row in sorted(rows, key=unusual, reverse=True)[: shown - 1]}
    return [row for row in rows if row.name in keep], [row for row in rows if row.name not in keep]


def draw_module_bars(data: BarsData | None, width: int, height: int, *, title: str) -> Text:
    """Per-module gradient norms as horizontal bars on a log axis; names and values on the y axis."""
    rows = tuple(row for row in (data.rows if data else ()) if row.grad_norm is not None)
    legend = legend_line(title, [], width)
    bar_rows = height - 4  # legend, the frame's two lines, the x labels
    if not rows or bar_rows < 1 or width < 30:
        return _waiting(legend, width, height, "per-module gradient norms appear after the first logged step" if not rows else "")
    drawn, others = bar_order(rows, bar_rows)
    bars: list[tuple[str, float, tuple[int, int, int]]] = []
    for row in drawn:
        anomaly = module_anomaly(row)
        label = f"{row.name} {compact(row.grad_norm)}" + (f" {anomaly}" if anomaly else "")
        bars.append((label, row.grad_norm, ANOMALY_BAR_COLORS.get(anomaly or "", HEALTHY_BAR_COLOR)))
    if others:
        norms = [row.grad_norm for row in others if row.grad_norm and math.isfinite(row.grad_norm) and row.grad_norm > 0]
        median = float(np.median(norms)) if norms else 0.0
        bars.append((f"{len(others)} others (median {compact(median)})", median, OTHERS_BAR_COLOR))
    finite = [math.log10(norm) for _, norm, _ in bars if norm > 0 and math.isfinite(norm)]
    low = math.floor(min(finite, default=-1.0)) - 1  # bars start a decade below the smallest
    high = math.ceil(max(finite, default=0.0))
    # A bar's length is its decades above `low`; zero shows as a stub, non-finite as full length.
    lengths = [(math.log10(norm) - low) if norm > 0 and math.isfinite(norm) else (0.2 if norm == 0 else high - low)
               for _, norm, _ in bars]
    name_width = min(max(len(label) for label, _, _ in bars), width // 2)
    labels = [label if len(label) <= name_width else "…" + label[-(name_width - 1):] for label, _, _ in bars]
    positions = [len(bars) - index for index in range(len(bars))]  # the first module on top
    decades = list(range(low, high + 1, max(1, (high - low) // 5)))
    with PLOTEXT_LOCK:
        plt.clear_figure()
        plt.plotsize(width, height - 1)
        plt.theme("clear")
        for color in dict.fromkeys(color for _, _, color in bars):  # one bar call per colour: plotext colours per call
            picked = [index for index, (_, _, bar_color) in enumerate(bars) if bar_color == color]
            plt.bar([positions[i] for i in picked], [lengths[i] for i in picked], orientation="horizontal",
                    color=color, width=0.5)
        plt.yticks(positions, labels)
        plt.xlim(0, high - low)
        plt.xticks([decade - low for decade in decades], [f"1e{decade}" for decade in decades])
        ansi = plt.build()
        plt.clear_figure()
    return Text("\n").join([legend, Text.from_ansi(ansi)])


# --------------------------------------------------------------------------- the builder thread


@dataclass(frozen=True)
class BuildRequest:
    chart: "PlotextChart"
    draw: Callable[[], Text]  # pure: reads only what it closed over, never the widget
    width: int
    height: int
    key: object
    arrivals: tuple[float, ...]


class ChartBuilder:
    """Builds the charts' plots one at a time in one thread; the newest request per chart wins.

    `run` is the thread's body (the app runs it in a thread worker of its own group);
    it returns when `stopped()` turns true, checked at least every 0.1 s.
    """

    def __init__(self, rebuild_interval_s: float = REBUILD_INTERVAL_S, duty: float = BUILD_DUTY) -> None:
        self.rebuild_interval_s = rebuild_interval_s
        self.duty = duty
        self._pending: dict[int, BuildRequest] = {}
        self._last_build: dict[int, float] = {}
        self._condition = threading.Condition()
        self._recent_costs: deque[tuple[float, float]] = deque()  # (when, CPU seconds) of builds in the window
        self.builds = 0
        self.build_seconds: deque[float] = deque(maxlen=10_000)  # each build's CPU time, for the benchmarks
        self.staleness_s: deque[float] = deque(maxlen=10_000)  # data reaching the app -> on screen, per paint
        self._console = Console(file=io.StringIO(), width=400, color_system="truecolor", legacy_windows=False)

    def request(self, request: BuildRequest) -> None:
        with self._condition:
            self._pending[id(request.chart)] = request
            self._condition.notify()

    def _next(self) -> tuple[BuildRequest | None, float]:
        """The pending request whose chart waited longest and may build now, or how long to wait."""
        now = time.monotonic()
        ready: list[tuple[float, int]] = []
        wait = 0.1
        for chart_id in self._pending:
            due = self._last_build.get(chart_id, -math.inf) + self.rebuild_interval_s
            if due <= now:
                ready.append((due, chart_id))
            else:
                wait = min(wait, due - now)
        if not ready:
            return None, wait
        return self._pending.pop(min(ready)[1]), 0.0

    def _over_budget(self) -> float:
        """Seconds to wait until the builds of the last `BUILD_WINDOW_S` fit the duty again (0: build now)."""
        now = time.monotonic()
        while self._recent_costs and self._recent_costs[0][0] < now - BUILD_WINDOW_S:
            self._recent_costs.popleft()
        allowed = self.duty * BUILD_WINDOW_S
        used = sum(cost for _, cost in self._recent_costs)
        if used <= allowed:
            return 0.0
        for when, cost in self._recent_costs:  # the oldest builds leave the window first
            used -= cost
            if used <= allowed:
                return when + BUILD_WINDOW_S - now
        return BUILD_WINDOW_S

    def run(self, stopped: Callable[[], bool]) -> None:
        while not stopped():
            rest = self._over_budget()
            if rest > 0:
                time.sleep(min(rest, 0.1))
                continue
            with self._condition:
                request, wait = self._next()
                if request is None:
                    self._condition.wait(wait)
                    continue
                self._last_build[id(request.chart)] = time.monotonic()
            # CPU time, not wall time: on a busy machine the wall clock also counts other processes' turns.
            started = time.thread_time()
            try:
                drawn = request.draw()
            except Exception as error:  # plotext on odd data: say so in the chart, keep building the others
                drawn = Text(f"could not draw this chart: {type(error).__name__}: {error}", style="red")
            strips = self._strips(drawn, request.width)
            cost = time.thread_time() - started
            self.builds += 1
            self.build_seconds.append(cost)
            self._recent_costs.append((time.monotonic(), cost))
            request.chart.post_message(PlotextChart.Built(request, strips))
            time.sleep(BUILD_GAP_S)

    def _strips(self, text: Text, width: int) -> list[Strip]:
        text.no_wrap, text.overflow = True, "crop"
        options = self._console.options.update_width(width)
        return [Strip(line, width) for line in self._console.render_lines(text, options, pad=True)]


# --------------------------------------------------------------------------- the widgets


class PlotextChart(Widget):
    """A chart that paints the strips its builder made; subclasses say how to draw their data."""

    DEFAULT_CSS = """
    PlotextChart {
        height: 1fr;
        min-height: 5;
    }
    """

    class Built(Message):
        """The builder finished a plot (posted from its thread)."""

        def __init__(self, request: BuildRequest, strips: list[Strip]) -> None:
            super().__init__()
            self.request = request
            self.strips = strips

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self._data: ChartData | BarsData | None = None
        self._strips: list[Strip] = []
        self._built_key: object = None
        self._styled: tuple[Style, list[Strip]] | None = None
        self._unpainted_arrivals: tuple[float, ...] | None = None
        self._painted_up_to = 0.0  # the newest arrival painted so far
        self._visible_since = time.monotonic()

    @property
    def data(self) -> ChartData | BarsData | None:
        return self._data

    @property
    def builder(self) -> ChartBuilder:
        return self.app.chart_builder  # type: ignore[attr-defined]

    @property
    def up_to_date(self) -> bool:
        """Whether what is painted is the latest data at the current size (tests and snapshots wait on it)."""
        return self._data is not None and self._built_key == (self._data.key, *self.size)

    @property
    def lines(self) -> list[str]:
        """What the chart shows now, as plain text (tests read it)."""
        return [strip.text for strip in self._strips]

    def show(self, data: ChartData | BarsData) -> None:
        """Hand the chart new data; it is built (later, in the builder) only if it changed and is on screen."""
        if self._data is not None and self._data.key == data.key:
            return
        self._data = data
        self._request()

    def draw(self, width: int, height: int) -> Callable[[], Text]:
        raise NotImplementedError

    def _request(self) -> None:
        width, height = self.size
        if self._data is None or not self.display or width <= 0 or height <= 0:
            return
        if self.up_to_date:
            return
        self.builder.request(
            BuildRequest(self, self.draw(width, height), width, height, (self._data.key, width, height), self._data.arrivals)
        )

    def on_resize(self, _event: Resize) -> None:
        self._request()

    def on_show(self, _event: Show) -> None:
        # Off screen nothing is stale: what arrived meanwhile counts from the moment the chart is back.
        self._visible_since = time.monotonic()
        self._request()

    def on_plotext_chart_built(self, message: Built) -> None:
        message.stop()
        request = message.request
        if (request.width, request.height) != tuple(self.size):
            self._request()  # resized while it was built: the next build has the new size
            return
        self._strips, self._built_key, self._styled = message.strips, request.key, None
        self._unpainted_arrivals = request.arrivals
        self.refresh()

    def render_line(self, y: int) -> Strip:
        """A line of the last build, in the widget's style (the line API keeps borders and padding)."""
        base = self.rich_style
        if self._styled is None or self._styled[0] != base:
            self._styled = (base, [strip.apply_style(base) for strip in self._strips])
        if y == 0 and self._unpainted_arrivals is not None:
            self._record_staleness(self._unpainted_arrivals)
            self._unpainted_arrivals = None
        styled = self._styled[1]
        return styled[y] if y < len(styled) else Strip.blank(self.size.width, base)


    def _record_staleness(self, arrivals: tuple[float, ...]) -> None:
        """How long the oldest data this paint is the first to show waited for it (none when nothing new came)."""
        new = [arrival for arrival in arrivals if arrival > self._painted_up_to]
        if new:
            self.builder.staleness_s.append(time.monotonic() - max(new[0], self._visible_since))
            self._painted_up_to = new[-1]


class MetricChart(PlotextChart):
    """A line chart of one metric over steps; feed it with `show(ChartData)`."""

    def __init__(self, title: str, *, log_scale: bool = False, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(title, id=id, classes=classes)
        self.log_scale = log_scale

    def draw(self, width: int, height: int) -> Callable[[], Text]:
        data, title, log_scale = self._data, self.title, self.log_scale
        assert data is None or isinstance(data, ChartData)
        return lambda: draw_line_chart(data, width, height, title=title, log_scale=log_scale)


class ModuleBars(PlotextChart, can_focus=True):
    """The latest gradient norm of each module as a bar on a log axis; feed it with `show(BarsData)`."""

    def draw(self, width: int, height: int) -> Callable[[], Text]:
        data, title = self._data, self.title
        assert data is None or isinstance(data, BarsData)
        return lambda: draw_module_bars(data, width, height, title=title)
