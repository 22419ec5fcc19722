"""A trial's validation curves: the change beside the unchanged run, per evaluation, and how they read.

The runner keeps every arm's scored points (`ArmResult.points`: validation loss and
accuracy at each trial step), and they travel inside the `TrialReport` to the proposal,
the ledger and the round's record. This module picks what a chart of them shows, once
for every view (the proposal pane, the headless output, `copilot show`): the unchanged
run and the change (the winner; without one, the advisor's own candidate), validation
accuracy when both arms have it, else validation loss, and the figures with the noise.
`plain_chart` draws it without colour for a terminal or a pipe; the app colours its
own (`copilot/tui/widgets/trial_chart.py`). No torch, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from copilot.advisor.schemas import ArmResult, TrialReport
from copilot.advisor.trials.describe import arm_figures, noise_text
from copilot.advisor.trials.runner import INCUMBENT

UNCHANGED_LABEL = "unchanged"
CHANGE_LABEL = "this change"
PLAIN_CHART_WIDTH = 64
PLAIN_CHART_HEIGHT = 14


@dataclass(frozen=True)
class ArmCurve:
    """One arm's plotted metric at each of its evaluations."""

    label: str
    arm: ArmResult
    steps: tuple[float, ...]  # trial steps after the fork; none when the arm failed before its first evaluation
    values: tuple[float, ...]  # accuracy in percent, as every view prints it


@dataclass(frozen=True)
class TrialCurves:
    metric: str  # "val_accuracy" or "val_loss", as in events and notes
    unchanged: ArmCurve
    change: ArmCurve
    noise: float | None  # the unchanged run's spread of validation loss
    noise_method: str

    @property
    def arms(self) -> tuple[ArmCurve, ArmCurve]:
        return (self.unchanged, self.change)

    @property
    def drawn(self) -> tuple[ArmCurve, ...]:
        """The arms with a curve to draw (an unchanged run that failed has none; its line says why)."""
        return tuple(curve for curve in self.arms if curve.steps)

    @property
    def metric_label(self) -> str:
        return "val accuracy %" if self.metric == "val_accuracy" else "val loss"

    def noise_line(self) -> str:
        """`noise ±0.0040 in val loss (trend residuals over 4 evaluations)`, or that none was measured."""
        if self.noise is None:
            return "noise not measured"
        method = f" ({self.noise_method})" if self.noise_method else ""
        return f"{noise_text(self.noise)} in val loss{method}"

    def figure_lines(self) -> list[str]:
        """The numbers beside the chart: each arm's last evaluation, then the noise."""
        width = max(len(curve.label) for curve in self.arms)
        ends = [
            f"{curve.label:<{width}}  {arm_figures(curve.arm)}" + (f" at trial step {curve.arm.steps}" if curve.steps else "")
            for curve in self.arms
        ]
        return [*ends, self.noise_line()]


def _change_arm(report: TrialReport) -> ArmResult | None:
    if report.winner is not None:
        return report.arm(report.winner)
    return next((arm for arm in report.arms if arm.outcome != "incumbent"), None)


def trial_curves(report: TrialReport | None) -> TrialCurves | None:
    """The two curves a trial chart shows, or None when the change has no measured curve."""
    if report is None or report.status != "trialled":
        return None
    unchanged, change = report.arm(INCUMBENT), _change_arm(report)
    if unchanged is None or change is None or not change.points:
        return None
    both = (*unchanged.points, *change.points)
    metric = "val_accuracy" if all(point.val_accuracy is not None for point in both) else "val_loss"

    scale = 100.0 if metric == "val_accuracy" else 1.0

    def curve(label: str, arm: ArmResult) -> ArmCurve:
        steps = tuple(float(point.trial_step) for point in arm.points)
        return ArmCurve(label, arm, steps, tuple(scale * float(getattr(point, metric)) for point in arm.points))

    return TrialCurves(metric, curve(UNCHANGED_LABEL, unchanged), curve(CHANGE_LABEL, change), report.noise, report.noise_method)


def plain_chart(curves: TrialCurves, width: int = PLAIN_CHART_WIDTH, height: int = PLAIN_CHART_HEIGHT) -> str:
    """The figures, then both curves on one plotext plot in plain characters (no colour codes)."""
    from copilot.report import Curve, text_chart

    series = tuple((curve.label, curve.steps, curve.values) for curve in curves.drawn)
    chart = text_chart(Curve(f"trial {curves.metric_label}", "trial", "trial step", curves.metric_label, series), width, height)
    return "\n".join([f"trial curves: {curves.metric_label} against trial steps", *curves.figure_lines(), chart])
