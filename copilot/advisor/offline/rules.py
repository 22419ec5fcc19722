"""The offline rule engine: thresholds on a snapshot -> a Diagnosis, and concrete hyperparameter changes.

Deterministic and local (no network, no randomness): the same snapshot always gives
the same diagnosis and proposal. Each threshold is a named constant with the source it
comes from; each finding carries the measured value and the threshold it crossed.
Which route follows (architecture, hyperparameters, continue, finish) is decided in
`route`, from what the findings say can fix them: with nothing to fix, a run whose
validation metric still improves by more than its own noise continues (no round), and
only a converged run, a met target or a spent budget finishes (which stops training). Architecture code is written elsewhere
(`copilot.advisor.offline.codegen`); this module never writes code or touches files.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from copilot.advisor.ledger import same_hparams, tried_before
from copilot.advisor.offline.codegen.edits import SMALL_INIT_SCALE, remove_softmax_before_loss, smallest_init_scale
from copilot.advisor.schemas import Diagnosis, Evidence, Finding, HParamAnswer, HParamChange, Route, StartPoint
from copilot.advisor.snapshot import PreviousProposal, TrainingSnapshot
from copilot.advisor.thresholds import (
    DEAD_RELU_FRACTION,
    DIVERGENCE_FACTOR,
    EXPLODING_GRAD_NORM,
    SATURATED_FRACTION,
    SPIKE_FACTOR,
    UPDATE_RATIO_GUIDE,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    VANISHING_GRAD_NORM,
)
from copilot.events import LR_RANGE, NOT_MODEL_ERRORS, SATURATING_ACTIVATIONS, HParams

# --------------------------------------------------------------------------- thresholds
# The per-module thresholds the app shares (vanishing, exploding, spikes, update ratios, dead
# and saturated units) are in copilot/advisor/thresholds.py, with where each comes from.

# A gradient that shrinks by this many decades (log10) from the last module to the first,
# per parameter, is vanishing on its way back even when no module is below 1e-7.
# Glorot and Bengio 2010 (fig. 7) show sigmoid stacks losing about one decade per few layers.
VANISHING_DEPTH_DECADES = 3.0

# Accuracy no better than 1.5x chance after 2 epochs means the model is not learning (issue 3).
CHANCE_FACTOR = 1.5
CHANCE_AFTER_EPOCHS = 2
# Loss at initialisation should be about ln(classes) for a softmax classifier (Karpathy,
# "A Recipe for Training Neural Networks", 2019: "verify loss @ init"); more than 50% away
# means the initial logits are far too large (or something is wrong with the head).
INITIAL_LOSS_TOLERANCE = 0.5
# Loss not falling: less than 1% relative improvement over the plateau window (the
# advisor's default plateau_window in copilot.config is 3 epochs).
PLATEAU_EPOCHS = 3
PLATEAU_IMPROVEMENT = 0.01
# ...unless the training loss is already under 5% of ln(classes) (0.115 nats for 10 classes,
# about 97% confidence in the right class): the training set is fitted, and a flat loss
# there is convergence, not a stall an optimiser change could fix. Our own threshold.
FITTED_LOSS_FRACTION = 0.05
# Converged: over the last PLATEAU_EPOCHS epochs the validation loss has not beaten its
# earlier best by more than its noise, the standard deviation of its epoch-to-epoch changes
# since the last change (a steady fall has a small spread and large gains; a flat, noisy
# curve the reverse). A spread needs at least this many changes to mean anything.
NOISE_MIN_CHANGES = 3
# A spike pattern is at least 3 logged steps past SPIKE_FACTOR x the median in the window:
# gradient norms of small batches are heavy-tailed, so one or two outliers among 50 logged
# steps are its tail (the demo at 99.5% validation accuracy had one, 4.1 against 4.09), not
# the recurring explosions clipping exists for (Pascanu et al. 2013). Our own threshold.
SPIKE_PATTERN_STEPS = 3
# Over-fitting: validation accuracy 15 points under training accuracy, or validation loss
# 1.5x the training loss while rising (Goodfellow et al. 2016, ch. 7: the generalisation gap).
OVERFIT_ACCURACY_GAP = 0.15
OVERFIT_LOSS_RATIO = 1.5
# "Rising" is early stopping's patience (Prechelt 1998, "Early stopping, but when?"): the
# validation loss stayed above its best for OVERFIT_PATIENCE epochs in a row. One epoch's
# spike is churn: CI measured the demo at 99.8%, 95.4%, 99.1%, 99.9% by epoch, and calling
# the 95.4% epoch over-fitting cost it a third, useless round.
OVERFIT_PATIENCE = 2
# ...and only when the losses differ by at least 0.1 nats: the ratio of two near-zero losses
# (0.05 against 0.01 at 99% accuracy) is noise, not memorisation. Our own threshold.
OVERFIT_MIN_LOSS_GAP = 0.1
# Diverging: a loss above DIVERGENCE_FACTOR (1.5, in thresholds.py; the snapshot dates the first blow-up by it)
# times what guessing costs (ln(classes), or the first step's loss) means the updates are making
# the model worse than at initialisation.
# Unstable validation: validation accuracy 10 points under its best since the last change
# while training accuracy held (within 2 points): the weights churn too much between
# epochs for batch-norm statistics and the evaluation to keep up. Our own threshold.
UNSTABLE_DROP = 0.10
UNSTABLE_TRAIN_TOLERANCE = 0.02
# Plain SGD without momentum at lr >= 0.05 oscillates across steep directions and crawls
# along flat ones; momentum (Sutskever et al. 2013) or Adam (Kingma and Ba 2015) fix that.
# A warning even when nothing else is wrong: measured on the shapes set, a batch-norm
# residual CNN under plain SGD at lr 0.1 reaches 99% validation accuracy and then swings
# between 38% and 99% from epoch to epoch (its running statistics cannot follow the
# weights), while Adam at 1e-3 or momentum 0.9 at lr 0.01 holds above 99.7%.
PLAIN_SGD_HIGH_LR = 0.05
# Adam above 1e-2 is well past the 1e-3 default of Kingma and Ba 2015 (Karpathy's "3e-4 is
# the best learning rate for Adam" is the usual joke); transformers want 1e-3 or less.
ADAM_HIGH_LR = 1e-2

# An exploded rate: a training loss (an epoch's mean, or a logged step) above DIVERGENCE_FACTOR
# x ln(classes), worse than guessing, or a non-finite one, while gradients then vanish or
# units die: the steps were too large for the model, so the cure is a lower rate (Bengio 2012,
# "Practical recommendations", on the rate as the first thing to tune), not a new model.
# Measured: SGD at lr 3 on a sound CNN logged no step above 3.3 nats (the blow-up sat between
# logged steps), yet its first epoch averaged 3.47 > 1.5 x 2.30, and then every ReLU was dead.
# Probabilities fed to cross-entropy (which applies its own log-softmax): rows that sum to one
# differ by at most 1 between classes, so the loss cannot fall below ln(1 + (C-1)/e), 1.46
# nats for 10 classes. Found from the source (forward returns a softmax, the file has no
# loss_function of its own) and confirmed by a loss at or above that floor, within 5%.
PROBABILITY_FLOOR_MARGIN = 0.95

Remedy = Literal["architecture", "hyperparameters", "either", "none"]
# Trainer error kinds a new module fixes; those no change of model or hyperparameters can fix
# (copilot.events.NOT_MODEL_ERRORS), whose fix is the error's own hint; the rest a
# hyperparameter change fixes.
ARCHITECTURE_ERRORS = {"load", "forward", "shape", "runtime", "stuck"}  # "stuck": a forward that never returns is the code's
SPARSE_UPDATE_MODULES = {"Embedding", "EmbeddingBag"}  # only the rows in a batch move


@dataclass(frozen=True)
class Observation:
    """A finding plus what could fix it (for routing) and a stable tag (for the proposals)."""

    tag: str
    finding: Finding
    remedy: Remedy


def _finding(
    what: str,
    why: str,
    evidence: Iterable[Evidence],
    *,
    where: str | None = None,
    severity: Literal["info", "warning", "critical"] = "warning",
) -> Finding:
    return Finding(what=what, where=where, evidence=list(evidence), why=why, severity=severity)


def _sig(value: float) -> float:
    """Round to 3 significant figures so evidence reads cleanly and stays deterministic."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.3g}")


def _module_types(snapshot: TrainingSnapshot) -> dict[str, str]:
    return {info.name: info.type for info in snapshot.model.modules} if snapshot.model else {}


def _uses_saturating_activation(snapshot: TrainingSnapshot) -> bool:
    if snapshot.model is not None:
        return bool(SATURATING_ACTIVATIONS & set(snapshot.model.activations))
    return any(name in snapshot.source_code for name in ("Sigmoid()", "sigmoid(", "Tanh()", "tanh("))


def _accuracy(snapshot: TrainingSnapshot) -> tuple[str, float] | None:
    row = snapshot.recent_epochs[-1] if snapshot.recent_epochs else None
    if row is None:
        return None
    if row.val_accuracy is not None:
        return "val_accuracy", row.val_accuracy
    if row.train_accuracy is not None:
        return "train_accuracy", row.train_accuracy
    return None


# --------------------------------------------------------------------------- checks


def _crash(snapshot: TrainingSnapshot) -> list[Observation]:
    error = snapshot.error
    if error is None:
        return []
    remedy: Remedy = (
        "architecture" if error.kind in ARCHITECTURE_ERRORS else "none" if error.kind in NOT_MODEL_ERRORS else "hyperparameters"
    )
    why = {
        "shape": "the model's layers do not fit the data's shapes, so not one step can run",
        "forward": "the forward pass fails, so not one step can run",
        "load": "the model file cannot be loaded, so training cannot start",
        "config": "a setting is invalid, so training cannot start; no change to the model can fix that",
        "data": "the data set cannot be used, so training cannot start; no change to the model can fix that",
        "environment": "this machine's set-up cannot run training; no change to the model can fix that",
        "oom": "a batch does not fit in memory at this batch size",
        "nonfinite": "the loss became NaN or infinite and training stopped",
    }.get(error.kind, "training stopped before its epochs were done")
    evidence = [Evidence(metric="trainer_error", value=error.kind), Evidence(metric="error_message", value=error.message[:200])]
    return [Observation("crash", _finding(f"training crashed ({error.kind} error)", f"Training crashed: {why}.", evidence, severity="critical"), remedy)]


def _nonfinite(snapshot: TrainingSnapshot) -> list[Observation]:
    loss = snapshot.trend("step_loss")
    loss_broken = loss is not None and not math.isfinite(loss.last)
    if not snapshot.nonfinite_count and not loss_broken:
        return []
    first = snapshot.nonfinite[0] if snapshot.nonfinite else None
    evidence = [Evidence(metric="nonfinite_steps", value=snapshot.nonfinite_count, threshold=0)]
    if loss_broken:
        evidence.append(Evidence(metric="loss", value=str(loss.last), threshold="finite"))
    where = first.module if first else None
    what = f"non-finite {first.where}" if first else "non-finite loss"
    why = "NaN or infinite values mean the updates exploded; every step after them is wasted."
    return [Observation("nonfinite", _finding(what, why, evidence, where=where, severity="critical"), "hyperparameters")]


def _gradient_extremes(snapshot: TrainingSnapshot) -> list[Observation]:
    gradients = snapshot.gradients
    if gradients is None:
        return []
    found: list[Observation] = []
    medians = {module.name: module.grad_norm_median for module in gradients.modules}
    if gradients.exploding_modules:
        name = max(gradients.exploding_modules, key=lambda n: medians[n])
        found.append(
            Observation(
                "exploding",
                _finding(
                    "exploding gradients",
                    "Gradient norms this large make each step overshoot, and the loss diverges.",
                    [Evidence(metric="grad_norm", value=_sig(medians[name]), threshold=EXPLODING_GRAD_NORM)],
                    where=name,
                    severity="critical",
                ),
                "hyperparameters",
            )
        )
    elif gradients.spike_steps >= SPIKE_PATTERN_STEPS and math.isfinite(gradients.total_max):
        # Spikes that leave the validation loss at its best cost nothing measurable: shown, not acted on.
        losses = _validation_losses(snapshot)
        harmless = len(losses) >= 2 and losses[-1] <= min(losses)
        found.append(
            Observation(
                "spikes",
                _finding(
                    "gradient norm spikes",
                    "Repeated steps with a gradient many times the usual size throw the weights off; clipping caps them.",
                    [
                        Evidence(metric="total_grad_norm_max", value=_sig(gradients.total_max), threshold=_sig(SPIKE_FACTOR * gradients.total_median)),
                        Evidence(metric="spike_steps", value=gradients.spike_steps, threshold=SPIKE_PATTERN_STEPS),
                    ],
                    severity="info" if harmless else "warning",
                ),
                "hyperparameters",
            )
        )
    if gradients.vanishing_modules:
        name = min(gradients.vanishing_modules, key=lambda n: medians[n])
        found.append(
            Observation(
                "vanishing",
                _finding(
                    "vanishing gradients",
                    "Layers whose gradient is this small do not learn, whatever the learning rate.",
                    [
                        Evidence(metric="grad_norm", value=_sig(medians[name]), threshold=VANISHING_GRAD_NORM),
                        Evidence(metric="vanishing_modules", value=len(gradients.vanishing_modules), threshold=0),
                    ],
                    where=name,
                    severity="critical",
                ),
                "architecture",
            )
        )
    else:
        decay = _depth_decay(snapshot)
        if decay is not None and decay < -VANISHING_DEPTH_DECADES:
            first = gradients.modules[0].name
            found.append(
                Observation(
                    "vanishing",
                    _finding(
                        "vanishing gradients toward the input",
                        "The first layers get a gradient thousands of times smaller per weight than the last, so they barely learn.",
                        [Evidence(metric="log10_first_to_last_grad_per_weight", value=_sig(decay), threshold=-VANISHING_DEPTH_DECADES)],
                        where=first,
                        severity="warning",
                    ),
                    "architecture",
                )
            )
    return found


def _depth_decay(snapshot: TrainingSnapshot) -> float | None:
    """log10 of (first module's gradient per weight / last module's): per weight so wide layers compare fairly."""
    gradients = snapshot.gradients
    if gradients is None or snapshot.model is None or len(gradients.modules) < 2:
        return None
    params = {info.name: info.params for info in snapshot.model.modules}
    first, last = gradients.modules[0], gradients.modules[-1]
    if not params.get(first.name) or not params.get(last.name):
        return None
    first_rms = first.grad_norm_median / math.sqrt(params[first.name])
    last_rms = last.grad_norm_median / math.sqrt(params[last.name])
    if not (first_rms > 0 and last_rms > 0 and math.isfinite(first_rms) and math.isfinite(last_rms)):
        return None
    return math.log10(first_rms / last_rms)


def _update_ratios(snapshot: TrainingSnapshot, vanishing: bool) -> list[Observation]:
    gradients = snapshot.gradients
    if gradients is None:
        return []
    types = _module_types(snapshot)
    ratios = {m.name: m.update_ratio_median for m in gradients.modules if m.update_ratio_median is not None}
    high = {name: ratio for name, ratio in ratios.items() if ratio > UPDATE_RATIO_HIGH}
    low = {
        name: ratio
        for name, ratio in ratios.items()
        if ratio < UPDATE_RATIO_LOW and types.get(name) not in SPARSE_UPDATE_MODULES
    }
    found: list[Observation] = []
    if high:
        found.append(
            _ratio_observation(
                "update_ratio_high",
                "updates too large for the weights",
                f"Each step rewrites a large part of these weights (healthy is about {UPDATE_RATIO_GUIDE:g}), so training jumps around.",
                high,
                UPDATE_RATIO_HIGH,
            )
        )
    # Tiny updates in layers whose gradients vanish are the vanishing finding again, not a learning-rate problem.
    if low and not vanishing:
        found.append(
            _ratio_observation(
                "update_ratio_low",
                "updates too small for the weights",
                f"These weights move by far less than {UPDATE_RATIO_GUIDE:g} of their size per step, so they barely learn.",
                low,
                UPDATE_RATIO_LOW,
            )
        )
    return found


def _ratio_observation(tag: str, what: str, why: str, ratios: dict[str, float], threshold: float) -> Observation:
    """One finding for all modules past `threshold`, placed at the one farthest from the guide."""
    name = max(ratios, key=lambda module: abs(math.log10(max(ratios[module], 1e-30) / UPDATE_RATIO_GUIDE)))
    evidence = [
        Evidence(metric="update_ratio", value=_sig(ratios[name]), threshold=threshold),
        Evidence(metric="modules_past_threshold", value=len(ratios), threshold=0),
    ]
    return Observation(tag, _finding(what, why, evidence, where=name), "hyperparameters")


@dataclass(frozen=True)
class _UnitRule:
    """One sampled fraction of units past its threshold: which finding it makes and what could fix it."""

    key: str
    fraction: str  # the `ActivationStats` field and the evidence's metric name
    threshold: float
    title: str
    explanation: str
    remedy: Remedy


_UNIT_RULES = (
    _UnitRule(
        "dead_relu",
        "dead_fraction",
        DEAD_RELU_FRACTION,
        "dead ReLU units",
        "A ReLU that never fires passes no gradient and never recovers; a lower learning rate keeps more alive.",
        "hyperparameters",
    ),
    _UnitRule(
        "saturated",
        "saturated_fraction",
        SATURATED_FRACTION,
        "saturated activations",
        "Sigmoid or tanh outputs stuck near their limits have almost zero slope, so little gradient gets through.",
        "architecture",
    ),
)


def _activations(snapshot: TrainingSnapshot) -> list[Observation]:
    """One finding per kind of stuck unit, at the module where the most are stuck."""
    activations = snapshot.activations
    if activations is None:
        return []
    found: list[Observation] = []
    for rule in _UNIT_RULES:
        past = {name: value for name, value in getattr(activations, rule.fraction).items() if value > rule.threshold}
        if not past:
            continue
        name = max(past, key=past.__getitem__)
        evidence = [Evidence(metric=rule.fraction, value=_sig(past[name]), threshold=rule.threshold)]
        found.append(Observation(rule.key, _finding(rule.title, rule.explanation, evidence, where=name), rule.remedy))
    return found


def _progress(snapshot: TrainingSnapshot) -> list[Observation]:
    found: list[Observation] = []
    current = list(snapshot.recent_epochs[-snapshot.epochs_since_change :]) if snapshot.epochs_since_change else []
    accuracy = _accuracy(snapshot)
    chance = 1.0 / snapshot.data.num_classes
    if (
        snapshot.data.task == "classification"
        and accuracy is not None
        and snapshot.epochs_since_change >= CHANCE_AFTER_EPOCHS
        and accuracy[1] <= CHANCE_FACTOR * chance
    ):
        metric, value = accuracy
        found.append(
            Observation(
                "chance",
                _finding(
                    "accuracy at chance level",
                    f"After {snapshot.epochs_since_change} epochs the model does no better than guessing among {snapshot.data.num_classes} classes.",
                    [Evidence(metric=metric, value=_sig(value), threshold=_sig(CHANCE_FACTOR * chance))],
                    severity="critical",
                ),
                "either",
            )
        )
    if len(current) > PLATEAU_EPOCHS and not _fitted(snapshot, current[-1].train_loss):
        before = min(row.train_loss for row in current[: -PLATEAU_EPOCHS])
        latest = current[-1].train_loss
        if math.isfinite(before) and math.isfinite(latest) and before > 0:
            improvement = (before - latest) / before
            if improvement < PLATEAU_IMPROVEMENT:
                found.append(
                    Observation(
                        "plateau",
                        _finding(
                            "loss not falling",
                            f"The training loss has not improved by {PLATEAU_IMPROVEMENT:.0%} in {PLATEAU_EPOCHS} epochs.",
                            [Evidence(metric=f"train_loss_improvement_{PLATEAU_EPOCHS}_epochs", value=_sig(improvement), threshold=PLATEAU_IMPROVEMENT)],
                        ),
                        "either",
                    )
                )
    found += _divergence(snapshot, current)
    unstable = _unstable_validation(current)
    found += unstable
    # A sudden drop with training accuracy intact is churn, not memorisation: no over-fitting finding then.
    if current and not unstable:
        row = current[-1]
        gap = (row.train_accuracy - row.val_accuracy) if row.train_accuracy is not None and row.val_accuracy is not None else None
        val_losses = [epoch.val_loss for epoch in current if epoch.val_loss is not None]
        rising = len(val_losses) > OVERFIT_PATIENCE and min(val_losses[-OVERFIT_PATIENCE:]) > min(val_losses[:-OVERFIT_PATIENCE])
        ratio = row.val_loss / row.train_loss if row.val_loss is not None and row.train_loss > 0 else None
        evidence = []
        if gap is not None and gap > OVERFIT_ACCURACY_GAP:
            evidence.append(Evidence(metric="train_minus_val_accuracy", value=_sig(gap), threshold=OVERFIT_ACCURACY_GAP))
        if ratio is not None and ratio > OVERFIT_LOSS_RATIO and rising and row.val_loss - row.train_loss >= OVERFIT_MIN_LOSS_GAP:
            evidence.append(Evidence(metric="val_to_train_loss", value=_sig(ratio), threshold=OVERFIT_LOSS_RATIO))
        if evidence:
            found.append(
                Observation(
                    "overfitting",
                    _finding(
                        "over-fitting",
                        "The model does much better on the data it trains on than on new data: it memorises instead of generalising.",
                        evidence,
                    ),
                    "hyperparameters",
                )
            )
    return found


def _fitted(snapshot: TrainingSnapshot, train_loss: float) -> bool:
    """The training loss is under FITTED_LOSS_FRACTION of what guessing costs: nothing left to fit."""
    reference = snapshot.expected_initial_loss
    return reference is not None and math.isfinite(train_loss) and train_loss < FITTED_LOSS_FRACTION * reference


def _validation_losses(snapshot: TrainingSnapshot) -> list[float]:
    """The validation loss (the training loss where there is none) per epoch since the last change."""
    current = snapshot.recent_epochs[-snapshot.epochs_since_change :] if snapshot.epochs_since_change else ()
    losses = [row.val_loss if row.val_loss is not None else row.train_loss for row in current]
    return [loss for loss in losses if math.isfinite(loss)]


@dataclass(frozen=True)
class ValidationProgress:
    """How much the validation loss improved over the plateau window, against its own noise."""

    improvement: float  # earlier best minus the window's best: > 0 is progress
    noise: float  # standard deviation of the epoch-to-epoch changes since the last change

    @property
    def improving(self) -> bool:
        return self.improvement > self.noise


def validation_progress(snapshot: TrainingSnapshot) -> ValidationProgress | None:
    """None until there are enough epochs since the last change to tell progress from noise."""
    losses = _validation_losses(snapshot)
    if len(losses) <= max(PLATEAU_EPOCHS, NOISE_MIN_CHANGES):
        return None
    changes = [later - earlier for earlier, later in zip(losses, losses[1:])]
    improvement = min(losses[:-PLATEAU_EPOCHS]) - min(losses[-PLATEAU_EPOCHS:])
    return ValidationProgress(improvement=improvement, noise=statistics.pstdev(changes))


def _divergence(snapshot: TrainingSnapshot, current: list) -> list[Observation]:
    reference = snapshot.expected_initial_loss or snapshot.initial_loss
    if not current or reference is None or not math.isfinite(reference) or reference <= 0:
        return []
    row = current[-1]
    metric, value = ("val_loss", row.val_loss) if row.val_loss is not None else ("train_loss", row.train_loss)
    if math.isfinite(value) and value <= DIVERGENCE_FACTOR * reference:
        return []
    return [
        Observation(
            "diverging",
            _finding(
                "loss diverging",
                "The loss is worse than guessing would give: the updates are undoing what the model learned.",
                [Evidence(metric=metric, value=_sig(value) if math.isfinite(value) else str(value), threshold=_sig(DIVERGENCE_FACTOR * reference))],
                severity="critical",
            ),
            "either",
        )
    ]


def _unstable_validation(current: list) -> list[Observation]:
    rows = [row for row in current if row.val_accuracy is not None and row.train_accuracy is not None]
    if len(rows) < 2:
        return []
    best_val = max(rows[:-1], key=lambda row: row.val_accuracy)
    latest = rows[-1]
    drop = best_val.val_accuracy - latest.val_accuracy
    train_held = latest.train_accuracy >= best_val.train_accuracy - UNSTABLE_TRAIN_TOLERANCE
    if drop <= UNSTABLE_DROP or not train_held:
        return []
    return [
        Observation(
            "unstable_validation",
            _finding(
                "validation accuracy unstable",
                "Validation accuracy fell while training accuracy held: the weights move too much between evaluations.",
                [
                    Evidence(metric="val_accuracy_drop_from_best", value=_sig(drop), threshold=UNSTABLE_DROP),
                    Evidence(metric="train_accuracy", value=_sig(latest.train_accuracy), threshold=_sig(best_val.train_accuracy - UNSTABLE_TRAIN_TOLERANCE)),
                ],
            ),
            "hyperparameters",
        )
    ]


def _initial_loss(snapshot: TrainingSnapshot) -> list[Observation]:
    initial, expected = snapshot.initial_loss, snapshot.expected_initial_loss
    if initial is None or expected is None or expected <= 0 or not math.isfinite(initial):
        return []
    if abs(initial - expected) <= INITIAL_LOSS_TOLERANCE * expected:
        return []
    return [
        Observation(
            "initial_loss",
            _finding(
                "initial loss far from ln(classes)",
                "At initialisation a classifier should be unsure of every class; a very different loss means badly scaled outputs.",
                [Evidence(metric="initial_loss", value=_sig(initial), threshold=_sig(expected))],
            ),
            "none",
        )
    ]


def _optimizer(snapshot: TrainingSnapshot) -> list[Observation]:
    hparams = snapshot.hparams
    if hparams.optimizer in ("Adam", "AdamW") and hparams.lr > ADAM_HIGH_LR:
        return [
            Observation(
                "adam_high_lr",
                _finding(
                    "Adam at a high learning rate",
                    "Adam's steps are about lr in size whatever the gradient, so at this rate every step is large.",
                    [Evidence(metric="lr", value=hparams.lr, threshold=ADAM_HIGH_LR)],
                    severity="info",
                ),
                "hyperparameters",
            )
        ]
    if hparams.optimizer != "SGD" or hparams.momentum > 0 or hparams.lr < PLAIN_SGD_HIGH_LR:
        return []
    return [
        Observation(
            "plain_sgd",
            _finding(
                "plain SGD at a high learning rate",
                "Without momentum, SGD at this rate oscillates across steep directions while crawling along flat ones.",
                [
                    Evidence(metric="lr", value=hparams.lr, threshold=PLAIN_SGD_HIGH_LR),
                    Evidence(metric="momentum", value=hparams.momentum, threshold="> 0"),
                ],
            ),
            "hyperparameters",
        )
    ]


def _exploded_rate(snapshot: TrainingSnapshot, found: list[Observation]) -> list[Observation]:
    """The loss blew up and the gradients then vanished (or units died): the rate, not the model."""
    if not {o.tag for o in found} & {"vanishing", "dead_relu"} or snapshot.expected_initial_loss is None:
        return []
    current = snapshot.recent_epochs[-snapshot.epochs_since_change :] if snapshot.epochs_since_change else ()
    losses = [loss if math.isfinite(loss) else math.inf for loss in [row.train_loss for row in current]]
    if snapshot.worst_step_loss is not None:
        losses.append(snapshot.worst_step_loss)
    threshold = DIVERGENCE_FACTOR * snapshot.expected_initial_loss
    worst = max(losses, default=None)
    if not snapshot.nonfinite_count and (worst is None or worst <= threshold):
        return []
    evidence = [Evidence(metric="loss_max", value=_sig(worst) if worst is not None and math.isfinite(worst) else str(worst), threshold=_sig(threshold))]
    if snapshot.nonfinite_count:
        evidence.append(Evidence(metric="nonfinite_steps", value=snapshot.nonfinite_count, threshold=0))
    return [
        Observation(
            "exploding_lr",
            _finding(
                "learning rate too high: the loss exploded, then the gradients vanished",
                "Steps this large threw a sound model far off (the loss rose above what guessing costs) and killed its units; a lower rate fixes that, a new model would not.",
                evidence,
                severity="critical",
            ),
            "hyperparameters",
        )
    ]


def _tiny_initial_scale(snapshot: TrainingSnapshot, found: list[Observation]) -> list[Observation]:
    """Gradients vanish through unsaturated tanh/sigmoid layers drawn at a tiny constant scale: the init, not the activation."""
    tags = {o.tag for o in found}
    if "vanishing" not in tags or "saturated" in tags or not _uses_saturating_activation(snapshot):
        return []
    try:
        scale = smallest_init_scale(snapshot.source_code)
    except SyntaxError:
        return []
    if scale is None:
        return []
    return [
        Observation(
            "tiny_init",
            _finding(
                "initial weights far too small",
                "Each layer drawn at this scale shrinks the signal, so activations and gradients collapse through the "
                "stack (Glorot and Bengio 2010); Glorot's scale keeps them at the same size from layer to layer.",
                [Evidence(metric="init_scale", value=scale, threshold=SMALL_INIT_SCALE)],
                severity="critical",
            ),
            "architecture",
        )
    ]


# The trainer's refusal of an output of the wrong width (copilot.training.models.check_forward).
WRONG_OUTPUT = re.compile(r"model output has shape \[\d+, (\d+)\] but the .* data set needs \[\d+, (\d+)\]")


def _wrong_head(snapshot: TrainingSnapshot) -> list[Observation]:
    """The classifier's head has the wrong number of outputs for the data's classes."""
    error = snapshot.error
    matched = WRONG_OUTPUT.search(error.message) if error is not None and error.kind == "shape" else None
    if matched is None or snapshot.data.task != "classification":
        return []
    outputs, classes = int(matched.group(1)), int(matched.group(2))
    return [
        Observation(
            "head_size",
            _finding(
                "head output size does not match the classes",
                f"The last layer gives {outputs} outputs for {classes} classes, so not one step can run.",
                [Evidence(metric="output_size", value=outputs, threshold=classes)],
                where=snapshot.class_name,
                severity="critical",
            ),
            "architecture",
        )
    ]


def _probabilities_into_the_loss(snapshot: TrainingSnapshot) -> list[Observation]:
    """`forward` returns softmax probabilities to the trainer's cross-entropy, and the loss shows it."""
    if snapshot.data.task != "classification" or snapshot.data.num_classes < 2 or not snapshot.recent_epochs:
        return []
    try:
        edit = remove_softmax_before_loss(snapshot.source_code, {snapshot.class_name})
    except SyntaxError:
        return []
    floor = math.log(1 + (snapshot.data.num_classes - 1) / math.e)
    loss = snapshot.recent_epochs[-1].train_loss
    if edit is None or not math.isfinite(loss) or loss < PROBABILITY_FLOOR_MARGIN * floor:
        return []
    return [
        Observation(
            "softmax_before_loss",
            _finding(
                "outputs already sum to one before cross-entropy",
                "forward returns softmax probabilities and cross-entropy applies its own log-softmax, so the loss cannot "
                "fall below its floor and its gradients fade; return the logits instead.",
                [
                    Evidence(metric="train_loss", value=_sig(loss), threshold=_sig(floor)),
                    Evidence(metric="returned_softmax", value=edit.changes[0]),
                ],
                where=snapshot.class_name,
                severity="critical",
            ),
            "architecture",
        )
    ]


def observe(snapshot: TrainingSnapshot) -> list[Observation]:
    """Every finding the rules support, most severe first (stable order for equal severity)."""
    found = _crash(snapshot) + _wrong_head(snapshot) + _nonfinite(snapshot) + _probabilities_into_the_loss(snapshot)
    extremes = _gradient_extremes(snapshot)
    found += extremes
    found += _update_ratios(snapshot, vanishing=any(o.tag == "vanishing" for o in extremes))
    found += _activations(snapshot)
    found = _exploded_rate(snapshot, found) + _tiny_initial_scale(snapshot, found) + found  # causes before their symptoms
    found += _progress(snapshot) + _initial_loss(snapshot)
    optimizer = _optimizer(snapshot)
    # Plain SGD at a high rate is a problem on its own (a warning); a high Adam rate only explains others.
    if any(o.finding.severity != "info" for o in found + optimizer):
        found += optimizer
    order = {"critical": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda o: order[o.finding.severity])


# --------------------------------------------------------------------------- routing


def _rejected_since_last_change(snapshot: TrainingSnapshot) -> list[PreviousProposal]:
    rejected: list[PreviousProposal] = []
    for proposal in reversed(snapshot.previous):
        if proposal.decision in ("accept", "edit"):
            break
        if proposal.decision == "reject":
            rejected.append(proposal)
    return rejected


def _rejected_now(snapshot: TrainingSnapshot) -> set[str]:
    """Kinds of proposals the human rejected since the last accepted change."""
    return {proposal.kind for proposal in _rejected_since_last_change(snapshot)}


def human_feedback(snapshot: TrainingSnapshot, kind: str, feedback: str | None) -> str | None:
    """`feedback` plus the human's reasons for rejecting proposals of `kind` since the last accepted change.

    The graph hands a role only a validation message as `feedback`; the human's reasons come
    back through the ledger, so the rules read them from the snapshot.
    """
    reasons = [p.reason for p in _rejected_since_last_change(snapshot) if p.kind == kind and p.reason]
    joined = " ".join(part for part in (feedback, *reasons) if part)
    return joined or None


def _hparams_already_tamed(snapshot: TrainingSnapshot) -> bool:
    """Clipping is on and an accepted hyperparameter round came before: the next fix is structural."""
    accepted = any(p.kind == "hyperparameters" and p.decision in ("accept", "edit") for p in snapshot.previous)
    return accepted and snapshot.hparams.grad_clip is not None


def finish_reason(snapshot: TrainingSnapshot) -> str | None:
    """Why training is done whatever the findings say (the user's target is met), or None.

    A spent budget needs no finish: the trainer stops by itself and the triggers ask nothing
    more, while a look at a finished run (`copilot diagnose`) still wants its problems named.
    """
    accuracy = _accuracy(snapshot)
    target = snapshot.target_accuracy
    if target is not None and accuracy is not None and accuracy[0] == "val_accuracy" and accuracy[1] >= target:
        return f"the target is met: val_accuracy {accuracy[1]:.1%} against a target of {target:.1%}"
    return None


def converged(snapshot: TrainingSnapshot) -> bool:
    """The validation loss stopped improving by more than its noise over the plateau window."""
    progress = validation_progress(snapshot)
    return progress is not None and not progress.improving


def route(snapshot: TrainingSnapshot, observations: list[Observation]) -> tuple[Route, float]:
    """The route and the confidence in it."""
    if finish_reason(snapshot) is not None:
        return "finish", 0.9
    tags = {o.tag for o in observations if o.finding.severity != "info"}
    if not tags - {"initial_loss"}:
        # Nothing to fix: only a converged run stops; a healthy or improving one trains on.
        return ("finish", 0.8) if converged(snapshot) else ("continue", 0.8)
    remedies = {o.remedy for o in observations if o.finding.severity != "info"}
    crash = next((o for o in observations if o.tag == "crash"), None)
    if crash is not None and crash.remedy == "none":
        return "finish", 0.9
    exploded = bool(tags & {"nonfinite", "exploding", "exploding_lr"}) or (snapshot.error is not None and snapshot.error.kind == "nonfinite")
    if crash is not None and crash.remedy == "architecture":
        chosen: Route = "architecture"
        confidence = 0.9
    elif exploded:
        # Lower the rate and clip first (cheap, reversible); if that was done and it still
        # explodes, a model without normalisation needs it (e.g. pre-LN for a transformer).
        structural = snapshot.model is not None and not snapshot.model.has_normalization
        chosen = "architecture" if structural and _hparams_already_tamed(snapshot) else "hyperparameters"
        confidence = 0.8
    elif crash is not None:
        chosen, confidence = "hyperparameters", 0.9
    elif tags & {"vanishing", "saturated", "softmax_before_loss"}:
        chosen, confidence = "architecture", 0.8
    elif tags & {"chance", "plateau", "diverging"}:
        # A model with saturating units and no normalisation cannot be rescued by the optimiser alone.
        cannot_learn = _uses_saturating_activation(snapshot) and not (snapshot.model and snapshot.model.has_normalization)
        chosen = "architecture" if cannot_learn else "hyperparameters"
        confidence = 0.7 if cannot_learn else 0.6
    else:
        chosen, confidence = "hyperparameters", 0.7

    rejected = _rejected_now(snapshot)
    if chosen in rejected:
        alternative: Route = "hyperparameters" if chosen == "architecture" else "architecture"
        supported = alternative in remedies or "either" in remedies
        if supported and alternative not in rejected and crash is None:
            return alternative, 0.5
    return chosen, confidence


def assess(snapshot: TrainingSnapshot) -> Diagnosis:
    observations = observe(snapshot)
    chosen, confidence = route(snapshot, observations)
    severities = {o.finding.severity for o in observations}
    health = "critical" if "critical" in severities else "warning" if "warning" in severities else "healthy"
    findings = [o.finding for o in observations]
    if chosen == "finish":
        summary = _finish_summary(snapshot)
    elif chosen == "continue":
        summary = _continue_summary(snapshot)
    else:
        lead = findings[0]
        where = f" in {lead.where}" if lead.where else ""
        summary = f"{lead.what}{where}; proposing a {'new architecture' if chosen == 'architecture' else 'hyperparameter change'}."
    return Diagnosis(health=health, findings=findings, route=chosen, confidence=confidence, summary=summary[:300])


def _finish_summary(snapshot: TrainingSnapshot) -> str:
    error = snapshot.error
    if error is not None and error.kind in NOT_MODEL_ERRORS:
        fix = error.hint or "fix the setting"
        return f"Training cannot run: {error.message}. No change to the model fixes this; {fix}, then start again."
    progress = validation_progress(snapshot)
    reason = finish_reason(snapshot) or (
        f"converged: the validation loss improved by {_sig(progress.improvement):g} over the last "
        f"{PLATEAU_EPOCHS} epochs, within its noise of {_sig(progress.noise):g}"
        if progress is not None
        else "nothing left to fix"
    )
    return f"Training is done at {_standing(snapshot)}: {reason}."


def _continue_summary(snapshot: TrainingSnapshot) -> str:
    progress = validation_progress(snapshot)
    if progress is None:
        why = f"too few epochs since the last change ({snapshot.epochs_since_change}) to call it converged"
    else:
        why = (
            f"the validation loss improved by {_sig(progress.improvement):g} over the last {PLATEAU_EPOCHS} "
            f"epochs, more than its noise of {_sig(progress.noise):g}"
        )
    return f"Training is healthy at {_standing(snapshot)}; {why}: no change, training goes on."


def _standing(snapshot: TrainingSnapshot) -> str:
    """`val_accuracy 99.4% after 5 epochs`: where the run stands, in a few words."""
    accuracy = _accuracy(snapshot)
    measured = f"{accuracy[0]} {accuracy[1]:.1%} " if accuracy else ""
    return f"{measured}after {snapshot.epoch} epochs"


# --------------------------------------------------------------------------- hyperparameter proposals

# Words in a human's rejection reason, lower case, and what they rule out.
REFUSES_ADAM = ("adam", "keep sgd", "stay with sgd", "sgd only", "same optimizer", "same optimiser", "optimizer", "optimiser")
WANTS_ADAM = ("use adam", "try adam", "prefer adam", "switch to adam")
REFUSES_CLIPPING = ("clip",)
WANTS_GENTLER = ("too aggressive", "too big", "too much", "too large", "too drastic", "smaller step", "gentler")
REFUSES_WEIGHT_DECAY = ("weight decay", "weight_decay", "regulari")

# Learning rates the proposals move to: Adam's default (Kingma and Ba 2015), and SGD with
# momentum 0.9 at a tenth of a plain-SGD rate, which keeps the effective step lr/(1-0.9) the same.
ADAM_LR = 1e-3
MOMENTUM = 0.9
DEFAULT_CLIP = 1.0  # Pascanu et al. 2013 clip at a norm of the order of the usual gradient; 1.0 is the common default
SGD_WEIGHT_DECAY = 5e-4  # He et al. 2016 (ResNet on CIFAR)
ADAMW_WEIGHT_DECAY = 0.01  # Loshchilov and Hutter 2019, PyTorch's AdamW default


@dataclass(frozen=True)
class Candidate:
    summary: str
    rationale: str
    change: dict[str, float | int | str]


def _mentions(text: str | None, words: Iterable[str]) -> bool:
    return bool(text) and any(word in text.lower() for word in words)


def _lr(value: float) -> float:
    return max(LR_RANGE[0], min(float(LR_RANGE[1]), _sig(value)))


# Keywords that map an LLM assessor's free-text findings onto the rules' tags.
TAG_KEYWORDS: dict[str, tuple[str, ...]] = {
    "nonfinite": ("nan", "non-finite", "nonfinite", "infinite"),
    "exploding": ("explod",),
    "diverging": ("diverg",),
    "spikes": ("spike",),
    "overfitting": ("overfit", "over-fit", "generalis", "generaliz"),
    "dead_relu": ("dead relu", "dead unit"),
    "plateau": ("plateau", "not falling", "stall"),
    "update_ratio_high": ("updates too large", "learning rate too high", "lr too high"),
    "update_ratio_low": ("updates too small", "learning rate too low", "lr too low"),
}


def diagnosis_tags(snapshot: TrainingSnapshot, diagnosis: Diagnosis) -> set[str]:
    """The rules' own tags plus those an (LLM) diagnosis names in its findings."""
    tags = {o.tag for o in observe(snapshot)}
    for finding in diagnosis.findings:
        text = f"{finding.what} {finding.why}".lower()
        tags |= {tag for tag, words in TAG_KEYWORDS.items() if any(word in text for word in words)}
    return tags


def _candidates(snapshot: TrainingSnapshot, tags: set[str], feedback: str | None) -> list[Candidate]:
    """Changes in order of preference for what the findings say."""
    hparams = snapshot.hparams
    gentle = _mentions(feedback, WANTS_GENTLER)
    no_clip = _mentions(feedback, REFUSES_CLIPPING)
    no_adam = _mentions(feedback, REFUSES_ADAM) and not _mentions(feedback, WANTS_ADAM)
    plain_sgd = hparams.optimizer == "SGD" and hparams.momentum == 0
    found: list[Candidate] = []
    error = snapshot.error

    if error is not None and error.kind in ("oom", "killed") and hparams.batch_size > 1:
        smaller = max(1, hparams.batch_size // 2)
        found.append(Candidate(f"batch size {smaller} instead of {hparams.batch_size}", "The run ran out of memory; half the batch needs about half the activation memory.", {"batch_size": smaller}))

    if tags & {"nonfinite", "exploding", "exploding_lr", "diverging"}:
        lower = _lr(hparams.lr * (0.3 if gentle else 0.1))
        reason = "The updates exploded (non-finite values, huge gradient norms or a diverging loss)"
        if not no_clip:
            found.append(Candidate(f"lr {lower:g} and clip gradients at {DEFAULT_CLIP:g}", f"{reason}: a lower learning rate shrinks every step and clipping caps the rare huge ones.", {"lr": lower, "grad_clip": DEFAULT_CLIP}))
        found.append(Candidate(f"lr {lower:g} instead of {hparams.lr:g}", f"{reason}: a lower learning rate shrinks every step.", {"lr": lower}))

    struggling = tags & {"chance", "plateau", "update_ratio_high", "spikes", "plain_sgd", "dead_relu", "unstable_validation"}
    if plain_sgd and struggling:
        adam = Candidate(
            f"Adam at lr {ADAM_LR:g} instead of SGD at {hparams.lr:g}",
            "Plain SGD at this rate oscillates and stalls; Adam scales each parameter's step by its gradient history, "
            f"and {ADAM_LR:g} is its well-tested default.",
            {"optimizer": "Adam", "lr": ADAM_LR},
        )
        momentum_lr = _lr(hparams.lr * (1 - MOMENTUM))
        momentum = Candidate(
            f"SGD momentum {MOMENTUM:g} at lr {momentum_lr:g}",
            f"Momentum averages the noisy steps of plain SGD; at lr {momentum_lr:g} the effective step lr/(1-momentum) "
            "stays what it was, so the run keeps its pace without the oscillation.",
            {"momentum": MOMENTUM, "lr": momentum_lr},
        )
        found += [momentum, adam] if no_adam else [adam, momentum]

    gradients = snapshot.gradients
    if "spikes" in tags and not no_clip and gradients is not None and math.isfinite(gradients.total_median):
        clip = _sig(max(1e-3, 2 * gradients.total_median))
        found.append(Candidate(f"clip gradients at {clip:g}", f"The total gradient norm spiked past {SPIKE_FACTOR:g}x its median ({_sig(gradients.total_median):g}); clipping at twice the median leaves normal steps alone and caps the spikes.", {"grad_clip": clip}))

    if tags & {"update_ratio_high", "dead_relu", "spikes", "unstable_validation", "adam_high_lr"}:
        lower = _lr(hparams.lr * (0.5 if gentle else 0.3))
        found.append(Candidate(f"lr {lower:g} instead of {hparams.lr:g}", f"Updates are too large for the weights (or kill ReLU units); a lower rate brings the update-to-weight ratio toward {UPDATE_RATIO_GUIDE:g}.", {"lr": lower}))

    if "update_ratio_low" in tags:
        ceiling = 1.0 if hparams.optimizer == "SGD" else 1e-2
        higher = _lr(min(ceiling, hparams.lr * (3 if gentle else 10)))
        if higher > hparams.lr:
            found.append(Candidate(f"lr {higher:g} instead of {hparams.lr:g}", f"The weights move by much less than {UPDATE_RATIO_GUIDE:g} of their size per step; a higher rate lets them learn.", {"lr": higher}))

    if "overfitting" in tags:
        if not _mentions(feedback, REFUSES_WEIGHT_DECAY):
            if hparams.optimizer in ("Adam", "AdamW"):
                found.append(Candidate(f"AdamW with weight decay {ADAMW_WEIGHT_DECAY:g}", "The model over-fits; decoupled weight decay (AdamW) pulls the weights toward zero and narrows the gap.", {"optimizer": "AdamW", "weight_decay": ADAMW_WEIGHT_DECAY}))
            else:
                decay = max(SGD_WEIGHT_DECAY, _sig(hparams.weight_decay * 5)) if hparams.weight_decay else SGD_WEIGHT_DECAY
                found.append(Candidate(f"weight decay {decay:g}", "The model over-fits; weight decay penalises large weights and narrows the gap between training and validation.", {"weight_decay": decay}))
        found.append(Candidate("cosine learning-rate schedule", "The model over-fits; annealing the rate settles it in a flatter minimum before it memorises more.", {"schedule": "cosine"}))

    if tags & {"plateau", "chance"}:
        if hparams.schedule == "constant":
            found.append(Candidate("cosine learning-rate schedule", "The loss has stopped falling at a constant rate; annealing it lets the optimiser settle into the minimum it is circling.", {"schedule": "cosine"}))
        lower = _lr(hparams.lr * (0.5 if gentle else 0.3))
        found.append(Candidate(f"lr {lower:g} instead of {hparams.lr:g}", "Progress has stalled; a lower rate stops the optimiser from bouncing across the valley.", {"lr": lower}))

    fallback = _lr(hparams.lr * 0.5)
    found.append(Candidate(f"lr {fallback:g} instead of {hparams.lr:g}", "A smaller learning rate is the safest general change when nothing more specific applies.", {"lr": fallback}))
    return found


# A model whose loss since its blow-up never fell below this fraction of what guessing costs has
# not recovered: its weights are still ruined (huge, or its units dead). Our own threshold.
RECOVERED_FRACTION = 0.9


def start_point(snapshot: TrainingSnapshot) -> StartPoint | None:
    """Where a hyperparameter change should apply from: before the blow-up, when the weights have not recovered.

    Exploded weights (huge, non-finite, or with their units dead) do not recover at a lower
    rate; the same change from the last checkpoint before the blow-up does. That is the
    current model's last checkpoint from before it, or, with none and the model the run
    started with, the model file's fresh weights. None: apply it where the run stands.
    """
    explosion = snapshot.explosion
    reference = snapshot.expected_initial_loss or snapshot.initial_loss
    if explosion is None or reference is None or not math.isfinite(reference):
        return None
    current = snapshot.recent_epochs[-snapshot.epochs_since_change :] if snapshot.epochs_since_change else ()
    since = [row.val_loss if row.val_loss is not None else row.train_loss for row in current if row.epoch >= explosion.epoch]
    if any(math.isfinite(loss) and loss < RECOVERED_FRACTION * reference for loss in since):
        return None
    point = explosion.checkpoint_before
    if point is not None:
        return StartPoint(checkpoint=point.path, step=point.step, epoch=point.epoch, exploded_at=explosion.step, evidence=explosion.evidence)
    if not snapshot.changed_since_start:
        return StartPoint(checkpoint=None, step=0, epoch=0, exploded_at=explosion.step, evidence=explosion.evidence)
    return None


def fresh_start(snapshot: TrainingSnapshot) -> StartPoint | None:
    """Where a model re-initialised from scratch starts: the run's start, when the run never changed before.

    Its fresh weights make what the run trained so far worthless to it; starting the run
    over gives it the whole epoch budget (and its trial a paired start: the unchanged model
    from its own fresh weights). After an earlier round the run's start is another model's:
    it starts where the run stands.
    """
    if snapshot.changed_since_start:
        return None
    return StartPoint(checkpoint=None, step=0, epoch=0, evidence="its weights are re-initialised, so the run starts over")


def _effective(change: dict[str, float | int | str], hparams: HParams) -> dict[str, float | int | str]:
    current = hparams.model_dump()
    return {key: value for key, value in change.items() if current.get(key) != value}


def candidate_changes(snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None) -> list[HParamAnswer]:
    """Every plausible hyperparameter change for the diagnosis, most preferred first.

    Each changes something the run does not already use and repeats nothing applied or
    rejected in this run (the ledger's memory, `snapshot.tried`); duplicates are dropped.
    Trials may rank them by measurement; `propose_hparams` takes the first.
    """
    tags = diagnosis_tags(snapshot, diagnosis)
    feedback = human_feedback(snapshot, "hyperparameters", feedback)
    answers: list[HParamAnswer] = []
    for candidate in _candidates(snapshot, tags, feedback):
        effective = _effective(candidate.change, snapshot.hparams)
        if not effective:
            continue
        change = HParamChange(**effective)
        repeats = tried_before(snapshot.tried, hparams=change) is not None
        if repeats or any(same_hparams(answer.change.changes(), change.changes()) for answer in answers):
            continue
        rationale = candidate.rationale
        if feedback:
            rationale += f' (Instead of what was rejected: "{feedback[:120]}".)'
        answers.append(HParamAnswer(summary=candidate.summary[:60], rationale=rationale, change=change))
    return answers


def propose_hparams(snapshot: TrainingSnapshot, diagnosis: Diagnosis, feedback: str | None) -> HParamAnswer:
    """The first candidate change; when every one was tried, half the rate again (always new)."""
    candidates = candidate_changes(snapshot, diagnosis, feedback)
    if candidates:
        return candidates[0]
    return HParamAnswer(
        summary=f"lr {_lr(snapshot.hparams.lr * 0.5):g}",
        rationale="Every specific change was tried or rejected; a smaller learning rate is the most conservative step left.",
        change=HParamChange(lr=_lr(snapshot.hparams.lr * 0.5)),
    )
