"""Rank measured arms against the unchanged run: noise, a paired comparison, the winner.

Every arm was scored on the same validation samples after the same steps from the same
checkpoint, so arms are compared point by point (a paired comparison). The noise is
the spread of the unchanged run's own validation loss over its evaluations in the
trial, once the trend is taken out (the residuals about a least-squares line: the loss
falls while it trains, and that fall is not noise); when the unchanged run has fewer
than three evaluations it is the difference between two copies of it with different
seeds, divided by sqrt(2) (the spread of one run). A candidate wins when, at the last
evaluation, its loss is lower than the unchanged run's by more than `NOISE_FACTOR`
times the noise AND by at least `min_gain` of the unchanged run's loss.

Short trials favour aggressive settings (a high rate or Adam leads early, then
overshoots) and penalise freshly initialised layers (they start behind). Two guards:
a winner must also lead at the evaluation before the last (a lead that holds, not one
point of luck), and a candidate whose gap is inside the noise, or who leads only at the
last evaluation (a new layer catching up, or luck), is "undecided": the runner trains
it and the unchanged run once more for the same budget from where they stopped and
ranks them again, so a new layer gets its warm-up and an overshoot shows.

A run whose validation swings (a batch-normalised network under plain SGD at a high
rate: 99% at one evaluation, 88% at the next) ends wherever the last swing leaves it, so
its last point says little and its noise hides any gain in loss. There a candidate also
wins by being steadier: the unchanged run's spread is at least `SWING_FRACTION` of its
mean loss, the candidate's spread is at most 1/`STEADIER_RATIO` of it, and the
candidate's mean loss over the same evaluations is no higher. The mean, not the last
point, qualifies it: the swing is the thing measured. Among the candidates so qualified the
lowest last loss wins: they do not swing, so their last point says where each one stands,
while their mean would favour the mildest change (a change of optimizer starts with a jolt
while its buffers fill, then leads: measured in the demo, a lower plain-SGD rate won on the
mean at 99.0% and swung to 38% two epochs later, where momentum 0.9 at 0.01 ended lower).

Pure functions of the measurements; no torch, no I/O.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from copilot.advisor.schemas import ArmResult, TrialPoint, WonBy

NOISE_FACTOR = 2.0  # pinned: a win is a gap beyond twice the noise
MIN_NOISE_POINTS = 3  # evaluations of the unchanged run needed to estimate its noise alone
SWING_FRACTION = 0.2  # an unchanged run whose spread is this share of its mean loss is swinging
STEADIER_RATIO = 2.0  # a steadier candidate swings at most half as much


@dataclass(frozen=True)
class Noise:
    value: float
    method: str


@dataclass(frozen=True)
class Ranking:
    winner: str | None  # the best candidate that beat the unchanged run
    undecided: tuple[str, ...]  # candidates whose gap is inside the noise: worth an extension
    reason: str  # one line: what decided
    won_by: WonBy = "lower loss"


def trend_residual_spread(losses: Sequence[float]) -> float:
    """Standard deviation of `losses` about their least-squares line (n - 2 degrees of freedom)."""
    n = len(losses)
    xs = range(n)
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(losses)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, losses)) / sxx
    residuals = [y - (mean_y + slope * (x - mean_x)) for x, y in zip(xs, losses)]
    return math.sqrt(sum(r * r for r in residuals) / (n - 2))


def noise_of(incumbent: ArmResult, second_seed: ArmResult | None = None) -> Noise | None:
    """The unchanged run's noise: from its own evaluations, else from two seeds; None when neither exists."""
    losses = [point.val_loss for point in incumbent.points]
    if len(losses) >= MIN_NOISE_POINTS:
        return Noise(trend_residual_spread(losses), f"trend residuals over {len(losses)} evaluations")
    if second_seed is not None and incumbent.final is not None and second_seed.final is not None:
        return Noise(abs(incumbent.final.val_loss - second_seed.final.val_loss) / math.sqrt(2), "two seeds")
    return None


def needs_second_seed(incumbent: ArmResult) -> bool:
    return incumbent.status == "measured" and 0 < len(incumbent.points) < MIN_NOISE_POINTS


def _gap(incumbent: TrialPoint, candidate: TrialPoint) -> float:
    """How much lower the candidate's loss is (positive: better)."""
    return incumbent.val_loss - candidate.val_loss


def rank(incumbent: ArmResult, candidates: Sequence[ArmResult], noise: Noise | None, min_gain: float) -> Ranking:
    measured = [c for c in candidates if c.status == "measured" and c.final is not None]
    if not measured:
        return Ranking(None, (), "no candidate finished its trial")
    if incumbent.status != "measured" or incumbent.final is None:
        best = min(measured, key=lambda c: c.final.val_loss)  # type: ignore[union-attr]
        return Ranking(best.arm, (), f"the unchanged run failed its trial ({incumbent.message}); {best.arm} trained")
    if noise is None:
        return Ranking(None, (), "the unchanged run's noise could not be measured")
    base = incumbent.final
    needed = max(NOISE_FACTOR * noise.value, min_gain * abs(base.val_loss))
    winners: list[tuple[float, ArmResult]] = []
    undecided: list[str] = []
    for candidate in measured:
        gap = _gap(base, candidate.final)  # type: ignore[arg-type]
        if gap > needed and _lead_holds(incumbent, candidate):
            winners.append((gap, candidate))
        elif gap > -needed:  # inside the noise, or ahead only at the last evaluation: train on
            undecided.append(candidate.arm)
    if winners:
        gap, best = max(winners, key=lambda pair: pair[0])
        return Ranking(best.arm, (), f"{best.arm} lowers validation loss by {gap:.4g} (needed > {needed:.4g})")
    steadier = _steadier(incumbent, measured)
    if steadier is not None:
        return steadier
    return Ranking(None, tuple(undecided), f"no candidate lowered validation loss by more than {needed:.4g}")


def _steadier(incumbent: ArmResult, candidates: Sequence[ArmResult]) -> Ranking | None:
    """Of the candidates steadier than a swinging unchanged run, the one that ends lowest; else None."""
    if len(incumbent.points) < MIN_NOISE_POINTS:
        return None
    base = {point.trial_step: point.val_loss for point in incumbent.points}
    base_mean = statistics.fmean(base.values())
    base_spread = trend_residual_spread(list(base.values()))
    if base_spread < SWING_FRACTION * base_mean:
        return None
    steady: list[tuple[float, float, ArmResult]] = []
    for candidate in candidates:
        paired = [point.val_loss for point in candidate.points if point.trial_step in base]
        if len(paired) < MIN_NOISE_POINTS or len(paired) != len(base):
            continue
        mean, spread = statistics.fmean(paired), trend_residual_spread(paired)
        if spread * STEADIER_RATIO <= base_spread and mean <= base_mean:
            steady.append((mean, spread, candidate))
    if not steady:
        return None
    mean, spread, best = min(steady, key=lambda entry: entry[2].points[-1].val_loss)
    reason = (
        f"{best.arm} steadies validation: loss {base_mean:.4g} ±{base_spread:.4g} -> {mean:.4g} ±{spread:.4g} "
        f"(mean and spread over {len(base)} evaluations)"
    )
    return Ranking(best.arm, (), reason, won_by="steadier")


def _lead_holds(incumbent: ArmResult, candidate: ArmResult) -> bool:
    """The candidate also led at the evaluation before the last (the same trial step in both arms)."""
    if len(incumbent.points) < 2 or len(candidate.points) < 2:
        return True
    before_last = {point.trial_step: point for point in incumbent.points[:-1]}
    previous = candidate.points[-2]
    matching = before_last.get(previous.trial_step)
    return matching is None or _gap(matching, previous) > 0
