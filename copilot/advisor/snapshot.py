"""Run metrics -> a bounded `TrainingSnapshot`: everything an advisor role may look at.

The snapshot is read from the run folder's `metrics.jsonl` (the trainer's event
records, read with `copilot.metrics_file.read_metrics`) plus the model's source and the
ledger of earlier proposals. It is bounded whatever the run's length: histories are
summarised (first, best, last, recent slope) and downsampled to a few points,
per-module statistics come from a window of recent logged steps, and long texts
(tracebacks, source, module tables) are trimmed. `to_prompt()` renders it for an LLM
in under 8,000 tokens (characters / 4) for a 100-module model after 1,000 epochs.

Where the data set description comes from, in order: the `data` argument, the run's
`RunStarted` event, then the data settings in the run's `session.json` (the trainer's
`TrainerSpec`), resolved through the data registry: a run that crashed before
`RunStarted`, like the study's `broken_cnn.py`, has only that. Where the source comes
from: the `source_code` argument, the newest copy in the run's `models/` folder, then
the file named by the model summary or the session.

It reads files and writes none; torch is imported only for that last data fallback.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from copilot.advisor.ledger import TriedChange, tried_changes
from copilot.advisor.offline.codegen.source import declared_hparams, guess_model_class
from copilot.advisor.schemas import LedgerEntry
from copilot.advisor.thresholds import DIVERGENCE_FACTOR, EXPLODING_GRAD_NORM, SPIKE_FACTOR, VANISHING_GRAD_NORM
from copilot.errors import AdvisorError
from copilot.events import (
    ActivationStats,
    CheckpointWritten,
    DataSpec,
    EpochSummary,
    Evaluated,
    ForwardContract,
    HParams,
    HParamsApplied,
    ModelArg,
    ModelSummary,
    ModelSwapped,
    RunStarted,
    StepBatch,
    StepRecord,
    TrainerError,
)
from copilot.metrics_file import read_metrics
from copilot.numbers import percent, scaled
from copilot.run_folder import RunFolder
from copilot.training.launcher import saved_model


# Bounds that keep the snapshot (and its prompt) small whatever the run's length.
HISTORY_POINTS = 12  # downsampled points kept per metric
RECENT_EPOCHS = 8  # epochs listed one by one
SLOPE_WINDOW = 5  # epochs (or logged steps) the recent slope is fitted over
STEP_WINDOW = 50  # logged steps the per-module statistics are taken over
MAX_NONFINITE_EVENTS = 5
MAX_PREVIOUS_PROPOSALS = 6
MAX_TRACEBACK_CHARS = 1_500
MAX_SOURCE_CHARS = 12_000
MAX_PROMPT_MODULES = 110
MAX_REASON_CHARS = 300



class Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class MetricTrend(Part):
    """One metric over the run, summarised: never the whole series."""

    name: str
    count: int
    first: float
    best: float
    best_at: int  # epoch (or step for step metrics) where `best` was reached
    last: float
    recent_slope: float | None  # change per epoch (or per logged step) over the last few values
    points: tuple[float, ...]  # at most HISTORY_POINTS, evenly spaced, first and last included


class EpochRow(Part):
    epoch: int
    round: int
    train_loss: float
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    lr: float


class ModuleStats(Part):
    """One module over the recent window of logged steps."""

    name: str
    grad_norm_median: float
    grad_norm_max: float
    update_ratio_median: float | None


class GradientStats(Part):
    window_steps: int  # logged steps the statistics are taken over
    total_median: float
    total_max: float
    total_last: float
    spike_steps: int  # logged steps whose total norm exceeded SPIKE_FACTOR x the median
    modules: tuple[ModuleStats, ...]  # forward order
    first_to_last_log10_ratio: float | None  # log10(first module's median / last module's median)
    vanishing_modules: tuple[str, ...]  # median below VANISHING_GRAD_NORM
    exploding_modules: tuple[str, ...]  # median above EXPLODING_GRAD_NORM


class ActivationHealth(Part):
    epoch: int
    step: int
    dead_fraction: dict[str, float]
    saturated_fraction: dict[str, float]


class NonFiniteEvent(Part):
    epoch: int
    step: int
    where: Literal["loss", "gradient", "weight"]
    module: str | None


class CheckpointRef(Part):
    path: str
    epoch: int
    step: int


class Explosion(Part):
    """The current model's first blow-up: a non-finite value, or a training loss far above guessing."""

    step: int  # the first step whose update may have blown it up
    epoch: int
    evidence: str  # what was measured, in a few words
    checkpoint_before: CheckpointRef | None  # the current model's last checkpoint from before `step`, still on disk


class TrainerFailure(Part):
    kind: str
    message: str
    hint: str
    traceback: str  # trimmed to its last MAX_TRACEBACK_CHARS characters
    epoch: int | None
    step: int | None


class ProposalEffect(Part):
    metric: str
    before: float
    after: float
    epochs: int  # epochs trained between the two measurements


class PreviousProposal(Part):
    round: int
    epoch: int
    kind: str
    summary: str
    detail: str  # the hyperparameter change or the listed architecture changes, in one line
    decision: str  # "accept", "reject", "edit", "withdrawn" or "pending"
    reason: str | None
    effect: ProposalEffect | None


class TrainingSnapshot(Part):
    """What every advisor role sees. Frozen, bounded, and renderable with `to_prompt()`."""

    run_id: str
    epoch: int  # epochs finished
    step: int
    round: int  # accepted rounds so far
    trigger: str  # "schedule" | "error" | "nonfinite" | "plateau" | "demand"
    data: DataSpec
    model: ModelSummary | None  # None if the model never loaded
    class_name: str
    model_args: dict[str, ModelArg]
    model_file_name: str
    source_code: str
    hparams: HParams
    epochs_since_change: int  # epochs finished since the last model swap or hyperparameter change
    history: tuple[MetricTrend, ...]
    recent_epochs: tuple[EpochRow, ...]
    initial_loss: float | None
    expected_initial_loss: float | None
    gradients: GradientStats | None  # None before the first logged step of the current model
    activations: ActivationHealth | None
    nonfinite_count: int
    nonfinite: tuple[NonFiniteEvent, ...]  # the first MAX_NONFINITE_EVENTS since the last change
    error: TrainerFailure | None  # the last error of the current model: one from a replaced model is stale
    previous: tuple[PreviousProposal, ...]
    target_accuracy: float | None = None  # the user's `advisor.target_accuracy`: met, training is done
    tried: tuple[TriedChange, ...] = ()  # every change applied or rejected in this run: never proposed again
    worst_step_loss: float | None = None  # the highest logged step loss since the last change (an epoch's mean hides a blow-up)
    explosion: Explosion | None = None  # the current model's first blow-up, and the points from before it
    changed_since_start: bool = False  # a model swap or hyperparameter change happened: the run's start is another model's
    # The run's model reference (`file.py:Name`); None when the file's own rule picks the model
    # (its build_model(), else its one top-level class). The sandbox builds proposals through it.
    model_name: str | None = None
    # How the current model is called and read; proposals keep it. None: not recorded (an older run, or never loaded).
    forward_contract: ForwardContract | None = None

    def trend(self, name: str) -> MetricTrend | None:
        return next((trend for trend in self.history if trend.name == name), None)

    def to_prompt(self, *, include_source: bool = True) -> str:
        """The snapshot as compact text for an LLM (the coder wants the source; others may not)."""
        return "\n".join(_render(self, include_source))


# --------------------------------------------------------------------------- building


def _downsample(values: Sequence[float], points: int = HISTORY_POINTS) -> tuple[float, ...]:
    if len(values) <= points:
        return tuple(values)
    last = len(values) - 1
    return tuple(values[round(index * last / (points - 1))] for index in range(points))


def _slope(values: Sequence[float]) -> float | None:
    """Least-squares slope per position of the last SLOPE_WINDOW finite values."""
    recent = [value for value in values[-SLOPE_WINDOW:] if math.isfinite(value)]
    if len(recent) < 2:
        return None
    mean_x = (len(recent) - 1) / 2
    mean_y = sum(recent) / len(recent)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(recent))
    denominator = sum((x - mean_x) ** 2 for x in range(len(recent)))
    return numerator / denominator


def _trend(name: str, positions: Sequence[int], values: Sequence[float], higher_is_better: bool) -> MetricTrend | None:
    finite = [(position, value) for position, value in zip(positions, values) if math.isfinite(value)]
    if not values:
        return None
    pick = max if higher_is_better else min
    best_at, best = pick(finite, key=lambda pair: pair[1]) if finite else (positions[-1], values[-1])
    return MetricTrend(
        name=name,
        count=len(values),
        first=values[0],
        best=best,
        best_at=best_at,
        last=values[-1],
        recent_slope=_slope(values),
        points=_downsample(values),
    )


def _epoch_trends(epochs: Sequence[EpochSummary]) -> list[MetricTrend]:
    columns: list[tuple[str, bool]] = [
        ("train_loss", False),
        ("val_loss", False),
        ("train_accuracy", True),
        ("val_accuracy", True),
    ]
    trends = []
    for name, higher_is_better in columns:
        pairs = [(summary.epoch, getattr(summary, name)) for summary in epochs if getattr(summary, name) is not None]
        if pairs:
            trend = _trend(name, [p for p, _ in pairs], [v for _, v in pairs], higher_is_better)
            if trend:
                trends.append(trend)
    return trends


def _gradient_stats(records: Sequence[StepRecord], module_order: Sequence[str]) -> GradientStats | None:
    if not records:
        return None
    totals = [record.total_grad_norm for record in records if math.isfinite(record.total_grad_norm)]
    total_median = statistics.median(totals) if totals else math.nan
    names = list(module_order) or list(records[-1].per_module_grad_norm)
    seen = {name for record in records for name in record.per_module_grad_norm}
    names = [name for name in names if name in seen] + sorted(seen.difference(names))
    modules = []
    for name in names:
        norms = [record.per_module_grad_norm[name] for record in records if name in record.per_module_grad_norm]
        finite_norms = [norm for norm in norms if math.isfinite(norm)] or [math.inf]
        ratios = [
            record.per_module_update_ratio[name]
            for record in records
            if math.isfinite(record.per_module_update_ratio.get(name, math.nan))
        ]
        modules.append(
            ModuleStats(
                name=name,
                grad_norm_median=statistics.median(finite_norms),
                grad_norm_max=max(norms),
                update_ratio_median=statistics.median(ratios) if ratios else None,
            )
        )
    ratio = None
    if len(modules) >= 2 and modules[0].grad_norm_median > 0 and modules[-1].grad_norm_median > 0:
        if math.isfinite(modules[0].grad_norm_median) and math.isfinite(modules[-1].grad_norm_median):
            ratio = math.log10(modules[0].grad_norm_median / modules[-1].grad_norm_median)
    return GradientStats(
        window_steps=len(records),
        total_median=total_median,
        total_max=max(record.total_grad_norm for record in records),
        total_last=records[-1].total_grad_norm,
        spike_steps=sum(1 for value in totals if total_median > 0 and value > SPIKE_FACTOR * total_median),
        modules=tuple(modules),
        first_to_last_log10_ratio=ratio,
        vanishing_modules=tuple(m.name for m in modules if m.grad_norm_median < VANISHING_GRAD_NORM),
        exploding_modules=tuple(m.name for m in modules if m.grad_norm_median > EXPLODING_GRAD_NORM),
    )


def _trim_traceback(text: str) -> str:
    """The end of a traceback is where the error is; keep that and say what was cut."""
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    tail = text[-MAX_TRACEBACK_CHARS:]
    return "... (earlier frames cut)\n" + tail[tail.find("\n") + 1 :]


def _newest_model_copy(run: RunFolder) -> Path | None:
    """`models/r<round>_<file>.py` with the highest round (modification time breaks ties)."""
    if not run.models.is_dir():
        return None

    def order(path: Path) -> tuple[int, float]:
        match = re.match(r"r(\d+)_", path.name)
        return (int(match.group(1)) if match else -1, path.stat().st_mtime)

    copies = sorted(run.models.glob("*.py"), key=order)
    return copies[-1] if copies else None


def _read_session(run: RunFolder) -> Mapping[str, object]:
    try:
        loaded = json.loads(run.session.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _session_data(session: Mapping[str, object]) -> DataSpec | None:
    """The data description of a run that never reached `RunStarted`, from its session's data settings.

    session.json holds the trainer's `DataSettings`, not a `DataSpec`; only the data registry
    knows the shapes it implies, so this loads the set once (torch, a few seconds for the
    synthetic sets). It runs only for runs that crashed before training started.
    """
    settings = session.get("data")
    if not isinstance(settings, dict):
        return None
    from copilot.config import DataSettings

    try:
        data_settings = DataSettings.model_validate(settings)
    except ValidationError:
        return None
    import torch

    from copilot.errors import CopilotError
    from copilot.training.data import load_data

    try:
        return load_data(data_settings, torch.device("cpu")).spec
    except CopilotError:
        return None


def _declared_hparams(source_code: str, session: Mapping[str, object]) -> HParams:
    """What a run that never started would have used: the file's HPARAMS under the session's overrides."""
    train = session.get("train")
    overrides = train.get("hparams") if isinstance(train, dict) else None
    declared = {**declared_hparams(source_code), **(overrides if isinstance(overrides, dict) else {})}
    try:
        return HParams.model_validate(declared)
    except ValidationError:
        return HParams()


def _effect(entry: LedgerEntry, later_accept_epoch: int | None, epochs: Sequence[EpochSummary]) -> ProposalEffect | None:
    """Validation accuracy (or loss) at the proposal's epoch and at the last epoch before the next accepted change."""
    if entry.verdict is None or not entry.verdict.applied:
        return None
    before = [summary for summary in epochs if summary.epoch <= entry.epoch]
    after = [
        summary
        for summary in epochs
        if summary.epoch > entry.epoch and (later_accept_epoch is None or summary.epoch <= later_accept_epoch)
    ]
    if not before or not after:
        return None
    for metric in ("val_accuracy", "val_loss", "train_loss"):
        first, last = getattr(before[-1], metric), getattr(after[-1], metric)
        if first is not None and last is not None:
            return ProposalEffect(metric=metric, before=first, after=last, epochs=after[-1].epoch - before[-1].epoch)
    return None


def _proposal_detail(entry: LedgerEntry) -> str:
    proposal = entry.proposal
    if proposal.kind == "hyperparameters":
        return ", ".join(f"{key}={value}" for key, value in proposal.change.changes().items())
    if proposal.kind == "architecture":
        return "; ".join(proposal.changes)[:MAX_REASON_CHARS]
    return ""


def _previous(entries: Sequence[LedgerEntry], epochs: Sequence[EpochSummary]) -> tuple[PreviousProposal, ...]:
    accepted_epochs = [
        entry.epoch for entry in entries if entry.verdict is not None and entry.verdict.applied
    ]
    kept = []
    for entry in entries[-MAX_PREVIOUS_PROPOSALS:]:
        later = [epoch for epoch in accepted_epochs if epoch > entry.epoch]
        reason = entry.verdict.reason if entry.verdict else None
        kept.append(
            PreviousProposal(
                round=entry.round,
                epoch=entry.epoch,
                kind=entry.proposal.kind,
                summary=entry.proposal.summary,
                detail=_proposal_detail(entry),
                decision=entry.verdict.decision if entry.verdict else "pending",
                reason=reason[:MAX_REASON_CHARS] if reason else None,
                effect=_effect(entry, later[0] if later else None, epochs),
            )
        )
    return tuple(kept)


def build_snapshot(
    run: RunFolder,
    *,
    source_code: str | None = None,
    model_args: Mapping[str, float | int | str | bool | None] | None = None,
    previous: Sequence[LedgerEntry] = (),
    trigger: str = "demand",
    round: int = 0,
    data: DataSpec | None = None,
    target_accuracy: float | None = None,
) -> TrainingSnapshot:
    """Read the run folder into a snapshot. An `AdvisorError` when there is nothing to assess."""
    started: RunStarted | None = None
    model: ModelSummary | None = None
    hparams: HParams | None = None
    change_step = -1  # global step of the last swap or hyperparameter change
    epochs: list[EpochSummary] = []
    window: deque[StepRecord] = deque(maxlen=STEP_WINDOW)
    step_losses: list[float] = []
    step_numbers: list[int] = []
    first_step_loss: float | None = None
    activations: ActivationHealth | None = None
    nonfinite: list[NonFiniteEvent] = []
    nonfinite_count = 0
    error: TrainerError | None = None
    worst_step_loss: float | None = None
    last_step = 0
    changed = False  # a model swap or hyperparameter change happened: the run's fresh start is another model's
    current_records: list[StepRecord] = []  # the current model's logged steps
    current_checkpoints: list[CheckpointRef] = []  # and its checkpoints
    forward_contract: ForwardContract | None = None  # the current model's

    for event in read_metrics(run.metrics):
        if isinstance(event, RunStarted):
            # A trainer (re)started: an error of the one before is about a model it may no longer train.
            started, model, hparams, error = event, event.model, event.hparams, None
            forward_contract = event.forward_contract
        elif isinstance(event, ModelSwapped):
            model, change_step, changed = event.model, event.step, True
            forward_contract = event.forward_contract
            window.clear()
            nonfinite, nonfinite_count, error, worst_step_loss = [], 0, None, None
            current_records, current_checkpoints = [], []
        elif isinstance(event, HParamsApplied):
            hparams, change_step, changed = event.hparams, event.step, True
            window.clear()
            nonfinite, nonfinite_count, error, worst_step_loss = [], 0, None, None
            current_records, current_checkpoints = [], []
        elif isinstance(event, CheckpointWritten):
            current_checkpoints.append(CheckpointRef(path=event.path, epoch=event.epoch, step=event.step))
        elif isinstance(event, StepBatch):
            for record in event.records:
                if first_step_loss is None:
                    first_step_loss = record.loss
                window.append(record)
                current_records.append(record)
                logged = record.loss if math.isfinite(record.loss) else math.inf
                worst_step_loss = logged if worst_step_loss is None else max(worst_step_loss, logged)
                step_losses.append(record.loss)
                step_numbers.append(record.step)
                last_step = max(last_step, record.step)
                if record.nonfinite is not None:
                    nonfinite_count += 1
                    if len(nonfinite) < MAX_NONFINITE_EVENTS:
                        nonfinite.append(
                            NonFiniteEvent(
                                epoch=record.epoch,
                                step=record.step,
                                where=record.nonfinite.where,
                                module=record.nonfinite.module,
                            )
                        )
        elif isinstance(event, EpochSummary):
            epochs.append(event)
            last_step = max(last_step, event.step)
        elif isinstance(event, Evaluated):
            last_step = max(last_step, event.step)
        elif isinstance(event, ActivationStats):
            activations = ActivationHealth(
                epoch=event.epoch,
                step=event.step,
                dead_fraction=event.dead_fraction,
                saturated_fraction=event.saturated_fraction,
            )
        elif isinstance(event, TrainerError):
            error = event

    session = _read_session(run)
    saved = saved_model(session)
    data = data or (started.data if started else None) or _session_data(session)
    if data is None and error is not None:
        # The data set itself failed (e.g. an unknown name): there is nothing to diagnose but that.
        raise AdvisorError(f"run {run.run_id} stopped before training started: {error.message}", error.hint)
    if data is None:
        raise AdvisorError(
            f"run {run.run_id} has no data description (no RunStarted event in {run.metrics.name}, none in session.json)",
            "pass the data set description explicitly, or train the run again so the trainer records it",
        )

    source_path: Path | None = None
    if source_code is None:
        candidates = [_newest_model_copy(run)]
        for named in (model.source_path if model else None, saved.path if saved else None):
            if named:
                path = Path(named)
                candidates.append(path if path.is_absolute() else run.path / path)
                candidates.append(path)
        source_path = next((path for path in candidates if path is not None and path.is_file()), None)
        source_code = source_path.read_text(encoding="utf-8") if source_path else ""

    if model is not None:
        class_name = model.class_name
        file_name = Path(model.source_path).name
    else:
        class_name = guess_model_class(source_code) or ""
        file_name = re.sub(r"^r\d+_", "", source_path.name) if source_path else (saved.path.name if saved else "model.py")
    if not class_name:
        raise AdvisorError(
            f"run {run.run_id}: cannot tell which model class was trained",
            "make sure the run's model file defines an nn.Module subclass",
        )

    current_epochs = [summary for summary in epochs if summary.step > change_step]
    step_trends = [
        trend
        for trend in (
            _trend("step_loss", step_numbers, step_losses, higher_is_better=False),
            _trend(
                "total_grad_norm",
                [record.step for record in window],
                [record.total_grad_norm for record in window],
                higher_is_better=False,
            ),
        )
        if trend is not None
    ]
    first_epoch = epochs[0] if epochs else None
    initial_loss = first_epoch.initial_loss if first_epoch and first_epoch.initial_loss is not None else first_step_loss
    expected_initial_loss = first_epoch.expected_initial_loss if first_epoch else None
    reference = expected_initial_loss or initial_loss
    earlier = [summary for summary in epochs if summary.step <= change_step]
    explosion = _explosion(
        current_records, current_epochs, current_checkpoints, reference,
        first_step=(earlier[-1].step if earlier else max(0, change_step)) + 1,
    )  # fmt: skip
    module_order = [info.name for info in model.modules] if model else []
    return TrainingSnapshot(
        run_id=run.run_id,
        epoch=epochs[-1].epoch if epochs else 0,
        step=last_step,
        round=round,
        trigger=trigger,
        data=data,
        model=model,
        class_name=class_name,
        model_args=dict(model_args) if model_args is not None else dict(saved.args) if saved else {},
        model_name=saved.name if saved else None,
        forward_contract=forward_contract,
        model_file_name=file_name,
        source_code=source_code,
        hparams=hparams or _declared_hparams(source_code, session),
        epochs_since_change=len(current_epochs),
        history=tuple(_epoch_trends(epochs) + step_trends),
        recent_epochs=tuple(
            EpochRow(
                epoch=summary.epoch,
                round=summary.round,
                train_loss=summary.train_loss,
                train_accuracy=summary.train_accuracy,
                val_loss=summary.val_loss,
                val_accuracy=summary.val_accuracy,
                lr=summary.lr,
            )
            for summary in epochs[-RECENT_EPOCHS:]
        ),
        initial_loss=initial_loss,
        expected_initial_loss=expected_initial_loss,
        gradients=_gradient_stats(list(window), module_order),
        activations=activations,
        nonfinite_count=nonfinite_count,
        nonfinite=tuple(nonfinite),
        error=(
            TrainerFailure(
                kind=error.kind,
                message=error.message,
                hint=error.hint,
                traceback=_trim_traceback(error.traceback),
                epoch=error.epoch,
                step=error.step,
            )
            if error
            else None
        ),
        previous=_previous(previous, epochs),
        target_accuracy=target_accuracy,
        tried=tuple(tried_changes(previous)),
        worst_step_loss=worst_step_loss,
        explosion=explosion,
        changed_since_start=changed,
    )


def _explosion(
    records: Sequence[StepRecord],
    epochs: Sequence[EpochSummary],
    checkpoints: Sequence[CheckpointRef],
    reference: float | None,
    *,
    first_step: int,
) -> Explosion | None:
    """The current model's first blow-up, or None.

    A logged step's loss is computed with the weights of the update before it, so a
    non-finite value or a loss above DIVERGENCE_FACTOR x `reference` (what guessing costs)
    at step M puts the blow-up at step M - 1; an epoch whose mean training loss is that
    high (the blow-up sat between logged steps) puts it at the epoch's first step.
    """
    limit = DIVERGENCE_FACTOR * reference if reference is not None and math.isfinite(reference) and reference > 0 else None
    guessing = f"; guessing costs {reference:.3g}" if limit is not None else ""
    found: list[tuple[int, int, str]] = []  # (step, epoch, evidence)
    healthy_at: int | None = None  # the first logged step with a sound loss: a model that starts that high never blew up
    for record in records:
        bad = record.nonfinite is not None or not math.isfinite(record.loss) or (limit is not None and record.loss > limit)
        if not bad:
            healthy_at = record.step if healthy_at is None else healthy_at
        elif healthy_at is not None:
            what = f"a non-finite {record.nonfinite.where if record.nonfinite else 'loss'}" if record.nonfinite or not math.isfinite(record.loss) else f"a training loss of {record.loss:.3g}"
            found.append((record.step - 1, record.epoch, f"{what} at step {record.step}{guessing}"))
            break
    start = first_step
    for summary in epochs:
        if healthy_at is None or healthy_at > summary.step:
            break
        if not math.isfinite(summary.train_loss) or (limit is not None and summary.train_loss > limit):
            found.append((start, summary.epoch, f"a mean training loss of {summary.train_loss:.3g} in epoch {summary.epoch}{guessing}"))
            break
        start = summary.step + 1
    if not found:
        return None
    step, epoch, evidence = min(found)
    before = [point for point in checkpoints if point.step < step and Path(point.path).is_file()]
    return Explosion(
        step=max(0, step), epoch=epoch, evidence=evidence,
        checkpoint_before=max(before, key=lambda point: point.step) if before else None,
    )  # fmt: skip


# --------------------------------------------------------------------------- rendering


def _fractions(values: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {percent(fraction, digits=0)}" for name, fraction in values.items())


def _render_model(snapshot: TrainingSnapshot) -> Iterable[str]:
    model = snapshot.model
    if model is None:
        yield f"## Model\n{snapshot.class_name} (never loaded; see the error and the source)"
        return
    yield (
        f"## Model\n{model.class_name}: {model.total_params:,} parameters ({model.trainable_params:,} trainable); "
        f"activations: {', '.join(model.activations) or 'none'}; "
        f"normalisation: {'yes' if model.has_normalization else 'no'}; residual: {'yes' if model.has_residual else 'no'}"
    )
    yield "module | type | params | detail"
    for info in model.modules[:MAX_PROMPT_MODULES]:
        indent = "  " * info.name.count(".") if info.name else ""
        yield f"{indent}{info.name or '(root)'} | {info.type} | {info.params} | {info.detail}"
    if len(model.modules) > MAX_PROMPT_MODULES:
        yield f"... {len(model.modules) - MAX_PROMPT_MODULES} more modules"


def _render(snapshot: TrainingSnapshot, include_source: bool) -> Iterator[str]:
    data = snapshot.data
    yield (
        f"# Run {snapshot.run_id}: epoch {snapshot.epoch}, step {snapshot.step}, round {snapshot.round}, "
        f"trigger {snapshot.trigger}, {snapshot.epochs_since_change} epochs since the last change"
    )
    yield (
        f"## Data\n{data.name}: {data.task}, input {list(data.input_shape)} {data.input_dtype}, "
        f"{data.num_classes} classes, {data.train_size} train / {data.val_size} validation samples"
    )
    yield "## Hyperparameters\n" + ", ".join(f"{key}={value}" for key, value in snapshot.hparams.model_dump().items())
    if snapshot.model_args:
        yield "constructor arguments: " + ", ".join(f"{key}={value!r}" for key, value in snapshot.model_args.items())
    yield from _render_model(snapshot)
    if snapshot.history:
        yield "## History (first, best @ epoch or step, last, recent slope per epoch or logged step; downsampled)"
        for trend in snapshot.history:
            points = " ".join(scaled(point) for point in trend.points)
            yield (
                f"{trend.name} (n={trend.count}): first {scaled(trend.first)}, best {scaled(trend.best)} @ {trend.best_at}, "
                f"last {scaled(trend.last)}, slope {scaled(trend.recent_slope)}; [{points}]"
            )
    if snapshot.recent_epochs:
        yield "## Recent epochs\nepoch | round | train loss | train acc | val loss | val acc | lr"
        for row in snapshot.recent_epochs:
            yield (
                f"{row.epoch} | {row.round} | {scaled(row.train_loss)} | {scaled(row.train_accuracy)} | "
                f"{scaled(row.val_loss)} | {scaled(row.val_accuracy)} | {scaled(row.lr)}"
            )
    if snapshot.initial_loss is not None:
        yield f"initial loss {scaled(snapshot.initial_loss)}, expected ~{scaled(snapshot.expected_initial_loss)}"
    gradients = snapshot.gradients
    if gradients:
        yield (
            f"## Gradients (last {gradients.window_steps} logged steps, before clipping)\n"
            f"total norm: median {scaled(gradients.total_median)}, max {scaled(gradients.total_max)}, "
            f"last {scaled(gradients.total_last)}, spikes > {SPIKE_FACTOR:g}x median: {gradients.spike_steps}; "
            f"log10(first module / last module) = {scaled(gradients.first_to_last_log10_ratio)}; "
            f"below {VANISHING_GRAD_NORM:g}: {', '.join(gradients.vanishing_modules) or 'none'}; "
            f"above {EXPLODING_GRAD_NORM:g}: {', '.join(gradients.exploding_modules) or 'none'}"
        )
        yield "module | grad norm median | grad norm max | update/weight median"
        for module in gradients.modules[:MAX_PROMPT_MODULES]:
            yield (
                f"{module.name or '(root)'} | {scaled(module.grad_norm_median)} | {scaled(module.grad_norm_max)} | "
                f"{scaled(module.update_ratio_median)}"
            )
        if len(gradients.modules) > MAX_PROMPT_MODULES:
            yield f"... {len(gradients.modules) - MAX_PROMPT_MODULES} more modules"
    if snapshot.activations:
        activations = snapshot.activations
        yield (
            f"## Activations (step {activations.step})\ndead ReLU fraction: {_fractions(activations.dead_fraction) or 'n/a'}\n"
            f"saturated sigmoid/tanh fraction: {_fractions(activations.saturated_fraction) or 'n/a'}"
        )
    if snapshot.nonfinite_count:
        events = "; ".join(f"step {e.step}: {e.where} in {e.module or 'loss'}" for e in snapshot.nonfinite)
        yield f"## Non-finite values: {snapshot.nonfinite_count} logged steps; first: {events}"
    if snapshot.error:
        failure = snapshot.error
        yield f"## Training stopped: {failure.kind} error: {failure.message}"
        if failure.hint:
            yield f"hint: {failure.hint}"
        if failure.traceback:
            yield f"```\n{failure.traceback.rstrip()}\n```"
    if snapshot.previous:
        yield "## Previous proposals"
        for proposal in snapshot.previous:
            line = f"round {proposal.round}, epoch {proposal.epoch}, {proposal.kind}: {proposal.summary} ({proposal.detail}) -> {proposal.decision}"
            if proposal.reason:
                line += f"; reason: {proposal.reason}"
            if proposal.effect:
                effect = proposal.effect
                line += f"; {effect.metric} {scaled(effect.before)} -> {scaled(effect.after)} over {effect.epochs} epochs"
            yield line
    if include_source and snapshot.source_code:
        source = snapshot.source_code
        if len(source) > MAX_SOURCE_CHARS:
            source = source[:MAX_SOURCE_CHARS] + f"\n# ... {len(snapshot.source_code) - MAX_SOURCE_CHARS} more characters cut"
        yield f"## Source of {snapshot.model_file_name}\n```python\n{source.rstrip()}\n```"
