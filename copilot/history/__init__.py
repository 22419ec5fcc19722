"""Git as the experiment record: branch, worktree, round commits, notes, rollback, undo.

Never touches the user's checkout; never imports `copilot.tui`. The API is
`ExperimentHistory` (experiment.py); rounds, diffs and results are the frozen models
of rounds.py.
"""

from copilot.history.experiment import ExperimentHistory, RunRecord
from copilot.history.rounds import MetricChange, RoundDetail, RoundDiff, RoundInfo, RoundResults

__all__ = ["ExperimentHistory", "MetricChange", "RoundDetail", "RoundDiff", "RoundInfo", "RoundResults", "RunRecord"]
