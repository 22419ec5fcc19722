"""Start the trainer in its own process and talk to it; the one training module the parent imports.

`TrainerProcess` spawns the worker with the `spawn` start method (safe with CUDA), sends
it `Command`s on one queue and reads `Event`s from another without ever blocking longer
than the caller allows. If the trainer dies without saying goodbye (a signal, the
kernel's out-of-memory killer, a segfault), the parent still gets a `TrainerError` after
every event the trainer managed to send: of kind "oom" when the memory cgroup counted an
out-of-memory kill meanwhile (evidence, not a guess from the signal), else "killed", a
fault from outside that the session recovers from by resuming from a checkpoint.

It must not import torch (the app imports this module and starts quickly) and holds no
training logic: everything that trains lives in `worker.py`, inside the child.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from copilot.config import DataSettings, ModelArg, SandboxSettings, TrainSettings
from copilot.errors import ModelLoadError
from copilot.events import Command, Event, Finished, SetHParams, Stop, SwapModel, TrainerError


class TrialPlan(BaseModel):
    """What makes a trainer a trial: a change, a step budget, and where to show its outputs.

    A trial is a trainer resumed from the run's checkpoint (or started afresh when there
    is none) that applies `changes` before its first step, exactly as an accepted round
    would, trains `steps` optimizer steps in the run's data order and stops with a
    checkpoint the run can continue from. After each step in `evaluate_at` it writes its
    outputs on the first `val_samples` validation samples; it never sees a score: the
    parent keeps the labels and computes it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    arm: str  # "incumbent", "c1", ...: names the trial's folder and its results
    steps: int = Field(ge=1)
    evaluate_at: tuple[int, ...]  # steps after the fork, ascending, the last one `steps`
    val_samples: int = Field(ge=1)
    changes: tuple[SetHParams | SwapModel, ...] = ()
    # Another data order and random stream for a second copy of the incumbent: a noise estimate.
    reseed: int | None = None


class TrainerSpec(BaseModel):
    """Everything a trainer process needs to start; also saved as the run's session.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_folder: Path
    model_spec: str  # "file.py" or "file.py:Name"
    model_args: dict[str, ModelArg] = Field(default_factory=dict)
    data: DataSettings = Field(default_factory=DataSettings)
    # train.hparams are the overrides on top of the file's HPARAMS (or, when resuming, on top of the checkpoint's).
    train: TrainSettings = Field(default_factory=TrainSettings)
    # A config object built from defaults is refused past this many parameters (minGPT's defaults are GPT-2's).
    max_params: int = SandboxSettings.model_fields["max_params"].default
    resume_from: Path | None = None  # a checkpoint file to continue from
    trial: TrialPlan | None = None  # set: a short trial of a change, not the run itself


def split_model_spec(spec: str) -> tuple[Path, str | None]:
    """`"models/net.py:Net"` -> (path, "Net"); a colon belongs to the name only after a `.py`."""
    path_part, colon, name = spec.rpartition(":")
    if colon and path_part.endswith(".py") and name.isidentifier():
        return Path(path_part), name
    return Path(spec), None


def ensure_model_file(path: Path) -> None:
    """Fail early, before a process or a run folder exists, when the model file is not there."""
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not a model file", "give the .py file that defines the model")
    if not path.is_file():
        raise ModelLoadError(
            f"model file not found: {path}",
            "check the path (it is relative to the folder you run copilot in)",
        )
    if path.suffix != ".py":
        raise ModelLoadError(f"{path} is not a Python file", "give a .py file that defines the model")


def oom_kills() -> int | None:
    """Out-of-memory kills the kernel counted in this process's memory cgroup (v2 or v1), or None
    when it keeps no count we can read."""
    try:
        groups = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in groups:
        _number, controllers, path = line.split(":", 2)
        root = Path("/sys/fs/cgroup") if controllers == "" else Path("/sys/fs/cgroup/memory") if "memory" in controllers.split(",") else None
        if root is None:
            continue
        for counters in (root / path.lstrip("/") / "memory.events", root / path.lstrip("/") / "memory.oom_control"):
            try:
                fields = dict(line.split() for line in counters.read_text(encoding="utf-8").splitlines() if " " in line)
            except (OSError, ValueError):
                continue
            if "oom_kill" in fields:
                return int(fields["oom_kill"])
    return None


def _trainer_entry(spec: TrainerSpec, commands: Any, events: Any) -> None:
    """Child-side entry; imports the worker (and torch) only here, so the parent never does."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides how to stop us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from copilot.training.worker import run_trainer

    run_trainer(spec, commands, events)


class TrainerProcess:
    """One trainer child process and its two queues."""

    def __init__(self, spec: TrainerSpec) -> None:
        self.spec = spec
        context = multiprocessing.get_context("spawn")
        self._commands = context.Queue()
        self._events = context.Queue()
        # Not a daemon: the trainer may start DataLoader workers, which daemons cannot have.
        # It watches for its parent instead and stops when the parent is gone.
        self._process = context.Process(
            target=_trainer_entry,
            args=(spec, self._commands, self._events),
            name=f"copilot-trainer-{spec.run_folder.name}",
        )
        self._finished = False  # a Finished event arrived
        self._death_reported = False
        self._oom_kills_at_start: int | None = None

    def start(self) -> None:
        self._oom_kills_at_start = oom_kills()
        self._process.start()

    def send(self, command: Command) -> None:
        """Queue a command for the trainer; it reads commands between steps."""
        if self._process.is_alive():
            self._commands.put(command)

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Events that arrived, waiting at most `timeout` seconds for the first one."""
        events: list[Event] = []
        try:
            events.append(self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait())
        except queue.Empty:
            pass
        events.extend(self._drain())
        if not events and not self._process.is_alive() and self._process.exitcode is not None:
            # The child is gone: whatever it sent is in the pipe now; read it before judging.
            events.extend(self._drain())
            events.extend(self._death_notice())
        self._finished = self._finished or any(isinstance(event, Finished) for event in events)
        return events

    def _drain(self) -> list[Event]:
        drained: list[Event] = []
        while True:
            try:
                drained.append(self._events.get_nowait())
            except queue.Empty:
                return drained

    def _death_notice(self) -> list[Event]:
        """A `TrainerError` for a child that exited without a `Finished` event, once."""
        if self._finished or self._death_reported:
            return []
        self._death_reported = True
        code = self._process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            message = f"the trainer process was killed by {name} (exit code {code})"
        else:
            message = f"the trainer process exited with code {code} without finishing"
        now, before = oom_kills(), self._oom_kills_at_start
        if now is not None and before is not None and now > before:
            return [
                TrainerError(
                    kind="oom",
                    message=f"{message}: the system ran out of memory",
                    hint="lower the batch size (--batch-size) or the model size",
                )
            ]
        hint = "nothing says it ran out of memory; continue the run from its last checkpoint with `copilot resume`"
        return [TrainerError(kind="killed", message=message, hint=hint, user_error=False)]

    @property
    def is_alive(self) -> bool:
        return self._process.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def stop(self, timeout: float = 30.0, *, checkpoint: bool = True) -> list[Event]:
        """Ask the trainer to stop, wait up to `timeout` s reading its events, then terminate it.

        Returns the events read meanwhile, ending with its `Finished` (or a "killed" error).
        """
        self.send(Stop(checkpoint=checkpoint))
        events = self._wait_for_exit(timeout)
        if self._process.is_alive():
            self._process.terminate()
            events.extend(self._wait_for_exit(5.0))
        if self._process.is_alive():
            self.kill()
        events.extend(self.poll())
        self._close_queues()
        return events

    def kill(self) -> None:
        """SIGKILL the trainer at once; `poll` then reports it as killed."""
        self._process.kill()
        self._process.join(5.0)

    def _wait_for_exit(self, timeout: float) -> list[Event]:
        # Reading while waiting matters: a child with unsent events cannot exit before they are read.
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while self._process.is_alive() and time.monotonic() < deadline:
            events.extend(self.poll(timeout=min(0.1, max(0.0, deadline - time.monotonic()))))
        self._process.join(0.5)
        return events

    def _close_queues(self) -> None:
        # A dead child never reads the commands left in the pipe: do not wait on them at exit.
        self._commands.cancel_join_thread()
        self._commands.close()
