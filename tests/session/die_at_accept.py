"""A copilot session that is SIGKILLed while it applies an accepted verdict (run as a script).

`python -m tests.session.die_at_accept PROJECT MODEL RUN WHEN` starts a session with the
session tests' tiny settings, waits for the first assessment, accepts its proposal and
dies by SIGKILL, as a user's copilot would to a crash or `kill -9`:

- `before-commit`: after the verdict is in the ledger, before the round is committed;
- `after-commit`: after the round is committed, before the ledger notes the commit.

The kill is injected by wrapping the real history call; everything else is the real thing.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from copilot.advisor.schemas import Verdict
from copilot.history.experiment import ExperimentHistory
from copilot.session.controller import Session
from tests.session.conftest import tiny_settings, until_due


def main(project: Path, model: str, run_name: str, when: str) -> None:
    real_commit = ExperimentHistory.commit_round

    def commit_then_die(self: ExperimentHistory, **round_: object) -> object:
        if when == "after-commit":
            real_commit(self, **round_)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("SIGKILL returned")

    session = Session.start(tiny_settings(project), str(project / model), run_name=run_name)
    until_due(session)
    session.assess("schedule")
    ExperimentHistory.commit_round = commit_then_die  # type: ignore[method-assign]
    session.decide(Verdict(decision="accept"))
    raise AssertionError("the session outlived its SIGKILL")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
