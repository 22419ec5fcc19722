"""The error types users see.

Every problem a user can fix is a `CopilotError` with a one-line message that names
the problem and a one-line hint that names the fix. The CLI prints both and exits 2;
anything else is an internal error (exit 1) whose traceback goes to the run's log,
never to the screen.
"""

from __future__ import annotations


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


class SandboxRefusal(CopilotError):
    """Generated code was refused by the static check before it ran."""
