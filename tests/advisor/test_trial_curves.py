"""What a trial chart shows (the unchanged run and the change, accuracy else loss) and its plain-text form."""

from __future__ import annotations

import io

from rich.console import Console

from copilot.advisor.schemas import ArmResult, TrialPoint, TrialReport
from copilot.advisor.trials.curves import trial_curves
from copilot.console.advice import print_trial_curves


def _arm(name: str, outcome: str, losses: list[float], *, accuracy: bool = True) -> ArmResult:
    points = [
        TrialPoint(trial_step=20 * (index + 1), val_loss=loss, val_accuracy=(1 - loss / 3) if accuracy else None)
        for index, loss in enumerate(losses)
    ]
    return ArmResult(arm=name, summary=name, status="measured", outcome=outcome, points=points, steps=20 * len(points))  # type: ignore[arg-type]


def _report(*arms: ArmResult, winner: str | None = "c2") -> TrialReport:
    return TrialReport(
        status="trialled", budget_steps=60, noise=0.0125, noise_method="trend residuals over 3 evaluations",
        arms=list(arms), winner=winner,
    )  # fmt: skip


UNCHANGED = _arm("incumbent", "incumbent", [2.4, 2.3, 2.25])
NO_GAIN = _arm("c1", "no gain", [2.4, 2.35, 2.3])
WINNER = _arm("c2", "winner", [2.1, 1.5, 0.9])


def test_the_chart_is_the_unchanged_run_beside_the_winner_in_accuracy_percent() -> None:
    curves = trial_curves(_report(UNCHANGED, NO_GAIN, WINNER))
    assert curves is not None and curves.metric == "val_accuracy"
    assert [curve.arm.arm for curve in curves.arms] == ["incumbent", "c2"]
    assert curves.change.steps == (20.0, 40.0, 60.0)
    assert [round(value, 1) for value in curves.change.values] == [30.0, 50.0, 70.0]


def test_without_a_winner_the_change_is_the_advisors_own_candidate_and_loss_stands_in_for_accuracy() -> None:
    no_accuracy = _arm("c1", "no gain", [2.4, 2.35, 2.3], accuracy=False)
    curves = trial_curves(_report(UNCHANGED, no_accuracy, winner=None))
    assert curves is not None and curves.metric == "val_loss" and curves.change.arm.arm == "c1"
    assert curves.change.values == (2.4, 2.35, 2.3)
    assert trial_curves(TrialReport(status="not_trialled", reason="trials are off")) is None


def test_the_plain_chart_names_both_arms_with_their_figures_and_noise_and_has_no_colour_codes() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, color_system="truecolor", force_terminal=True)
    assert print_trial_curves(console, _report(UNCHANGED, NO_GAIN, WINNER))
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == "trial curves: val accuracy % against trial steps"
    assert lines[1] == "unchanged    val loss 2.2500, val acc 25.0% at trial step 60"
    assert lines[2] == "this change  val loss 0.9000, val acc 70.0% at trial step 60"
    assert lines[3] == "noise ±0.0125 in val loss (trend residuals over 3 evaluations)"
    plot = "\n".join(lines[4:])
    assert "unchanged" in plot and "this change" in plot  # plotext's legend
    assert "┤" in plot and "trial step" in lines[-1] and "70.0" in plot  # the y axis reaches the winner's end
    assert "\x1b[" not in text
