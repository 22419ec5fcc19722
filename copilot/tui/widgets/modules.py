"""Text sparklines of per-module gradient norms, and the colours of module anomalies, for the layers table.

Sparklines share one log scale across all modules, so a module whose gradients
vanished sits at the bottom next to healthy ones instead of looking like noise on
its own scale. The run screen draws its per-module panel with plotext
(`charts.ModuleBars`); these are the characters inside the layers screen's table
cells. No store access here: callers hand it values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from copilot.tui.store import ModuleRow

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
