"""The positive control: a trainer as copilot started one before the walls.

Runs `run_trainer` in this process's main thread with the whole inherited
environment and no walls, then delivers SIGINT and exits normally, so the hostile
model's three triggers fire as they would in an unguarded trainer.
Usage: python unwalled_trainer.py SPEC.json
"""

from __future__ import annotations

import queue
import signal
import sys
from pathlib import Path

from copilot.training.launcher import TrainerSpec
from copilot.training.worker import run_trainer

if __name__ == "__main__":
    spec = TrainerSpec.model_validate_json(Path(sys.argv[1]).read_text(encoding="utf-8"))
    run_trainer(spec, queue.Queue(), queue.Queue())
    signal.raise_signal(signal.SIGINT)
