"""Editing a proposal by hand: the user's $VISUAL/$EDITOR on its code or its hyperparameters.

The app suspends while the editor runs and keeps a draft of each edit, so an edit that
is refused (a bad value here, a sandbox failure in the session) reopens as the user
left it. What the edit becomes is an edit `Verdict`; deciding on it is the session's,
and the app shows a refused edit's `CopilotError` as one line.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from pathlib import Path

from pydantic import ValidationError
from textual.app import App, SuspendNotSupported

from copilot.advisor.schemas import ArchitectureProposal, HParamChange, HParamProposal, Verdict
from copilot.errors import CopilotError
from copilot.history.hparams_file import hparams_to_toml, read_hparams

EDIT_HEADER = (
    "# Edit the proposed hyperparameters, save and quit the editor.\n"
    "# copilot applies the values that differ from the running ones; a bad value is refused with the reason.\n"
)


def edit_proposal(app: App, proposal: ArchitectureProposal | HParamProposal, drafts: dict[str, str]) -> Verdict | None:
    """Open the proposal, or the user's draft of it from `drafts`, in the editor: the edit verdict,
    or None when the editor changed nothing. A refused edit raises `CopilotError`, its draft kept."""
    key = draft_key(proposal)
    if isinstance(proposal, ArchitectureProposal):
        opened, file_name = drafts.get(key, proposal.code), proposal.file_name
    else:
        opened, file_name = drafts.get(key, EDIT_HEADER + hparams_to_toml(proposal.after.model_dump())), "hparams.toml"
    edited = edit_text(app, opened, file_name)
    if edited == opened:
        return None
    drafts[key] = edited  # kept before the check: a refused value is reopened to fix
    if isinstance(proposal, ArchitectureProposal):
        return Verdict(decision="edit", edited_code=edited)
    return Verdict(decision="edit", edited_change=edited_hparam_change(proposal, edited))

def edit_text(app: App, text: str, file_name: str) -> str:
    """Open `text` in $VISUAL/$EDITOR (the app suspends meanwhile): the edited text; an editor that failed raises `CopilotError`."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory(prefix="copilot-edit-") as folder:
        path = Path(folder) / file_name
        path.write_text(text, encoding="utf-8")
        command = [*shlex.split(editor), str(path)]
        try:
            try:
                with app.suspend():
                    completed = subprocess.run(command)
            except SuspendNotSupported:
                if not app.is_headless:
                    raise CopilotError("this terminal cannot hand the screen to an editor", "edit from a local terminal")
                completed = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
        except FileNotFoundError:
            raise CopilotError(f"editor '{editor}' not found", "set $EDITOR, e.g. `export EDITOR=nano`") from None
        if completed.returncode != 0:
            raise CopilotError(f"the editor exited with status {completed.returncode}", "save and quit the editor normally")
        return path.read_text(encoding="utf-8")


def draft_key(proposal: ArchitectureProposal | HParamProposal) -> str:
    """What names a proposal across its retries: a failed edit comes back with a new sandbox report, not new code."""
    if isinstance(proposal, ArchitectureProposal):
        return f"architecture\x00{proposal.summary}\x00{proposal.code}"
    return f"hyperparameters\x00{proposal.summary}\x00{proposal.change.model_dump_json()}"


def edited_hparam_change(proposal: HParamProposal, edited: str) -> HParamChange:
    """The values in the edited TOML that differ from the running hyperparameters, validated."""
    values = read_hparams(edited, where="the edited hyperparameters")
    running = proposal.before.model_dump()
    unknown = sorted(set(values) - set(running))
    if unknown:
        raise CopilotError(f"unknown hyperparameter '{unknown[0]}'", f"use one of: {', '.join(sorted(running))}")
    changed = {key: value for key, value in values.items() if value != running[key]}
    if not changed:
        raise CopilotError("the edited values equal the running ones", "change at least one value, or reject instead")
    try:
        return HParamChange(**changed)
    except ValidationError as error:
        first = error.errors()[0]
        raise CopilotError(
            f"edited hyperparameter '{first['loc'][0] if first['loc'] else '?'}': {first['msg']}", "fix the value and edit again"
        ) from None
