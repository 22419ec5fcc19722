"""The trainer's reporting: every event to the parent, to `metrics.jsonl` and, as one line, to `events.log`.

Logged steps are coalesced into `StepBatch`es so at most `train.max_messages_per_sec`
messages reach the parent; every event except log lines is appended to `metrics.jsonl`
(whole lines, marked with this start's attempt; see `copilot/metrics_file.py`) and
described in `events.log`, errors with their full tracebacks. Only rank 0 reports: the
other ranks' reporters are silent.

It must not decide what to report (the worker does) nor measure anything.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

from copilot.events import (
    ActivationStats,
    CheckpointWritten,
    EpochSummary,
    Evaluated,
    Finished,
    HParamsApplied,
    LogLine,
    Message,
    ModelSwapped,
    RunStarted,
    StateChanged,
    StepBatch,
    StepRecord,
    TrainerError,
    event_to_json,
)
from copilot.metrics_file import LineFile, open_for_append
from copilot.run_folder import RunFolder


class Reporter:
    """Sends events to the parent and writes them to the run folder; silent on ranks other than 0."""

    def __init__(self, events: Any, folder: RunFolder, max_messages_per_sec: float, enabled: bool) -> None:
        self._events = events
        self._enabled = enabled
        self._interval_s = 1.0 / max_messages_per_sec
        self._pending_steps: list[StepRecord] = []
        self._pending_activations: ActivationStats | None = None
        self._last_flush = -math.inf
        self._metrics: LineFile | None = None
        self._log: LineFile | None = None
        self.attempt = 1
        self._files_failed = False  # a write into the run folder failed: events still reach the parent
        if enabled:
            folder.create()
            self._metrics, self.attempt = open_for_append(folder.metrics)
            self._log = LineFile(folder.events_log)

    def emit(self, event: Message) -> None:
        """Send one event now, after the steps still waiting (so the parent sees them in order)."""
        self.flush_steps()
        self._send(event)
        if isinstance(event, (TrainerError, Finished)):
            self.sync_files()

    @property
    def log_file(self) -> LineFile | None:
        return self._log

    def log(self, message: str, level: Literal["debug", "info", "warning", "error"] = "info") -> None:
        self.emit(LogLine(level=level, message=message, time=time.time()))

    def add_step(self, record: StepRecord | None, activations: ActivationStats | None) -> None:
        """Queue a logged step (and an activation sample); send them once per message interval.

        Activation samples are thinned to the latest one per interval, as steps are batched.
        """
        if record is not None:
            self._pending_steps.append(record)
        if activations is not None:
            self._pending_activations = activations
        if time.monotonic() - self._last_flush >= self._interval_s:
            self.flush_steps()

    def flush_steps(self) -> None:
        if not self._pending_steps and self._pending_activations is None:
            return
        if self._pending_steps:
            self._send(StepBatch(records=tuple(self._pending_steps), attempt=self.attempt))
            self._pending_steps = []
        if self._pending_activations is not None:
            self._send(self._pending_activations)
            self._pending_activations = None
        self._last_flush = time.monotonic()

    def sync_files(self) -> None:
        """Everything measured so far, waiting steps included, into the files (the OS keeps it past a kill)."""
        self.flush_steps()

    def close(self) -> None:
        self.flush_steps()
        for file in (self._metrics, self._log):
            if file is not None:
                file.close()

    def _send(self, event: Message) -> None:
        if not self._enabled:
            return
        self._events.put(event)
        if self._files_failed:
            return
        try:
            if self._metrics is not None and not isinstance(event, LogLine):
                self._metrics.append(event_to_json(event))
            line = event_line(event)
            if line is not None and self._log is not None:
                level = event.level if isinstance(event, LogLine) else "error" if isinstance(event, TrainerError) else "info"
                self._log.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {level.upper():<7} {line}")
        except OSError:
            # Once: what could not be written ends the run; its error still reaches the parent.
            self._files_failed = True
            raise


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def event_line(event: Message) -> str | None:
    """One human-readable line (a traceback for errors) for events.log; None for step data."""
    if isinstance(event, RunStarted):
        resumed = f", resumed after epoch {event.resumed_from_epoch}" if event.resumed_from_epoch is not None else ""
        return (
            f"run {event.run_id} on {event.device}{resumed}: {event.model.class_name} "
            f"({event.model.total_params:,} parameters) on {event.data.name}, outputs {event.output_form}; "
            f"{event.hparams.model_dump()}"
        )
    if isinstance(event, EpochSummary):
        val_loss = "-" if event.val_loss is None else f"{event.val_loss:.4f}"
        return (
            f"epoch {event.epoch}: loss {event.train_loss:.4f} acc {_percent(event.train_accuracy)} "
            f"val loss {val_loss} val acc {_percent(event.val_accuracy)} lr {event.lr:.3g} ({event.duration_s:.1f} s)"
        )
    if isinstance(event, Evaluated):
        return f"evaluated at step {event.step}: val loss {event.val_loss:.4f} val acc {_percent(event.val_accuracy)}"
    if isinstance(event, LogLine):
        return event.message
    if isinstance(event, TrainerError):
        lines = [f"{event.kind} error: {event.message}"]
        if event.hint:
            lines.append(f"hint: {event.hint}")
        if event.traceback:
            lines.append(event.traceback.rstrip())
        return "\n".join(lines)
    if isinstance(event, CheckpointWritten):
        return f"checkpoint {event.path} (epoch {event.epoch}, step {event.step})"
    if isinstance(event, HParamsApplied):
        return f"hyperparameters at step {event.step} (round {event.round}): {event.hparams.model_dump()}"
    if isinstance(event, ModelSwapped):
        return (
            f"model is now {event.model.class_name} from {event.model.source_path} at step {event.step}: "
            f"{event.transferred}/{event.total} tensors carried over"
        )
    if isinstance(event, StateChanged):
        return f"state: {event.state}"
    if isinstance(event, Finished):
        return f"finished ({event.reason}) after {event.epoch} epochs, {event.step} steps"
    return None
