"""Start the trainer in its own process and talk to it; the one training module the parent imports.

`TrainerProcess` starts the worker as a fresh interpreter (`subprocess`, exec'd, so
safe with CUDA) with an environment built from an allow-list (`copilot.walls`) plus the
names in `train.pass_env`: the app's credentials are never in the trainer's environment,
`/proc/self/environ` included. Parent and trainer speak JSON lines of the typed messages
in `copilot.events` over one socket pair (commands in, events out); the parent parses
what arrives as untrusted input, never unpickles it. If the trainer dies without saying
goodbye (a signal, the out-of-memory killer, a segfault), the parent still gets a
`TrainerError` after every event the trainer managed to send: of kind "oom" when the
memory cgroup counted an out-of-memory kill meanwhile (evidence, not a guess from the
signal), else "killed", a fault from outside that the session recovers from by resuming
from a checkpoint.

Walls: a spec with `walled=True` (the session sets it the first time code the user did
not write is to run; trials set it for every candidate) starts a trainer that raises
`copilot.walls` as its first act, before torch is imported and before any thread
exists: no network, no capabilities, writes only to `RunFolder.trainer_writes()`, reads
only from the interpreter, the model's folder without its hidden entries, the data and
what torch needs; its stdout and stderr go to `trainer/output.log`, capped. A trainer is
walled from its start or never: walls cannot be closed around a running process.

Several processes (`train.launch`: `--nproc-per-node`, `--nnodes`, ...): the trainer is
torch.distributed's elastic agent instead, started the same way with the same
environment; rank 0 reaches the parent over the socket `ranks.AppSocket` listens on, and
the parent reports the agent's account of a failed rank (`ranks.py` says how and why).

It must not import torch (the app imports this module and starts quickly) and holds no
training logic: everything that trains lives in `worker.py`, inside the child.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import copilot
from copilot import walls
from copilot.training import ranks
from copilot.config import DataSettings, SandboxSettings, TrainSettings
from copilot.errors import ModelLoadError
from copilot.events import (
    Command,
    Event,
    Finished,
    LogLine,
    ModelArg,
    ModelRef,
    SetHParams,
    Stop,
    SwapModel,
    TrainerError,
    event_to_json,
    parse_command,
    parse_event,
    split_file_reference,
)
from copilot.run_folder import RunFolder

# A walled trainer's stdout and stderr beyond this go nowhere (the log says how much was dropped).
TRAINER_OUTPUT_CAP_BYTES = 16 * 1024 * 1024
# One message from the trainer larger than this ends the connection: no event is that big.
MAX_EVENT_BYTES = 16 * 1024 * 1024
# The child's side: `-P` keeps the working folder off sys.path, so no file there shadows copilot.
CHILD_CODE = "import sys; from copilot.training.launcher import trainer_main; trainer_main(int(sys.argv[1]))"


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
    model: ModelRef
    data: DataSettings = Field(default_factory=DataSettings)
    # train.hparams are the overrides on top of the file's HPARAMS (or, when resuming, on top of the checkpoint's).
    train: TrainSettings = Field(default_factory=TrainSettings)
    # A config object built from defaults is refused past this many parameters (minGPT's defaults are GPT-2's).
    max_params: int = SandboxSettings.model_fields["max_params"].default
    resume_from: Path | None = None  # a checkpoint file to continue from
    # Runs code the user did not write (generated, edited in copilot, a trial): start behind the walls.
    walled: bool = False
    trial: TrialPlan | None = None  # set: a short trial of a change, not the run itself
    # Pause at each epoch's end (but the last) until the session sends what comes next: the advisor
    # then assesses, and its change applies, exactly there (`advisor.hold_training_while_assessing`).
    # Set by the session for the trainer it starts, from its own settings: not in session.json.
    hold_at_epoch_end: bool = Field(default=False, exclude_if=lambda hold: not hold)

    @model_validator(mode="before")
    @classmethod
    def _model_of_older_runs(cls, fields: Any) -> Any:
        return _with_model_of_older_runs(fields) if isinstance(fields, Mapping) else fields


def _with_model_of_older_runs(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A session.json written before `model` held the model as `model_spec` ("file.py[:Name]")
    and `model_args`: read so, such a run still resumes."""
    fields = dict(fields)
    if "model_spec" in fields:
        path, name = split_file_reference(str(fields.pop("model_spec")))
        fields["model"] = {"path": str(path), "name": name, "args": fields.pop("model_args", {})}
    return fields


def saved_model(session: Mapping[str, Any]) -> ModelRef | None:
    """The model a session.json's fields name, written now or before `model`; None when they name
    none that reads (a run folder's files are read as they are found)."""
    try:
        return ModelRef.model_validate(_with_model_of_older_runs(session).get("model"))
    except ValidationError:
        return None


def model_from_command_line(text: str, args: Mapping[str, ModelArg]) -> ModelRef:
    """The command line's `file.py[:Name]` and the settings' constructor arguments, parsed once;
    refused at once, before a process or a run folder exists, when the file is not there."""
    ref = ModelRef.parse(text, args)
    ensure_model_file(ref.path)
    return ref


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
                fields = dict(entry.split() for entry in counters.read_text(encoding="utf-8").splitlines() if " " in entry)
            except (OSError, ValueError):
                continue
            if "oom_kill" in fields:
                return int(fields["oom_kill"])
    return None


def wall_plan(spec: TrainerSpec) -> walls.WallPlan:
    """What a walled trainer for `spec` may read and write."""
    folder = RunFolder(spec.run_folder.resolve())
    reads = [*_model_folder_reads(spec.model.path.resolve().parent), str(Path(copilot.__file__).resolve().parent)]
    if spec.data.data_dir is not None:
        reads.append(str(spec.data.data_dir.resolve()))
    if spec.data.custom:
        custom_file, _function = split_file_reference(spec.data.custom)
        reads.extend(walls.visible_entries(str(custom_file.resolve().parent)))
    if folder.trials.is_dir():  # continued from a trial's end: its checkpoint names the module the trial kept
        reads.append(str(folder.trials))
    if spec.resume_from is not None:  # a trial forks from its run's checkpoint, outside its own folder,
        checkpoint = spec.resume_from.resolve()  # which names the module the run kept in its models/
        # ... or, continued from a trial (an extended trial, a round after one), in a trial of the run above.
        runs = [checkpoint.parent.parent, *(folder.parent for folder in checkpoint.parents if folder.name == "trials")]
        places = [checkpoint, *(place for run in map(RunFolder, runs) for place in (run.models, run.trials))]
        reads.extend(str(place) for place in places if place.exists())
    if spec.trial is not None:  # a trial's candidate module, swapped in before its first step
        reads.extend(str(change.model.path.resolve().parent) for change in spec.trial.changes if isinstance(change, SwapModel))
    return walls.WallPlan(write_roots=tuple(str(path) for path in folder.trainer_writes()), read_roots=tuple(reads))


def _model_folder_reads(folder: Path) -> tuple[str, ...]:
    """The model's folder without its `.git`.

    A run's worktree holds only a `.git` file pointing elsewhere: the folder itself is
    granted, so the files git writes into it later (a new round, an undo) stay readable.
    A checkout with its `.git` folder inside is granted entry by entry, hidden ones left out.
    """
    if (folder / ".git").is_dir():
        return walls.visible_entries(str(folder))
    return (str(folder),)


def trainer_environment(spec: TrainerSpec, source: dict[str, str] | None = None) -> dict[str, str]:
    """The trainer's whole environment: the allow-list, `train.pass_env`, and where copilot is found."""
    folder = RunFolder(spec.run_folder)
    environment = walls.allowed_environment(
        os.environ if source is None else source,
        home=str(folder.trainer_home) if spec.walled else None,
        scratch=str(folder.trainer_scratch),
        pass_env=spec.train.pass_env,
    )
    # The child is started with -P: put the folder holding this copilot first, so it runs this code.
    package_root = str(Path(copilot.__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, (package_root, environment.get("PYTHONPATH"))))
    return environment


def trainer_main(connection_fd: int) -> None:
    """Child-side entry: read the start message, raise the walls, and only then import the worker (and torch)."""
    # Ctrl-C in a terminal reaches the whole process group; the parent decides how to stop us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = Connection(connection_fd)
    start = json.loads(connection.recv_bytes())
    spec = TrainerSpec.model_validate_json(start["spec"])
    events = EventsToParent(connection)
    try:
        if start["walls"] is not None:
            try:
                applied = walls.apply_walls(walls.WallPlan.from_json(start["walls"]))
            except walls.WallsError as error:
                events.put(TrainerError(kind="config", message=f"the trainer could not be walled: {error}", hint="", user_error=False))
                events.put(Finished(reason="error", epoch=0, step=0))
                return
            level = "warning" if applied.missing else "info"
            events.put(LogLine(level=level, message=applied.describe(), time=time.time()))
        from copilot.training.worker import run_trainer

        run_trainer(spec, CommandsFromParent(connection), events)
    finally:
        events.close()


class CommandsFromParent:
    """The worker's command queue, read from the connection (`get(timeout=)`, `get_nowait()`)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def get(self, timeout: float | None = None) -> Command:
        try:
            if not self._connection.poll(timeout):
                raise queue.Empty
            return parse_command(self._connection.recv_bytes())
        except (EOFError, OSError):
            raise queue.Empty from None  # the parent is gone: the worker notices and stops

    def get_nowait(self) -> Command:
        return self.get(0.0)


class EventsToParent:
    """The worker's event queue: `put` never blocks training; a feeder thread writes, as multiprocessing's queues do.

    The thread starts at the first `put`, after the walls are up, so it is walled too.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._pending: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._feeder: threading.Thread | None = None

    def put(self, event: Any) -> None:
        if self._feeder is None:
            self._feeder = threading.Thread(target=self._feed, name="copilot-events", daemon=True)
            self._feeder.start()
        self._pending.put(event)

    def _feed(self) -> None:
        while (event := self._pending.get()) is not None:
            try:
                self._connection.send_bytes(event_to_json(event).encode())
            except OSError:
                return  # the parent is gone; nobody reads the rest

    def close(self) -> None:
        """Send what is queued, then let the process exit."""
        if self._feeder is not None:
            self._pending.put(None)
            self._feeder.join()
        self._connection.close()


class TrainerProcess:
    """One trainer child process and the connection to it."""

    def __init__(self, spec: TrainerSpec) -> None:
        self.spec = spec
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._send_lock = threading.Lock()  # commands come from the app's and the session's threads
        self._finished = False  # a Finished event arrived
        self._death_reported = False
        self._oom_kills_at_start: int | None = None
        self._app_socket: ranks.AppSocket | None = None  # several ranks: where rank 0 connects
        self._unsent: list[Command] = []  # commands given before rank 0 connected

    def start(self) -> None:
        self._oom_kills_at_start = oom_kills()
        spec = self.spec
        if not spec.train.launch.single_process:
            self._start_ranks()
            return
        folder = RunFolder(spec.run_folder).create(for_trainer=spec.walled)
        if spec.trial is not None:  # before the walls, which let it write there but create nothing new
            folder.outputs.mkdir(exist_ok=True)
        parent_end, child_end = socket.socketpair()
        try:
            output: IO[bytes] | int | None = subprocess.PIPE if spec.walled else None
            # Not a new session: the trainer may start DataLoader workers and goes with its group.
            # It watches for its parent and stops when the parent is gone.
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-c", CHILD_CODE, str(child_end.fileno())],
                env=trainer_environment(spec),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if spec.walled else None,
                pass_fds=(child_end.fileno(),),
            )
        finally:
            child_end.close()
        self._connection = Connection(parent_end.detach())
        if self._process.stdout is not None:
            _OutputCap(self._process.stdout, folder.trainer_output).start()
        plan = wall_plan(spec).to_json() if spec.walled else None
        self._connection.send_bytes(json.dumps({"spec": spec.model_dump_json(), "walls": plan}).encode())

    def _start_ranks(self) -> None:
        """The elastic agent as the trainer, in a session of its own: Ctrl-C in the terminal must not
        reach the agent (it would end every rank before the app could ask for a checkpoint)."""
        spec = self.spec
        ranks.refuse_walls(spec.walled)
        folder = RunFolder(spec.run_folder).create()
        folder.ranks_logs.mkdir(parents=True, exist_ok=True)
        folder.rank_failure.unlink(missing_ok=True)
        self._app_socket = ranks.AppSocket()
        start = self._app_socket.start_file(spec.model_dump_json())
        # It holds the key to the app's socket: readable by the user alone.
        descriptor = os.open(folder.rank_start, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "w", encoding="utf-8") as file:
            file.write(start.model_dump_json())
        self._app_socket.accept_each(self._rank0_connected)
        environment = trainer_environment(spec)
        environment["PYTHONSAFEPATH"] = "1"  # torchrun starts the ranks with -m: keep the working folder off sys.path, as -P does
        with open(folder.ranks_logs / "agent.log", "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-P", "-c", ranks.AGENT_CODE, str(folder.rank_failure), *ranks.agent_arguments(spec.train.launch, folder)],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _rank0_connected(self, connection: Connection) -> None:
        """Rank 0 (again, after a restart by the agent) is there: talk to it from now on."""
        with self._send_lock:
            previous, self._connection = self._connection, connection
            if previous is not None:
                previous.close()
            unsent, self._unsent = self._unsent, []
            for command in unsent:
                self._send_now(connection, command)

    def send(self, command: Command) -> None:
        """Queue a command for the trainer; it reads commands between steps."""
        if self.is_alive and self._connection is None and self._app_socket is not None:
            with self._send_lock:
                if self._connection is None:
                    self._unsent.append(command)
                    return
        if not self.is_alive or self._connection is None:
            return
        with self._send_lock:
            self._send_now(self._connection, command)

    @staticmethod
    def _send_now(connection: Connection, command: Command) -> None:
        try:
            connection.send_bytes(event_to_json(command).encode())
        except OSError:
            pass  # it died meanwhile; poll reports how

    def poll(self, timeout: float = 0.0) -> list[Event]:
        """Events that arrived, waiting at most `timeout` seconds for the first one."""
        events = self._receive(timeout)
        events.extend(self._drain())
        if not events and self._process is not None and self._process.poll() is not None:
            # The child is gone: whatever it sent is in the socket now; read it before judging.
            events.extend(self._drain())
            events.extend(self._death_notice())
        self._finished = self._finished or any(isinstance(event, Finished) for event in events)
        return events

    def _receive(self, timeout: float) -> list[Event]:
        """At most one event, waiting up to `timeout`; nothing once the connection has ended."""
        connection = self._connection
        if connection is None or connection.closed:
            return []
        try:
            if not connection.poll(timeout):
                return []
            data = connection.recv_bytes(MAX_EVENT_BYTES)
        except (EOFError, OSError):
            connection.close()
            return []
        try:
            return [parse_event(data)]
        except ValidationError:
            # The trainer may run hostile code: what it sends is parsed, and what does not parse is dropped.
            return [LogLine(level="warning", message="the trainer sent a message that is not an event; dropped", time=time.time())]

    def _drain(self) -> list[Event]:
        drained: list[Event] = []
        while batch := self._receive(0.0):
            drained.extend(batch)
        return drained

    def _death_notice(self) -> list[Event]:
        """A `TrainerError` for a child that exited without a `Finished` event, once."""
        if self._finished or self._death_reported:
            return []
        self._death_reported = True
        now, before = oom_kills(), self._oom_kills_at_start
        out_of_memory = now is not None and before is not None and now > before
        # Several ranks: the agent's account names the rank that failed first, and how.
        failed_rank = ranks.read_failure(RunFolder(self.spec.run_folder)) if self._app_socket is not None else None
        code = self.exitcode
        if failed_rank is not None:
            message = failed_rank.message
        elif code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            message = f"the trainer process was killed by {name} (exit code {code})"
        else:
            message = f"the trainer process exited with code {code} without finishing"
        if out_of_memory:
            return [
                TrainerError(
                    kind="oom",
                    message=f"{message}: the system ran out of memory",
                    hint="lower the batch size (--batch-size) or the model size",
                )
            ]
        if failed_rank is not None:
            return [failed_rank]
        hint = "nothing says it ran out of memory; continue the run from its last checkpoint with `copilot resume`"
        return [TrainerError(kind="killed", message=message, hint=hint, user_error=False)]

    @property
    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self, timeout: float = 30.0, *, checkpoint: bool = True) -> list[Event]:
        """Ask the trainer to stop, wait up to `timeout` s reading its events, then terminate it.

        Returns the events read meanwhile, ending with its `Finished` (or a "killed" error).
        """
        self.send(Stop(checkpoint=checkpoint))
        events = self._wait_for_exit(timeout)
        if self.is_alive and self._process is not None:
            self._process.terminate()
            events.extend(self._wait_for_exit(5.0))
        if self.is_alive:
            self.kill()
        events.extend(self.poll())
        if self._connection is not None:
            self._connection.close()
        if self._app_socket is not None:
            self._app_socket.close()
        return events

    def kill(self) -> None:
        """SIGKILL the trainer at once (the agent with every rank); `poll` then reports it as killed."""
        if self._process is not None:
            if self._app_socket is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
            self._process.kill()
            try:
                self._process.wait(5.0)
            except subprocess.TimeoutExpired:
                pass

    def _wait_for_exit(self, timeout: float) -> list[Event]:
        # Reading while waiting matters: a child whose feeder still sends cannot exit before it is read.
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while self.is_alive and time.monotonic() < deadline:
            events.extend(self.poll(timeout=min(0.1, max(0.0, deadline - time.monotonic()))))
        return events


class _OutputCap(threading.Thread):
    """Copies a walled trainer's output to its log file up to `TRAINER_OUTPUT_CAP_BYTES`; the rest is counted, not kept.

    The cap is measured here, in the parent: what the trainer says about its output is a claim.
    """

    def __init__(self, stream: IO[bytes], log_path: Path) -> None:
        super().__init__(name="copilot-trainer-output", daemon=True)
        self._stream = stream
        self._log_path = log_path

    def run(self) -> None:
        """Drain the stream to its end whatever happens to the log (a full disk): a trainer whose
        output pipe is not read blocks on its next print. Output the log cannot take is dropped."""
        written = dropped = 0
        log = self._open_log()
        with self._stream:
            while chunk := self._stream.read1(65536):
                kept = chunk[: max(0, TRAINER_OUTPUT_CAP_BYTES - written)] if log is not None else b""
                if kept and not _append(log, kept):
                    _close(log)
                    log, kept = None, b""
                written += len(kept)
                dropped += len(chunk) - len(kept)
        if log is not None:
            if dropped:
                _append(log, f"\n[copilot: {dropped} more bytes of output dropped at the {TRAINER_OUTPUT_CAP_BYTES} byte cap]\n".encode())
            _close(log)

    def _open_log(self) -> IO[bytes] | None:
        try:
            return open(self._log_path, "ab")
        except OSError:
            return None


def _append(log: IO[bytes], data: bytes) -> bool:
    """Write and flush; False when the disk refused it."""
    try:
        log.write(data)
        log.flush()
    except OSError:
        return False
    return True


def _close(log: IO[bytes]) -> None:
    with contextlib.suppress(OSError):  # closing flushes what a full disk refused: it stays dropped
        log.close()
