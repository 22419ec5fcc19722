"""What torchrun runs in each rank: `python -m torch.distributed.run ... -m copilot.training.rank_entry RUN_FOLDER`.

Every rank reads the start file in the run folder (so a node that cannot see the folder
refuses at once), joins the process group and runs the same trainer as a single process.
Rank 0 connects to the app (`ranks.connect_to_app`) and speaks the trainer's usual JSON
lines over that connection; the other ranks hear the app's commands only through rank 0
(`distributed.CommandsInStep`) and send nothing. After a restart by the elastic agent
every rank continues from the run's latest checkpoint.

`record` lets the agent name a rank's exception in its failure report; the worker re-raises
on ranks other than 0 for that reason.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import time
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

from copilot.events import Command, LogLine
from copilot.run_folder import RunFolder
from copilot.training import distributed
from copilot.training.launcher import TrainerSpec, CommandsFromParent, EventsToParent
from copilot.training.ranks import connect_to_app, read_rank_start


class _NoCommands:
    """A rank other than 0 hears no app: every command reaches it through rank 0's broadcast."""

    def get(self, timeout: float | None = None) -> Command:
        raise queue.Empty

    def get_nowait(self) -> Command:
        raise queue.Empty


class _NoEvents:
    """A rank other than 0 reports nothing (its reporter is off; this is where it would go)."""

    def put(self, event: Any) -> None:
        pass

    def close(self) -> None:
        pass


@record
def main(run_folder: Path) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the app decides how to stop us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    start = read_rank_start(run_folder)
    spec = TrainerSpec.model_validate_json(start.spec)
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    latest = RunFolder(spec.run_folder).latest_checkpoint()
    if restarts and latest is not None:
        spec = spec.model_copy(update={"resume_from": latest})
    distributed.start_process_group(spec.train.device)
    group = distributed.RankGroup.current()
    commands: Any = _NoCommands()
    events: Any = _NoEvents()
    if group.is_main:
        connection = connect_to_app(start)
        commands, events = CommandsFromParent(connection), EventsToParent(connection)
        if restarts:
            events.put(LogLine(level="warning", message=f"the elastic agent restarted every rank (restart {restarts}) from {latest}", time=time.time()))
    from copilot.training.worker import run_trainer

    try:
        run_trainer(spec, distributed.CommandsInStep(commands, group), events)
    finally:
        events.close()
        distributed.end_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
