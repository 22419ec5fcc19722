"""The app's metrics store: trainer events in, bounded series and the latest state out.

The ingest thread calls `ingest()` for every event; the UI thread reads `view()` on
its chart timer. Both sides take one lock for a short time, nothing here blocks on
I/O, and memory stays bounded however long the run: step series are fixed-size ring
buffers, per-module histories keep the last few hundred points. `version` grows on
every change, so a chart can skip rebuilding when nothing moved.

It must not import Textual (the app imports it, not the other way round), so the
store can be tested and benchmarked without a screen.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from copilot.advisor.thresholds import (
    DEAD_RELU_FRACTION,
    EXPLODING_GRAD_NORM,
    SATURATED_FRACTION,
    UPDATE_RATIO_GUIDE,
    UPDATE_RATIO_HIGH,
    UPDATE_RATIO_LOW,
    VANISHING_GRAD_NORM,
)
from copilot.events import (
    ActivationStats,
    CheckpointWritten,
    EpochSummary,
    Evaluated,
    Event,
    Finished,
    HParams,
    HParamsApplied,
    LogLine,
    ModelSummary,
    ModelSwapped,
    RunStarted,
    StateChanged,
    StepBatch,
    TrainerError,
    TrainerState,
    trainer_state_after,
)

STEP_SERIES = ("loss", "accuracy", "total_grad_norm", "lr")
MAX_SERIES = 8  # a chart with more lines than this is unreadable, and each costs a raster pass
MODULE_HISTORY = 240  # points per module sparkline: wider than any terminal row needs
ARRIVALS_KEPT = 100  # ingest times a view carries: 5 s of trainer batches, more than any chart lags
MODULE_SERIES = 10_000  # logged steps kept per module for the charts (100k steps at log_every=10)
LogSource = Literal["trainer", "advisor", "git", "app"]
LogLevel = Literal["debug", "info", "warning", "error"]


class RingSeries:
    """A fixed-capacity (step, value) series in numpy arrays; old points fall off the front."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._steps = np.zeros(capacity, dtype=np.float64)
        self._values = np.zeros(capacity, dtype=np.float64)
        self._start = 0
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, step: float, value: float) -> None:
        index = (self._start + self._length) % self.capacity
        self._steps[index] = step
        self._values[index] = value
        if self._length < self.capacity:
            self._length += 1
        else:
            self._start = (self._start + 1) % self.capacity

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies in time order, safe to hand to another thread (two slices, no per-point work)."""
        return self._ordered(self._steps, self._length), self._ordered(self._values, self._length)

    def _ordered(self, buffer: np.ndarray, count: int) -> np.ndarray:
        """The newest `count` entries of `buffer`, oldest first, as a copy."""
        first = (self._start + self._length - count) % self.capacity
        end = first + count
        if end <= self.capacity:
            return buffer[first:end].copy()
        return np.concatenate((buffer[first:], buffer[: end - self.capacity]))

    def last(self) -> float | None:
        if not self._length:
            return None
        return float(self._values[(self._start + self._length - 1) % self.capacity])

    def last_step(self) -> float | None:
        if not self._length:
            return None
        return float(self._steps[(self._start + self._length - 1) % self.capacity])

    def tail(self, count: int) -> tuple[float, ...]:
        """The newest `count` values, oldest first."""
        return tuple(self._ordered(self._values, min(count, self._length)).tolist())

    def drop_from(self, step: float) -> None:
        """Forget every point at or after `step`: the trainer went back to an earlier checkpoint."""
        while self._length and self.last_step() >= step:
            self._length -= 1


def minmax_downsample(xs: np.ndarray, ys: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """At most 2×`buckets` points: each bucket keeps its min and max in time order, so spikes survive.

    Drawing cost then depends on the chart's width, not on the run's length.
    Non-finite values are dropped first: a NaN step is reported elsewhere (the
    chart's legend and the log), and it has no place on an axis.
    """
    finite = np.isfinite(ys)
    if not finite.all():
        xs, ys = xs[finite], ys[finite]
    count = len(xs)
    if buckets <= 0 or count <= 2 * buckets:
        return xs, ys
    per_bucket = count // buckets
    body = ys[: buckets * per_bucket].reshape(buckets, per_bucket)
    offsets = np.arange(buckets) * per_bucket
    picks = [offsets + body.argmin(axis=1), offsets + body.argmax(axis=1)]
    tail = ys[buckets * per_bucket :]
    if len(tail):  # the last few points that did not fill a bucket
        base = buckets * per_bucket
        picks.append(np.array([base + tail.argmin(), base + tail.argmax()]))
    order = np.unique(np.concatenate(picks))
    return xs[order], ys[order]


@dataclass(frozen=True)
class LogPaneEntry:
    """One line of the log pane; `detail` is the full text (a traceback) one keypress away."""

    time: float
    source: LogSource
    level: LogLevel
    message: str
    detail: str = ""


@dataclass(frozen=True)
class ModuleRow:
    """One row of the per-module table: latest values and a short history."""

    name: str
    grad_norm: float | None
    update_ratio: float | None
    dead_fraction: float | None
    saturated_fraction: float | None
    grad_history: tuple[float, ...]


@dataclass(frozen=True)
class EpochPoint:
    epoch: int
    step: int
    train_loss: float
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    round: int


@dataclass(frozen=True)
class StoreView:
    """A consistent copy of the store for one frame; the UI reads only this."""

    version: int
    arrivals: tuple[float, ...]  # time.monotonic() of the latest trainer batches' ingest, oldest first
    run_id: str
    model_name: str
    device: str
    state: str
    epoch: int
    step: int
    samples_per_sec: float | None
    hparams: HParams | None
    model: ModelSummary | None
    steps: dict[str, tuple[np.ndarray, np.ndarray]]
    epochs: tuple[EpochPoint, ...]
    round_steps: tuple[tuple[int, int], ...]  # (round, step at which it started)
    modules: tuple[ModuleRow, ...]
    update_ratio_steps: dict[str, tuple[np.ndarray, np.ndarray]]  # the modules furthest from the 1e-3 guide
    grad_norm_steps: dict[str, tuple[np.ndarray, np.ndarray]]  # the modules with the most unusual gradient norms
    last_error: TrainerError | None
    finished: Finished | None
    log_total: int  # log entries ever added: the log pane shows entries it has not seen yet
    log_tail: tuple[LogPaneEntry, ...]


@dataclass
class _ModuleHistory:
    grad: RingSeries = field(default_factory=lambda: RingSeries(MODULE_SERIES))
    update_ratio: RingSeries = field(default_factory=lambda: RingSeries(MODULE_SERIES))
    dead: float | None = None
    saturated: float | None = None

    def drop_from(self, step: float) -> None:
        self.grad.drop_from(step)
        self.update_ratio.drop_from(step)


class MetricsStore:
    """Everything the app draws, fed by trainer events; safe to use from two threads."""

    def __init__(self, capacity: int = 100_000, log_lines: int = 2_000, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock  # stamps log lines that carry no time of their own; tests freeze it
        self._capacity = capacity
        self.version = 0
        self._arrivals: deque[float] = deque(maxlen=ARRIVALS_KEPT)
        self._run_id = ""
        self._model_name = ""
        self._device = ""
        self._state: TrainerState = "starting"
        self._activity: str | None = None  # "evaluating" or "stopping": a passing moment within "running"
        self._epoch = 0
        self._step = 0
        self._samples_per_sec: float | None = None
        self._hparams: HParams | None = None
        self._model: ModelSummary | None = None
        self._steps = {name: RingSeries(capacity) for name in STEP_SERIES}
        self._epochs: list[EpochPoint] = []
        self._round_steps: list[tuple[int, int]] = [(0, 0)]
        self._modules: dict[str, _ModuleHistory] = {}
        self._last_error: TrainerError | None = None
        self._finished: Finished | None = None
        self._log: deque[LogPaneEntry] = deque(maxlen=log_lines)
        self._log_total = 0

    # ------------------------------------------------------------------ writing (ingest thread)

    def ingest(self, event: Event) -> None:
        self.ingest_many([event])

    def ingest_many(self, events: list[Event]) -> None:
        if not events:
            return
        with self._lock:
            for event in events:
                self._apply(event)
            self.version += 1
            self._arrivals.append(time.monotonic())

    def note(self, source: LogSource, level: LogLevel, message: str, detail: str = "") -> None:
        """A line for the log pane from the advisor, git or the app itself (the trainer's come as events)."""
        with self._lock:
            self._append_log(LogPaneEntry(self._clock(), source, level, message, detail))
            self.version += 1

    def _append_log(self, entry: LogPaneEntry) -> None:
        self._log.append(entry)
        self._log_total += 1

    def _apply(self, event: Event) -> None:
        self._state = trainer_state_after(self._state, event)
        if isinstance(event, (RunStarted, StateChanged, Finished)):
            self._activity = event.state if isinstance(event, StateChanged) and event.state in ("evaluating", "stopping") else None
        if isinstance(event, StepBatch):
            self._apply_steps(event)
        elif isinstance(event, EpochSummary):
            self._epoch = event.epoch
            self._epochs.append(
                EpochPoint(
                    event.epoch,
                    event.step,
                    event.train_loss,
                    event.train_accuracy,
                    event.val_loss,
                    event.val_accuracy,
                    event.round,
                )
            )
        elif isinstance(event, ActivationStats):
            for name, fraction in event.dead_fraction.items():
                self._module(name).dead = fraction
            for name, fraction in event.saturated_fraction.items():
                self._module(name).saturated = fraction
        elif isinstance(event, RunStarted):
            self._run_id = event.run_id
            self._device = event.device
            self._model = event.model
            self._model_name = event.model.class_name
            self._hparams = event.hparams
            self._finished = None
            if event.resumed_from_epoch is not None:
                self._rewind_to_epoch(event.resumed_from_epoch)
        elif isinstance(event, ModelSwapped):
            self._model = event.model
            self._model_name = event.model.class_name
            # Modules the new model still has keep their history, so a round's effect shows on one chart.
            kept = {module.name for module in event.model.modules}
            self._modules = {name: history for name, history in self._modules.items() if name in kept}
            self._mark_round(event.round, event.step)
        elif isinstance(event, HParamsApplied):
            self._hparams = event.hparams
            self._mark_round(event.round, event.step)
        elif isinstance(event, TrainerError):
            self._last_error = event
            where = f" (epoch {event.epoch}, step {event.step})" if event.step is not None else ""
            message = f"{event.kind} error{where}: {event.message}"
            detail = "\n\n".join(part for part in (event.message, event.hint and f"hint: {event.hint}", event.traceback) if part)
            self._append_log(LogPaneEntry(self._clock(), "trainer", "error", message, detail))
        elif isinstance(event, LogLine):
            first, _, rest = event.message.partition("\n")
            self._append_log(LogPaneEntry(event.time, "trainer", event.level, first, event.message if rest else ""))
        elif isinstance(event, Finished):
            self._finished = event
        elif isinstance(event, (CheckpointWritten, Evaluated)):
            pass  # shown through the log lines the trainer sends with them

    def _mark_round(self, round_number: int | None, step: int) -> None:
        """The trainer applied an accepted round: the charts mark the step where it starts."""
        if round_number is not None:
            self._round_steps.append((round_number, step))

    def _rewind_to_epoch(self, epoch: int) -> None:
        """The trainer restarted from a checkpoint (resume, rollback): forget what came after it."""
        self._epoch = epoch
        self._epochs = [point for point in self._epochs if point.epoch <= epoch]
        step = self._epochs[-1].step if self._epochs else 0
        self._step = step
        for series in self._steps.values():
            series.drop_from(step + 1)
        for history in self._modules.values():
            history.drop_from(step + 1)
        self._round_steps = [marker for marker in self._round_steps if marker[1] <= step] or [(0, 0)]

    def _apply_steps(self, batch: StepBatch) -> None:
        for record in batch.records:
            step = record.step
            self._step = step
            self._epoch = max(self._epoch, record.epoch - 1)
            self._samples_per_sec = record.samples_per_sec
            self._steps["loss"].append(step, record.loss)
            if record.accuracy is not None:
                self._steps["accuracy"].append(step, record.accuracy)
            self._steps["total_grad_norm"].append(step, record.total_grad_norm)
            self._steps["lr"].append(step, record.lr)
            for name, norm in record.per_module_grad_norm.items():
                self._module(name).grad.append(step, norm)
            for name, ratio in record.per_module_update_ratio.items():
                self._module(name).update_ratio.append(step, ratio)

    def _module(self, name: str) -> _ModuleHistory:
        found = self._modules.get(name)
        if found is None:
            found = self._modules[name] = _ModuleHistory()
        return found

    # ------------------------------------------------------------------ reading (UI thread)

    @property
    def state(self) -> str:
        """The trainer's state now, without copying a whole view (a key press needs only this)."""
        with self._lock:
            return self._shown_state()

    def _shown_state(self) -> str:
        return self._activity if self._activity is not None and self._state == "running" else self._state

    def _worst_modules(
        self, series_of: Callable[[_ModuleHistory], RingSeries], usual: Callable[[list[float]], float]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The `MAX_SERIES` modules whose latest value lies most decades from `usual`; only they are copied per frame."""
        latest = {name: series_of(history).last() for name, history in self._modules.items()}
        latest = {name: value for name, value in latest.items() if value is not None}
        reference = usual(list(latest.values()))
        chosen = sorted(latest, key=lambda name: _decades_from(latest[name], reference), reverse=True)[:MAX_SERIES]
        return {name: series_of(self._modules[name]).arrays() for name in chosen}

    def view(self) -> StoreView:
        with self._lock:
            return StoreView(
                version=self.version,
                arrivals=tuple(self._arrivals),
                run_id=self._run_id,
                model_name=self._model_name,
                device=self._device,
                state=self._shown_state(),
                epoch=self._epoch,
                step=self._step,
                samples_per_sec=self._samples_per_sec,
                hparams=self._hparams,
                model=self._model,
                steps={name: series.arrays() for name, series in self._steps.items()},
                epochs=tuple(self._epochs),
                round_steps=tuple(self._round_steps),
                modules=tuple(
                    ModuleRow(
                        name=name,
                        grad_norm=history.grad.last(),
                        update_ratio=history.update_ratio.last(),
                        dead_fraction=history.dead,
                        saturated_fraction=history.saturated,
                        grad_history=history.grad.tail(MODULE_HISTORY),
                    )
                    for name, history in self._modules.items()
                ),
                update_ratio_steps=self._worst_modules(lambda history: history.update_ratio, _update_ratio_guide),
                grad_norm_steps=self._worst_modules(lambda history: history.grad, _median_decade),
                last_error=self._last_error,
                finished=self._finished,
                log_total=self._log_total,
                log_tail=tuple(self._log),
            )


def _decades_from(value: float, reference: float) -> float:
    if not math.isfinite(value) or value <= 0:
        return math.inf
    return abs(math.log10(value) - reference)


def _update_ratio_guide(_values: list[float]) -> float:
    """Update ratios are judged against the advisor's guide (in decades)."""
    return math.log10(UPDATE_RATIO_GUIDE)


def _median_decade(values: list[float]) -> float:
    """Gradient norms are judged against the model's own median, so vanishing and exploding both stand out."""
    logs = [math.log10(value) for value in values if math.isfinite(value) and value > 0]
    return float(np.median(logs)) if logs else 0.0


def module_anomaly(row: ModuleRow) -> str | None:
    """A short label when a module's numbers cross the thresholds the advisor uses, else None.

    The advisor's own thresholds (`copilot.advisor.thresholds`): vanishing, exploding,
    non-finite, update ratio outside its bounds, dead units, saturated outputs.
    """
    norm = row.grad_norm
    if norm is not None and not math.isfinite(norm):
        return "non-finite"
    if norm is not None and norm < VANISHING_GRAD_NORM:
        return "vanishing"
    if norm is not None and norm > EXPLODING_GRAD_NORM:
        return "exploding"
    if row.dead_fraction is not None and row.dead_fraction > DEAD_RELU_FRACTION:
        return "dead"
    if row.saturated_fraction is not None and row.saturated_fraction > SATURATED_FRACTION:
        return "saturated"
    ratio = row.update_ratio
    if ratio is not None and ratio > 0 and (ratio < UPDATE_RATIO_LOW or ratio > UPDATE_RATIO_HIGH):
        return "update ratio"
    return None
