"""The edit-the-proposal helpers without the app: an edited TOML back into hyperparameters.

Opening $EDITOR on a proposal is driven through the app in test_app.py.
"""

from __future__ import annotations

import pytest

from copilot.errors import CopilotError
from copilot.tui.editor import edited_hparam_change
from tests.tui.synthetic import hparam_proposal


def test_edited_hyperparameters_are_checked_before_they_are_sent() -> None:
    proposal = hparam_proposal()
    with pytest.raises(CopilotError, match="'lr'"):
        edited_hparam_change(proposal, "lr = 50.0\n")
    with pytest.raises(CopilotError, match="unknown hyperparameter 'learning_rate'"):
        edited_hparam_change(proposal, "learning_rate = 0.1\n")
    with pytest.raises(CopilotError, match="equal the running ones"):
        edited_hparam_change(proposal, "lr = 0.1\n")
