"""`metrics.jsonl`: the trainer's record of its events, appended by one writer, read by many.

The trainer appends with `open_for_append`, which first cuts off a last line that a
crash (a kill) left without its newline, so the next record starts on a line of its
own instead of being swallowed by the torn one, and which says which start of the
trainer this is (`attempt`: one more than the trainers that started before). Lines go
in whole through a `LineFile`: one that does not fit (a full disk) is taken back, so
the file never ends torn, and what was written is in the OS at once (a kill loses none).
A trainer resumed from a checkpoint replays the steps after it, so the same step can be
on record more than once: `read_metrics` keeps only the latest attempt of each step and
of each epoch, and drops a torn last line, so no reader counts anything twice. A run
that went back to an earlier step (a `Rewound` record) drops what earlier attempts
recorded after it, re-done or not.

It must not import torch: the app, the advisor and the report read with it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from copilot.events import EpochSummary, Event, HParamsApplied, ModelSwapped, Rewound, StepBatch, parse_event

# How a trainer's first event is spelled on its line; counted, not parsed, to find the attempt.
_RUN_STARTED_MARK = b'"type":"run_started"'


def cut_torn_line(path: Path) -> None:
    """Remove a last line without its newline (its writer died mid-line)."""
    if not path.exists():
        return
    with path.open("rb+") as file:
        size = file.seek(0, os.SEEK_END)
        if size == 0:
            return
        file.seek(size - 1)
        if file.read(1) == b"\n":
            return
        file.seek(0)
        content = file.read()
        file.truncate(content.rfind(b"\n") + 1)


class LineFile:
    """A file appended one whole line at a time, each line one write the OS keeps past a kill."""

    def __init__(self, path: Path) -> None:
        cut_torn_line(path)
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, line: str) -> None:
        """Write `line` and its newline, or nothing: a failed write (a full disk) is taken back."""
        assert self._fd is not None, "append after close"
        data = (line + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            while data:
                written = os.write(self._fd, data)
                if written == 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
                data = data[written:]
        except OSError:
            os.ftruncate(self._fd, size)
            raise

    def fileno(self) -> int:
        """For writers that need a descriptor (faulthandler's stack dumps), appending too."""
        assert self._fd is not None, "fileno after close"
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def open_for_append(path: Path) -> tuple[LineFile, int]:
    """The file opened for appending whole lines, and this trainer's attempt number."""
    cut_torn_line(path)
    return LineFile(path), next_attempt(path)


def next_attempt(path: Path) -> int:
    """The attempt number the next trainer to start on this file gets: one more than those that started."""
    return 1 + (path.read_bytes().count(_RUN_STARTED_MARK) if path.exists() else 0)


def _parsed_lines(path: Path) -> Iterator[Event]:
    if not path.exists():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    lines.pop()  # after the last newline: empty, or a torn line that is never a whole record
    for line in lines:
        if not line.strip():
            continue
        try:
            yield parse_event(line)
        except (ValidationError, ValueError):
            continue


def read_metrics(path: Path) -> list[Event]:
    """Every event on record, in order, each step and epoch only from its latest attempt."""
    events = list(_parsed_lines(path))
    latest_step: dict[int, int] = {}
    latest_epoch: dict[int, int] = {}
    rewinds = [event for event in events if isinstance(event, Rewound)]

    def abandoned(step: int, attempt: int) -> bool:
        return any(attempt < rewind.attempt and step > rewind.step for rewind in rewinds)

    for event in events:
        if isinstance(event, StepBatch):
            for record in event.records:
                latest_step[record.step] = max(latest_step.get(record.step, 0), event.attempt)
        elif isinstance(event, EpochSummary):
            latest_epoch[event.epoch] = max(latest_epoch.get(event.epoch, 0), event.attempt)
    kept: list[Event] = []
    for event in events:
        if isinstance(event, StepBatch):
            records = tuple(
                record for record in event.records
                if latest_step[record.step] == event.attempt and not abandoned(record.step, event.attempt)
            )  # fmt: skip
            if records:
                kept.append(event if len(records) == len(event.records) else event.model_copy(update={"records": records}))
        elif isinstance(event, EpochSummary):
            if latest_epoch[event.epoch] == event.attempt and not abandoned(event.step, event.attempt):
                kept.append(event)
        else:
            kept.append(event)
    return kept


def round_epochs(path: Path, rounds: Iterable[int]) -> dict[int, list[EpochSummary]]:
    """The epochs on record (as `read_metrics` keeps them) that each of `rounds` trained, in order:
    what the history screen's comparison of two rounds draws."""
    wanted: dict[int, list[EpochSummary]] = {number: [] for number in rounds}
    for event in read_metrics(path):
        if isinstance(event, EpochSummary) and event.round in wanted:
            wanted[event.round].append(event)
    return wanted


def applied_rounds(path: Path) -> set[int]:
    """The rounds a trainer reported applying (a swapped model or new hyperparameters)."""
    return {
        event.round
        for event in _parsed_lines(path)
        if isinstance(event, (ModelSwapped, HParamsApplied)) and event.round is not None
    }
