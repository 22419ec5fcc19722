"""The error types users see.

Every problem a user can fix is a `CopilotError` with a one-line message that names
the problem and a one-line hint that names the fix. The CLI prints both and exits 2;
anything else is an internal error (exit 1) whose traceback goes to the run's log,
never to the screen.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


def first_line(text: object) -> str:
    """The first non-blank line of `text` (an exception's message, a child's report), stripped;
    "" when it has none. What fits on one line of a screen or an event: the rest goes to a log."""
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def error_summary(exc: BaseException) -> str:
    """`Type: first line` of an error we did not raise ourselves, or its type alone when it has no message."""
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


class CopilotError(Exception):
    """A problem the user can fix: `message` says what is wrong, `hint` what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class ModelLoadError(CopilotError):
    """The user's model file cannot be loaded, built or run on the data."""


class DataError(CopilotError):
    """A data set cannot be found, read or matched to the model."""


class ConfigError(CopilotError):
    """A setting, flag or HPARAMS entry is unknown or out of range."""


class EnvironmentSetupError(CopilotError):
    """This machine's set-up (an installed package, a device, the disk) cannot run training; no model change fixes it."""


class HistoryError(CopilotError):
    """The git repository is in a state we refuse to touch, or a round does not exist."""


class AdvisorError(CopilotError):
    """The advisor could not produce a valid diagnosis or proposal."""


class DiskFullError(CopilotError):
    """A write into the run folder failed for want of space; nothing half-written was kept."""

    def __init__(self, folder: Path, resume: str) -> None:
        try:
            free = f"{shutil.disk_usage(folder).free // 2**20} MB free"
        except OSError:
            free = "free space unknown"
        super().__init__(f"no space left on {folder} ({free})", f"free space and run `{resume}`")


def is_disk_full(exc: BaseException) -> bool:
    """An error that means the disk is full (sqlite says so in words, not with an errno)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return type(exc).__name__ == "OperationalError" and "disk is full" in str(exc)


class SandboxRefusal(CopilotError):
    """Generated code was refused by the static check before it ran."""
