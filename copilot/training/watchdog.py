"""The trainer's watchdog: a model that never returns ends the run with the stage and the frame.

A model that loops forever at import, in its constructor or in `forward` would leave the
trainer silent and the user waiting. The trainer marks each stage as it enters it
(`at("import")`, `at("first forward")`, `at("step 12")`, cheap enough for every step);
a daemon thread wakes once a second, and when the same mark has stood for `timeout_s`
it writes every thread's stack into the trainer's log with `faulthandler` (which needs
nothing from the stuck thread), finds the frame the main thread is stuck in, preferring
the user's own files, and hands both to `on_stuck`, which reports and ends the process.

Python code that loops gives the thread its turn; a C call that never releases the GIL
would not, and is out of reach here. This module reports nothing itself.
"""

from __future__ import annotations

import faulthandler
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol


# The stage `at` is given while a model file is imported and built; refined from the stack.
LOADING = "loading the model"


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


@dataclass(frozen=True)
class StuckAt:
    """Where the trainer stopped making progress."""

    stage: str  # "import", "construction", "first forward", "step 12", ...
    seconds: float
    frame: traceback.FrameSummary | None  # the innermost frame in the user's files, else the innermost


class Watchdog:
    """Calls `on_stuck` once if no new stage is marked for `timeout_s` seconds."""

    def __init__(
        self,
        timeout_s: float,
        log: _HasFileno | None,
        user_files: Collection[str],
        on_stuck: Callable[[StuckAt], None],
    ) -> None:
        self._timeout_s = timeout_s
        self._log = log
        self._user_files = user_files
        self._on_stuck = on_stuck
        self._stage = "start"
        self._since = time.monotonic()
        self._watched = threading.main_thread().ident
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="copilot-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def at(self, stage: str) -> None:
        """The trainer is now in `stage`; the clock starts again."""
        self._stage = stage
        self._since = time.monotonic()

    def _watch(self) -> None:
        while not self._stopped.wait(min(1.0, self._timeout_s / 4)):
            stage, since = self._stage, self._since
            waited = time.monotonic() - since
            if waited < self._timeout_s or stage != self._stage:
                continue
            if self._log is not None:
                faulthandler.dump_traceback(file=self._log, all_threads=True)
            current = sys._current_frames().get(self._watched) if self._watched is not None else None
            frames = traceback.extract_stack(current) if current is not None else traceback.StackSummary()
            users = [frame for frame in frames if frame.filename in self._user_files]
            self._stopped.set()
            frame = users[-1] if users else frames[-1] if frames else None
            self._on_stuck(StuckAt(stage=self._refined(stage, users), seconds=waited, frame=frame))
            return

    @staticmethod
    def _refined(stage: str, users: list[traceback.FrameSummary]) -> str:
        """Loading a model is its import, then its construction: the user's module frame says which."""
        if stage != LOADING or not users:
            return stage
        return "import" if any(frame.name == "<module>" for frame in users) else "construction"
