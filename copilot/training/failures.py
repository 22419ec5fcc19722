"""What went wrong in the trainer, as the one `TrainerError` the parent shows: a kind, a
one-line message, a hint that says what to do, and the traceback for `events.log`.

An exception from the user's model file is named with its file and line; a full disk, an
out-of-memory error and copilot's own errors each get their kind; anything else is a bug in
copilot and says so. A non-finite value and a refused model swap are reported without
ending the run.

It must not decide whether the run goes on (the worker does).
"""

from __future__ import annotations

import traceback
from pathlib import Path

import torch

from copilot.errors import ConfigError, CopilotError, DataError, DiskFullError, EnvironmentSetupError, ModelLoadError, error_summary, first_line, is_disk_full
from copilot.events import ErrorKind, NonFinite, TrainerError
from copilot.training.loop import TrainState
from copilot.training.models import ModelCheckError


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def error_event(exc: BaseException, user_files: set[str], *, epoch: int | None, step: int | None) -> TrainerError:
    """Classify an exception: what kind, whether the user can fix it, and how."""
    full = "".join(traceback.format_exception(exc))
    if isinstance(exc, DiskFullError):  # nothing to debug, and events.log may not have room for it
        return TrainerError(kind="disk", message=exc.message, hint=exc.hint, epoch=epoch, step=step)
    if isinstance(exc, CopilotError):
        kind: ErrorKind = (
            exc.kind if isinstance(exc, ModelCheckError) else
            "load" if isinstance(exc, ModelLoadError) else
            "data" if isinstance(exc, DataError) else
            "config" if isinstance(exc, ConfigError) else
            "environment" if isinstance(exc, EnvironmentSetupError) else
            "runtime"
        )
        return TrainerError(kind=kind, message=exc.message, hint=exc.hint, traceback=full, epoch=epoch, step=step)
    message = error_summary(exc)
    if is_disk_full(exc):
        return TrainerError(
            kind="disk",
            message=f"the disk is full: {first_line(exc)}",
            hint=f"free space where the run writes ({exc.filename or 'the run folder'}), then continue with `copilot resume`",
            traceback=full,
            epoch=epoch,
            step=step,
        )
    if _is_out_of_memory(exc):
        return TrainerError(
            kind="oom",
            message=f"out of memory: {first_line(exc)}",
            hint="lower the batch size (--batch-size) or the model size",
            traceback=full,
            epoch=epoch,
            step=step,
        )
    frames = traceback.extract_tb(exc.__traceback__)
    user_frame = next((f for f in reversed(frames) if f.filename in user_files), None)
    if user_frame is not None:
        return TrainerError(
            kind="forward",
            message=f"{message} (at {Path(user_frame.filename).name}:{user_frame.lineno})",
            hint="fix the model file; the full traceback is in events.log",
            traceback=full,
            epoch=epoch,
            step=step,
        )
    return TrainerError(
        kind="runtime",
        message=message,
        hint="this looks like a bug in copilot; the traceback is in events.log",
        traceback=full,
        epoch=epoch,
        step=step,
        user_error=False,
    )


def nonfinite_error(nonfinite: NonFinite, state: TrainState) -> TrainerError:
    if nonfinite.where == "loss":
        where = "the loss"
    else:
        where = f"{nonfinite.where}s of module '{nonfinite.module}'"
    return TrainerError(
        kind="nonfinite",
        message=f"NaN or infinity in {where} at step {state.step}; training is paused",
        hint="lower the learning rate, set grad_clip or add normalisation, then resume",
        epoch=state.epoch + 1,
        step=state.step,
    )


def swap_refused(exc: CopilotError, state: TrainState) -> TrainerError:
    kind: ErrorKind = exc.kind if isinstance(exc, ModelCheckError) else "load"
    return TrainerError(
        kind=kind,
        message=f"model swap refused: {exc.message}",
        hint=f"{exc.hint}; training goes on with the current model" if exc.hint else "training goes on with the current model",
        epoch=state.epoch + 1,
        step=state.step,
    )
