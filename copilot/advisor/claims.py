"""An LLM's diagnosis checked against what copilot measured: its claims are not evidence.

A small model answers in schema-shaped JSON that can say nothing true ("healthy" at 10%
accuracy on 10 classes, "exploding gradients" with every norm small, a value no metric
ever took). `contradictions` lists, one line each, where the diagnosis disagrees with the
snapshot; `checked_diagnosis` marks it so, keeps it off the finish and continue routes,
and puts the offline rules' own findings beside it so the human sees what was measured.

It reads only the snapshot and the rules' thresholds; it calls no provider and changes
no finding the LLM gave (a contradicted claim is shown as such, not silently dropped).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from copilot.advisor.offline import rules
from copilot.advisor.schemas import Diagnosis, Evidence
from copilot.advisor.snapshot import TrainingSnapshot

# A cited number matches a measurement within this relative distance (LLMs round).
VALUE_TOLERANCE = 0.05
# Metric names an LLM may use for one measured quantity.
METRIC_ALIASES = {
    "val_acc": "val_accuracy",
    "validation_accuracy": "val_accuracy",
    "train_acc": "train_accuracy",
    "accuracy": "val_accuracy",
    "validation_loss": "val_loss",
    "loss": "train_loss",
    "gradient_norm": "grad_norm",
    "grad_norm_median": "grad_norm",
    "grad_norm_max": "grad_norm",
    "total_grad_norm": "grad_norm",
    "update_to_weight_ratio": "update_ratio",
    "update_weight_ratio": "update_ratio",
    "learning_rate": "lr",
}
ACCURACY_METRICS = {"val_accuracy", "train_accuracy"}


def checked_diagnosis(diagnosis: Diagnosis, snapshot: TrainingSnapshot) -> Diagnosis:
    """The LLM's diagnosis with its contradictions marked and the rules' findings beside it.

    A contradicted diagnosis never routes to finish, nor on unchanged: the rules' route stands instead.
    """
    measured = rules.assess(snapshot)
    problems = contradictions(diagnosis, snapshot, measured)
    update: dict[str, object] = {"measured_findings": list(measured.findings), "contradictions": problems}
    if problems and diagnosis.route in ("finish", "continue"):
        update["route"] = measured.route
    return diagnosis.model_copy(update=update)


def contradictions(diagnosis: Diagnosis, snapshot: TrainingSnapshot, measured: Diagnosis) -> list[str]:
    """Each way `diagnosis` disagrees with the snapshot, one line each; `measured` is the
    offline rules' diagnosis of the same snapshot, the arbiter for what a pattern is."""
    problems: list[str] = []
    chance = _chance_accuracy(snapshot)
    accuracy = _last(snapshot, "val_accuracy")
    if diagnosis.health == "healthy" and chance is not None and accuracy is not None and accuracy <= rules.CHANCE_FACTOR * chance:
        problems.append(f"says healthy at {accuracy:.1%} validation accuracy; chance is {chance:.1%}")
    said, seen = _words_of(diagnosis), _words_of(measured)
    gradients = snapshot.gradients
    if gradients is not None and "explod" in said and "explod" not in seen and snapshot.nonfinite_count == 0:
        problems.append(f"says gradients explode, but the largest total norm measured is {gradients.total_max:.3g}")
    if gradients is not None and "vanish" in said and "vanish" not in seen:
        smallest = min((module.grad_norm_median for module in gradients.modules), default=math.nan)
        problems.append(f"says gradients vanish, but the smallest module median norm measured is {smallest:.3g}")
    if diagnosis.route == "finish" and measured.route != "finish":
        problems.append(f"routes to finish, but the measurements call for {measured.route}")
    if diagnosis.route == "continue" and measured.route in ("hyperparameters", "architecture"):
        problems.append(f"routes to continue unchanged, but the measurements call for {measured.route}")
    values = measured_values(snapshot)
    for finding in diagnosis.findings:
        problems.extend(filter(None, (_evidence_problem(evidence, values) for evidence in finding.evidence)))
    return list(dict.fromkeys(problems))


def _words_of(diagnosis: Diagnosis) -> str:
    return " ".join([diagnosis.summary, *(f"{finding.what} {finding.why}" for finding in diagnosis.findings)]).lower()


def measured_values(snapshot: TrainingSnapshot) -> dict[str, list[float]]:
    """Every number the snapshot holds, by metric name: what an LLM may cite."""
    values: dict[str, list[float]] = {}

    def add(name: str, numbers: Iterable[float | int | None]) -> None:
        values.setdefault(name, []).extend(float(number) for number in numbers if number is not None)

    for trend in snapshot.history:
        add(trend.name, (trend.first, trend.best, trend.last, *trend.points))
    for row in snapshot.recent_epochs:
        for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
            add(name, (getattr(row, name),))
    if snapshot.gradients is not None:
        gradients = snapshot.gradients
        add("grad_norm", (gradients.total_median, gradients.total_max, gradients.total_last))
        add("grad_norm", (number for module in gradients.modules for number in (module.grad_norm_median, module.grad_norm_max)))
        add("update_ratio", (module.update_ratio_median for module in gradients.modules))
    if snapshot.activations is not None:
        add("dead_fraction", snapshot.activations.dead_fraction.values())
        add("saturated_fraction", snapshot.activations.saturated_fraction.values())
    add("initial_loss", (snapshot.initial_loss,))
    add("lr", (snapshot.hparams.lr,))
    add("momentum", (snapshot.hparams.momentum,))
    add("weight_decay", (snapshot.hparams.weight_decay,))
    add("batch_size", (snapshot.hparams.batch_size,))
    add("nonfinite_count", (snapshot.nonfinite_count,))
    add("epoch", (snapshot.epoch,))
    return values


def _evidence_problem(evidence: Evidence, values: dict[str, list[float]]) -> str | None:
    name = METRIC_ALIASES.get(evidence.metric.strip().lower(), evidence.metric.strip().lower())
    known = values.get(name)
    if known is None:
        return f"cites {evidence.metric}, which was not measured in this run"
    if not isinstance(evidence.value, (int, float)) or not known:
        return None
    cited = float(evidence.value)
    candidates = [cited, cited / 100] if name in ACCURACY_METRICS else [cited]  # "10" for 10%
    if any(_close(candidate, number) for candidate in candidates for number in known):
        return None
    return f"cites {evidence.metric} = {evidence.value:g}, but the measured values run {min(known):.4g} to {max(known):.4g}"


def _close(cited: float, measured: float) -> bool:
    if not (math.isfinite(cited) and math.isfinite(measured)):
        return cited == measured or (math.isnan(cited) and math.isnan(measured))
    return math.isclose(cited, measured, rel_tol=VALUE_TOLERANCE, abs_tol=1e-12)


def _chance_accuracy(snapshot: TrainingSnapshot) -> float | None:
    classes = snapshot.data.num_classes
    return 1.0 / classes if snapshot.data.task == "classification" and classes else None


def _last(snapshot: TrainingSnapshot, name: str) -> float | None:
    trend = snapshot.trend(name)
    return trend.last if trend is not None else None
