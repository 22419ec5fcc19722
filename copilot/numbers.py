"""How a number reads wherever copilot shows it: a few styles, each named for the views it fits.

The views differ on purpose (a chart's legend has seven characters, the epoch table lines
up fixed decimals, a git note keeps four significant digits), but each style is written
once, here, so a value reads the same in every view of its kind and a change of how a
percentage reads is made in one place. Standard library only: every layer may import it.
"""

from __future__ import annotations

import math

MISSING = "–"  # a value not measured (yet); the Markdown report and the ASCII epoch table pass "-"


def percent(value: float | None, digits: int = 1, missing: str = MISSING) -> str:
    """A fraction as a percentage: 0.1234 -> "12.3%" (digits=0: "12%")."""
    if value is None or not math.isfinite(value):
        return missing
    return f"{100 * value:.{digits}f}%"


def significant(value: float | int | str | None) -> str:
    """A measured or proposed value as the terminal, the report and git show it: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def quantity(value: float | int | None, missing: str = "-") -> str:
    """A report figure: a count with thousands separators (286,538), else 4 significant digits."""
    if value is None:
        return missing
    return f"{value:,}" if isinstance(value, int) else significant(value)


def scaled(value: float | None, *, fixed: bool = False, missing: str = "-") -> str:
    """Plain between 1e-3 and 1e4, scientific outside (a gradient norm of 5.1e-10 stays readable).

    `fixed` keeps four decimals inside the range, so an epoch table's columns line up.
    """
    if value is None:
        return missing
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4f}" if fixed else f"{value:.4g}"
    return f"{value:.2e}"


def decimals(value: float | int | None, digits: int = 3, missing: str = MISSING) -> str:
    """A table cell with a fixed number of decimals (counts as they are): 0.121."""
    if value is None:
        return missing
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def compact(value: float | None) -> str:
    """A chart's y value or legend number in at most 7 characters: 2.31, 0.0412, 1.2e-05, nan."""
    if value is None:
        return MISSING
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e5:
        return f"{value:.3g}"
    return f"{value:.1e}".replace("e+0", "e").replace("e-0", "e-")


def step_label(step: float) -> str:
    """A chart's x label: 950, 12.3k, 1.2M."""
    step = int(step)
    if abs(step) < 10_000:
        return str(step)
    if abs(step) < 1_000_000:
        return f"{step / 1000:.3g}k"
    return f"{step / 1_000_000:.3g}M"
