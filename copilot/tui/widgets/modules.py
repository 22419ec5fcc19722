"""Per-module gradient norms, one row per module: name, latest value, a sparkline, the anomaly.

Sparklines share one log scale across all modules, so a module whose gradients
vanished sits at the bottom next to healthy ones instead of looking like noise on
its own scale. The panel draws rows with Textual's line API and caches them until
new rows or a new width arrive. No store access here: the screen hands it rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from copilot.tui.store import ModuleRow, module_anomaly
from copilot.tui.widgets.charts import format_value

SPARK_LEVELS = "▁▂▃▄▅▆▇█"
ANOMALY_COLORS = {
    "non-finite": "bold red",
    "exploding": "bold red",
    "vanishing": "bold #ff8a65",
    "dead": "#ff8a65",
    "saturated": "#ffb74d",
    "update ratio": "#ffd54f",
}
HEALTHY_SPARK = "#4fc3f7"


def log_range(values: Iterable[float]) -> tuple[float, float] | None:
    """The log10 range of the positive, finite values, or None if there are none."""
    logs = [math.log10(value) for value in values if value > 0 and math.isfinite(value)]
    if not logs:
        return None
    return min(logs), max(logs)


def text_sparkline(values: Sequence[float], width: int, scale: tuple[float, float] | None) -> str:
    """The newest `width` values as block characters on a shared log10 `scale`.

    Zero (a dead module) is "_" and a non-finite value "!", so neither hides as a low bar.
    """
    if width <= 0:
        return ""
    shown = values[-width:]
    low, high = scale if scale else (0.0, 1.0)
    span = high - low
    characters = []
    for value in shown:
        if not math.isfinite(value):
            characters.append("!")
        elif value <= 0:
            characters.append("_")
        else:
            fraction = (math.log10(value) - low) / span if span > 0 else 0.5
            characters.append(SPARK_LEVELS[min(len(SPARK_LEVELS) - 1, max(0, int(fraction * len(SPARK_LEVELS))))])
    return " " * (width - len(shown)) + "".join(characters)


def grad_scale(rows: Sequence[ModuleRow], width: int) -> tuple[float, float] | None:
    """One log scale for the sparklines on screen: the range of what they show, so healthy rows still vary."""
    return log_range(value for row in rows for value in row.grad_history[-width:])


class ModulesPanel(ScrollView, can_focus=True):
    """One row per module; anomalies in colour with their label."""

    DEFAULT_CSS = """
    ModulesPanel {
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._rows: tuple[ModuleRow, ...] = ()
        self._scale: tuple[float, float] | None = None
        self._strips: dict[int, Strip] = {}
        self._built_for: tuple[int, Style] | None = None

    def show(self, rows: tuple[ModuleRow, ...]) -> None:
        if rows == self._rows:
            return
        self._rows = rows
        self._built_for = None  # rebuild rows and the shared scale on the next render
        self.virtual_size = Size(0, max(1, len(rows)))
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        built_for = (width, self.rich_style)  # a theme change restyles; a screen switch does not
        if built_for != self._built_for:
            self._strips, self._built_for = {}, built_for
            self._scale = grad_scale(self._rows, self._spark_width(width))
        index = y + self.scroll_offset.y
        if index not in self._strips:
            self._strips[index] = self._row_strip(index, width)
        return self._strips[index]

    @staticmethod
    def _name_width(width: int) -> int:
        return min(24, max(8, width // 4))

    def _spark_width(self, width: int) -> int:
        return max(0, width - self._name_width(width) - len(" 12345678 ") - len(" update ratio"))

    def _row_strip(self, index: int, width: int) -> Strip:
        base = self.rich_style
        if not self._rows:
            message = "per-module gradient norms appear after the first logged step" if index == 0 else ""
            return Strip([Segment(message, base + Style(dim=True))]).crop_extend(0, width, base)
        if index >= len(self._rows):
            return Strip.blank(width, base)
        row = self._rows[index]
        anomaly = module_anomaly(row)
        colour = Style.parse(ANOMALY_COLORS.get(anomaly or "", "")) if anomaly else Style()
        name_width = self._name_width(width)
        name = row.name if len(row.name) <= name_width else "…" + row.name[-(name_width - 1) :]
        value = format_value(row.grad_norm) if row.grad_norm is not None else "–"
        label = anomaly or ""
        spark = text_sparkline(row.grad_history, self._spark_width(width), self._scale)
        spark_style = colour if anomaly else Style(color=HEALTHY_SPARK)
        segments = [
            Segment(f"{name:<{name_width}} ", base + colour),
            Segment(f"{value:>8} ", base + colour),
            Segment(spark, base + spark_style),
            Segment(f" {label}", base + colour),
        ]
        return Strip(segments).crop_extend(0, width, base)
