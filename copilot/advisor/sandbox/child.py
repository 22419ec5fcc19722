"""The sandbox's child process: runs one generated model module under limits and reports.

`copilot.advisor.sandbox.parent` gets this child forked from the template process
(`template_process.py`, which imported torch once) or, where no template can be had,
starts this file as a script (`python -I -B child.py JOB`); either way in a fresh
session, with a scrubbed environment and a temporary working folder (`check` is the
same from there on). Before the generated code is even compiled, the child
- sets its own resource limits (CPU time, address space, file size, no core dumps) and
  a wall-clock alarm, then imports torch under them (a forked child has it already);
- installs an audit hook that refuses opening files outside the working folder and
  Python's own installation, writing anywhere else, starting or signalling processes
  (fork, exec, spawn, system, Popen, kill), sockets and ctypes; torch's C++ file
  openers (`torch.save`/`torch.load` on a path, `from_file`) are wrapped to meet it;
- raises the operating system's walls of `copilot/walls.py` (loaded by its path) before
  torch starts: its own network namespace, no capabilities, Landlock (writes only in
  the working folder, reads only from the interpreter and what torch needs, no TCP, no
  signals out) and a seccomp socket filter, which also hold for native code no audit
  hook sees. The audit hook and the checks are a lint for honest mistakes; the walls
  are what contain hostile code, and whatever this process reports is a claim.
Then it runs the checks: import (finding the model as the trainer finds it), instantiate,
parameter budget, forward (keeping the run's forward signature and output form), output
shape, backward with finite gradients for every trainable parameter. It writes JSON
lines to its original stdout (a stage marker as each check starts, then one report with
SandboxReport's fields); anything the model prints goes to stderr.

It imports only the standard library, torch and three copilot files by path, never the
copilot package: nothing of the parent (settings, credentials, open files) is in reach.
`walls.py` raises the walls; `training/construction.py` finds and builds the model
(which factory, constructor arguments, config objects, sizes from the data) and
`training/model_outputs.py` reads its outputs, both stdlib and torch only, exactly as
the trainer finds, builds and reads them. The parent imports this module only for
`SandboxJob`, so no torch at module level. Limits are set here and not in a
`preexec_fn`, which is unsafe in a parent with threads.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import json
import linecache
import math
import os
import re
import resource
import signal
import sys
import sysconfig
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

GENERATED_FILENAME = "<generated model>"
GENERATED_MODULE_NAME = "generated_model"
WALLS_MODULE_NAME = "copilot_walls"
# The files the child runs (this one, the walls', the output reader): read after the walls are
# up (the reader's import; linecache when torch formats a stack through them).
COPILOT_FOLDER = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WALLS_SOURCE = os.path.join(COPILOT_FOLDER, "walls.py")
MODEL_OUTPUTS_SOURCE = os.path.join(COPILOT_FOLDER, "training", "model_outputs.py")
CONSTRUCTION_SOURCE = os.path.join(COPILOT_FOLDER, "training", "construction.py")
OWN_SOURCES = (os.path.abspath(__file__), WALLS_SOURCE, MODEL_OUTPUTS_SOURCE, CONSTRUCTION_SOURCE)
# How messages name the code under check (the trainer names the user's file).
GENERATED_CODE_NAME = "the proposed code"
MAX_MESSAGE_CHARS = 300
MAX_TRACEBACK_CHARS = 3000
FILE_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
# Freed when memory runs out, so the report can still be built and written.
MEMORY_RESERVE_BYTES = 8 * 1024 * 1024

# Audit events that start, replace or signal processes, or reach native code or the network.
BLOCKED_EVENTS = frozenset(
    {
        "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty", "os.kill",
        "os.killpg", "subprocess.Popen", "pty.spawn", "socket.__new__", "socket.connect", "socket.bind",
        "socket.sendto", "socket.sendmsg", "socket.getaddrinfo", "socket.gethostbyname",
        "socket.gethostbyaddr", "pickle.find_class", "code.__new__", "sys.remote_exec",
    }
)  # fmt: skip
# Audit events that change the file system: allowed inside the working folder only.
PATH_CHANGING_EVENTS = frozenset(
    {
        "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
        "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move",
    }
)  # fmt: skip
PATH_READING_EVENTS = frozenset({"os.listdir", "os.scandir", "glob.glob"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

@dataclass(frozen=True)
class SandboxJob:
    """What the parent asks the child to check (the JOB file, JSON)."""

    code: str
    # The run's model reference (`file.py:Name`), None when the file's own rule picks the
    # model (its build_model(), else its one top-level class): resolved as the trainer resolves it.
    model_name: str | None
    # The run's forward contract the proposal must keep (events.ForwardContract's fields); None: not recorded.
    keep_form: str | None
    keep_passes_targets: bool | None
    model_args: dict[str, Any]
    task: str  # "classification" or "sequence"
    input_shape: tuple[int, ...]
    input_dtype: str  # "float32" or "int64"
    num_classes: int
    expected_shape: tuple[int, ...]  # batch dimension first
    max_params: int
    cpu_seconds: int
    memory_mb: int
    timeout_s: float  # the parent's wall-clock limit, for messages
    alarm_s: float  # the child's own wall-clock alarm, shortly before the parent kills it
    workdir: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SandboxJob:
        fields = json.loads(text)
        fields["input_shape"] = tuple(fields["input_shape"])
        fields["expected_shape"] = tuple(fields["expected_shape"])
        return cls(**fields)


class CpuTimeExceeded(BaseException):
    """SIGXCPU: the CPU-time limit was reached (a BaseException so `except Exception` cannot keep it)."""


class WallTimeExceeded(BaseException):
    """SIGALRM: the child's wall-clock alarm rang."""


class SandboxViolation(PermissionError):
    """The audit hook refused an action of the generated code."""


class CheckFailed(Exception):
    """A check found a problem that is not an exception of the model (wrong shape, missing gradient)."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message


# ---------------------------------------------------------------------- limits and guards


def apply_limits(job: SandboxJob) -> None:
    """Memory and CPU time; file size and core dumps are the walls' (`copilot/walls.py`)."""
    memory_bytes = job.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # The soft limit raises SIGXCPU (turned into CpuTimeExceeded); the hard one kills
    # a process whose code swallowed that exception.
    resource.setrlimit(resource.RLIMIT_CPU, (job.cpu_seconds, job.cpu_seconds + 2))
    # Fork is refused by the audit hook, not RLIMIT_NPROC: the limit counts every process
    # and thread of the user (other tools, torch's threads) and does not bind root.


def load_copilot_file(module_name: str, path: str) -> types.ModuleType:
    """One copilot file loaded by its path: the package (and what it could reach) stays unimported.

    Loaded once per process: a child forked from the template process finds it loaded.
    """
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_walls() -> types.ModuleType:
    """`copilot/walls.py`: the one place walls are raised."""
    return load_copilot_file(WALLS_MODULE_NAME, WALLS_SOURCE)


def raise_walls(job: SandboxJob) -> bool:
    """The operating system's walls, before torch starts a thread; True when Landlock confines the files."""
    walls = load_walls()
    plan = walls.WallPlan(
        write_roots=(job.workdir,),
        read_roots=OWN_SOURCES,
        file_size_limit_bytes=FILE_SIZE_LIMIT_BYTES,
        shared_memory_and_gpu=False,
    )
    return walls.apply_walls(plan).landlock_abi > 0


def install_timers(job: SandboxJob, on_cpu_limit: Callable[[], None]) -> None:
    def cpu_limit_reached(signum: int, frame: types.FrameType | None) -> None:
        on_cpu_limit()
        raise CpuTimeExceeded()

    def alarm_rang(signum: int, frame: types.FrameType | None) -> None:
        raise WallTimeExceeded()

    signal.signal(signal.SIGXCPU, cpu_limit_reached)
    signal.signal(signal.SIGALRM, alarm_rang)
    signal.setitimer(signal.ITIMER_REAL, job.alarm_s)


class AuditGuard:
    """The audit hook: refuses file, process, network and native-code actions outside the sandbox.

    Reading is allowed in the working folder and in Python's own installation (the
    standard library and site-packages, where torch lazily imports from); writing and
    changing files only in the working folder. Every refusal is remembered, so code that
    swallows the exception still fails the check.
    """

    def __init__(self, workdir: str) -> None:
        self.workdir = os.path.realpath(workdir)
        paths = sysconfig.get_paths()
        roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
        # torch's cpuinfo reads the CPU's description lazily, after the walls are up.
        roots |= {"/sys/devices/system/cpu"}
        self.read_roots = tuple(sorted({os.path.realpath(root) for root in roots} | {self.workdir}))
        self.read_files = frozenset({"/dev/null", "/dev/urandom", "/proc/cpuinfo", *OWN_SOURCES})
        self.violations: list[tuple[str, int | None]] = []  # (what was blocked, generated line)
        self.kernel_confined = False  # Landlock holds the same rules for native code
        self.active = False
        self._inside = False

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or self._inside:
            return
        self._inside = True
        try:
            refusal = self.refusal(event, args)
            if refusal is not None:
                self.violations.append((refusal, _generated_line_of_caller()))
        finally:
            self._inside = False
        if refusal is not None:
            raise SandboxViolation(f"the sandbox blocked {refusal}")

    def refusal(self, event: str, args: tuple[Any, ...]) -> str | None:
        if event in BLOCKED_EVENTS or event.startswith("ctypes."):
            return _describe_event(event, args)
        if event == "open":
            path, mode, flags = (list(args) + [None, None, None])[:3]
            writing = (isinstance(mode, str) and any(letter in mode for letter in "wax+")) or (
                isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
            )
            return self.path_refusal(path, writing, "writing" if writing else "reading")
        if event in PATH_CHANGING_EVENTS:  # both ends of a rename, link or copy
            refusals = [self.path_refusal(path, True, event) for path in args[:2] if not isinstance(path, int)]
            return next((refusal for refusal in refusals if refusal), None)
        if event in PATH_READING_EVENTS:
            return self.path_refusal(args[0] if args and args[0] is not None else ".", False, event)
        return None

    def path_refusal(self, path: Any, writing: bool, action: str) -> str | None:
        if isinstance(path, int):  # an inherited descriptor, such as the report stream
            return f"{action} file descriptor {path}"
        if not isinstance(path, (str, bytes, os.PathLike)):
            return None
        real = os.path.realpath(os.fsdecode(path))
        if _inside(real, (self.workdir,)):
            return None
        if not writing and (real in self.read_files or _inside(real, self.read_roots)):
            return None
        return f"{action} {real!r} (outside the sandbox's working folder)"


def audit_native_file_doors(torch: Any) -> None:
    """Make torch's C++ file openers raise the "open" audit event that Python's own `open` raises.

    `torch.save`/`torch.load` on a path and `from_file` open files in C++, out of the audit
    hook's sight; wrapped, they meet the same rule (and the report names the path).
    """

    def audited(native: Callable[..., Any], mode: str) -> Callable[..., Any]:
        def open_checked(filename: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(filename, (str, bytes, os.PathLike)):
                sys.audit("open", filename, mode, 0)
            return native(filename, *args, **kwargs)

        return open_checked

    class AuditedFileWriter(torch._C.PyTorchFileWriter):  # subclasses keep torch's isinstance checks working
        def __init__(self, filename: Any, *args: Any, **kwargs: Any) -> None:
            audited(lambda *_a, **_k: None, "wb")(filename)
            super().__init__(filename, *args, **kwargs)

    class AuditedFileReader(torch._C.PyTorchFileReader):
        def __init__(self, filename: Any, *args: Any, **kwargs: Any) -> None:
            audited(lambda *_a, **_k: None, "rb")(filename)
            super().__init__(filename, *args, **kwargs)

    torch._C.PyTorchFileWriter = AuditedFileWriter
    torch._C.PyTorchFileReader = AuditedFileReader
    torch.from_file = audited(torch.from_file, "r+b")
    torch.UntypedStorage.from_file = audited(torch.UntypedStorage.from_file, "r+b")
    torch.TypedStorage.from_file = audited(torch.TypedStorage.from_file, "r+b")


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _describe_event(event: str, args: tuple[Any, ...]) -> str:
    shown = ", ".join(repr(arg)[:80] for arg in args[:2])
    return f"{event}({shown})"


def _generated_line_of_caller() -> int | None:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == GENERATED_FILENAME:
            return frame.f_lineno
        frame = frame.f_back
    return None


# ---------------------------------------------------------------------- the checks


class Checks:
    """Runs the checks in order, keeping the stage and what was measured for the report."""

    def __init__(self, job: SandboxJob, emit: Callable[[dict[str, Any]], None]) -> None:
        self.job = job
        self.emit = emit
        self.stage = "startup"
        self.measured: dict[str, Any] = {"expected_shape": list(job.expected_shape)}

    def enter(self, stage: str) -> None:
        self.stage = stage
        self.emit({"stage": stage})

    def run(self, torch: Any, guard: AuditGuard, outputs: types.ModuleType, construction: types.ModuleType) -> None:
        job = self.job
        self.enter("import")
        module = types.ModuleType(GENERATED_MODULE_NAME)
        sys.modules[GENERATED_MODULE_NAME] = module  # dataclasses look their module up here
        linecache.cache[GENERATED_FILENAME] = (len(job.code), None, job.code.splitlines(True), GENERATED_FILENAME)
        compiled = compile(job.code, GENERATED_FILENAME, "exec", dont_inherit=True)
        guard.active = True
        exec(compiled, module.__dict__)
        code = construction.UserCode(filename=GENERATED_FILENAME, name=GENERATED_CODE_NAME)
        try:
            factory, factory_name = construction.find_factory(module, job.model_name, code)
        except construction.ConstructionError as error:
            raise CheckFailed("import", f"{error.message}; {error.hint}") from None

        self.enter("instantiate")
        torch.manual_seed(0)
        model = self.build(factory, factory_name, module, construction, code)
        model.train()

        self.enter("params")
        param_count = sum(parameter.numel() for parameter in model.parameters())
        self.measured["param_count"] = param_count
        if param_count > job.max_params:
            raise CheckFailed("params", f"{param_count:,} parameters exceed the budget of {job.max_params:,}")

        self.enter("forward")
        inputs, targets = self.dummy_batch(torch)
        takes_targets = outputs.passes_targets(model)
        if job.keep_passes_targets is not None and takes_targets != job.keep_passes_targets:
            raise CheckFailed("forward", _signature_change(job.keep_passes_targets))
        started = time.perf_counter()
        raw_output = model(inputs, targets) if takes_targets else model(inputs)
        try:
            read = outputs.read_outputs(raw_output)
        except outputs.UnreadableOutputs as unreadable:
            raise CheckFailed("forward", str(unreadable)) from None
        if job.keep_form is not None and read.form != job.keep_form:
            raise CheckFailed(
                "forward",
                f"forward returns {_form_name(read.form)} where the run's model returns {_form_name(job.keep_form)}; "
                "keep its output form, which the user's own code unpacks",
            )
        output = read.logits

        self.enter("shape")
        self.measured["output_shape"] = list(output.shape)
        if tuple(output.shape) != job.expected_shape:
            raise CheckFailed(
                "shape", f"output shape {tuple(output.shape)} but the data needs {job.expected_shape}"
            )

        self.enter("backward")
        loss = self.loss(torch, model, raw_output, read, targets)
        loss.backward()
        self.measured["forward_backward_ms"] = (time.perf_counter() - started) * 1000.0
        self.check_gradients(torch, model)

    def build(
        self, factory: Any, factory_name: str, module: types.ModuleType, construction: types.ModuleType, code: Any
    ) -> Any:
        """The model built as the trainer builds it: the run's arguments, config objects, sizes from the data."""
        job = self.job
        try:
            return construction.build_model(
                factory,
                factory_name,
                module,
                job.model_args,
                construction.fields_from_data(job.task, job.input_shape, job.num_classes),
                job.max_params,
                code,
            )
        except construction.ConstructionError as error:
            if error.cause is not None:  # the checked code's own exception: reported with its line and kind
                raise error.cause from None
            raise CheckFailed("instantiate", f"{error.message}; {error.hint}") from None

    def dummy_batch(self, torch: Any) -> tuple[Any, Any]:
        job = self.job
        batch = job.expected_shape[0]
        generator = torch.Generator().manual_seed(0)
        if job.input_dtype == "int64":
            inputs = torch.randint(job.num_classes, (batch, *job.input_shape), generator=generator)
        else:
            inputs = torch.randn((batch, *job.input_shape), generator=generator)
        target_shape = (batch,) if job.task == "classification" else (batch, job.input_shape[0])
        return inputs, torch.randint(job.num_classes, target_shape, generator=generator)

    def loss(self, torch: Any, model: Any, raw_output: Any, read: Any, targets: Any) -> Any:
        """As the trainer picks it: the file's loss_function, else the loss the model returned, else cross-entropy."""
        job = self.job
        loss_function = getattr(model, "loss_function", None)
        if callable(loss_function):
            loss = loss_function(raw_output, targets)
        elif read.loss is not None:
            loss = read.loss
        elif job.expected_shape == (*targets.shape, job.num_classes):
            loss = torch.nn.functional.cross_entropy(read.logits.reshape(-1, job.num_classes), targets.reshape(-1))
        else:  # a caller-given output contract that is not class scores
            loss = read.logits.float().sum()
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise CheckFailed("backward", "the loss is not a scalar tensor")
        if not math.isfinite(loss.item()):
            raise CheckFailed("backward", f"the loss is {loss.item()} on a random batch")
        return loss

    def check_gradients(self, torch: Any, model: Any) -> None:
        trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
        missing = [name for name, parameter in trainable if parameter.grad is None]
        if missing:
            raise CheckFailed("backward", f"no gradient reaches {_listed(missing)} (unused in forward?)")
        nonfinite = [name for name, parameter in trainable if not bool(torch.isfinite(parameter.grad).all())]
        if nonfinite:
            raise CheckFailed("backward", f"non-finite gradient in {_listed(nonfinite)}")


def _signature_change(run_passes_targets: bool) -> str:
    if run_passes_targets:
        return "forward takes no targets where the run's model takes forward(idx, targets); keep that signature"
    return "forward takes targets where the run's model takes forward(x) alone; keep that signature"


def _form_name(form: str) -> str:
    return {"tensor": "a tensor", "dict": "a dict with logits", "object": "an object with .logits"}.get(form, f"a {form} tuple")


def _listed(names: list[str], most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


# ---------------------------------------------------------------------- the report


def failure_report(checks: Checks, error: BaseException, guard: AuditGuard | None) -> dict[str, Any]:
    """Turn whatever stopped the checks into the report's fields."""
    job = checks.job
    if guard is not None and guard.violations:
        blocked, line = guard.violations[0]
        where = f" at line {line}" if line else ""
        return _report(checks, checks.stage, f"the sandbox blocked {blocked} during {checks.stage}{where}", line, error)
    if isinstance(error, CheckFailed):
        return _report(checks, error.stage, error.message, None, None)
    line = _generated_frames_line(error)
    where = f" at line {line}" if line else ""
    if isinstance(error, CpuTimeExceeded):
        message = f"CPU-time limit of {job.cpu_seconds} s exceeded during {checks.stage}{where}"
        return _report(checks, "timeout", message, line, error)
    if isinstance(error, WallTimeExceeded):
        message = f"wall-clock limit of {job.timeout_s:g} s exceeded during {checks.stage}{where}"
        return _report(checks, "timeout", message, line, error)
    if _is_out_of_memory(error):
        tried = re.search(r"tried to allocate (\d+) bytes", str(error))
        amount = f" (tried to allocate {int(tried.group(1)) / 1e9:.1f} GB)" if tried else ""
        message = f"memory limit of {job.memory_mb} MB exceeded during {checks.stage}{where}{amount}"
        return _report(checks, "memory", message, line, error)
    stage = checks.stage if checks.stage != "startup" else "crashed"
    summary = _first_line(traceback.format_exception_only(type(error), error)[-1])
    if guard is not None and guard.kernel_confined and "Permission denied" in str(error):
        # Native code the audit hook cannot see, stopped by Landlock.
        message = f"the sandbox's kernel confinement refused a file or network action during {checks.stage}{where}: {summary}"
        return _report(checks, stage, message, line, error)
    return _report(checks, stage, f"{checks.stage} failed{where}: {summary}", line, error)


def _report(checks: Checks, stage: str, message: str, line: int | None, error: BaseException | None) -> dict[str, Any]:
    return {
        **checks.measured,
        "ok": False,
        "stage": stage,
        "message": _first_line(message)[:MAX_MESSAGE_CHARS],
        "line": line,
        "traceback": _generated_traceback(error) if error is not None else "",
    }


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _generated_frames(error: BaseException) -> list[traceback.FrameSummary]:
    # Source lines are looked up only for the kept frames (from linecache), so no file is read.
    frames = traceback.StackSummary.extract(traceback.walk_tb(error.__traceback__), lookup_lines=False)
    return [frame for frame in frames if frame.filename == GENERATED_FILENAME]


def _generated_frames_line(error: BaseException) -> int | None:
    frames = _generated_frames(error)
    return frames[-1].lineno if frames else None


def _generated_traceback(error: BaseException) -> str:
    """The traceback trimmed to the frames inside the generated module, then the exception."""
    frames = _generated_frames(error)
    if not frames:
        return ""
    text = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(type(error), error))
    return text if len(text) <= MAX_TRACEBACK_CHARS else text[: MAX_TRACEBACK_CHARS - 4] + " ..."


# ---------------------------------------------------------------------- entry point


def main(job_path: str) -> NoReturn:
    """A fresh interpreter's entry (`python -I -B child.py JOB`)."""
    with open(job_path, encoding="utf-8") as job_file:
        job = SandboxJob.from_json(job_file.read())
    check(job)


def check(job: SandboxJob) -> NoReturn:
    """The whole check, walls first, then the report on stdout and `os._exit`.

    Runs in a fresh interpreter (`main`) or in a child forked from the template process
    (`template_process.py`), which imported torch and the copilot files already: the
    walls still go up here, in the process that runs the checked code, before its first line.
    """
    # The report stream is the original stdout; the model's own prints go to stderr.
    report_fd = os.dup(1)
    os.dup2(2, 1)
    faulthandler.enable()

    def emit(record: dict[str, Any]) -> None:
        # One unbuffered write per line: safe from inside a signal handler, unlike a text stream.
        os.write(report_fd, (json.dumps(record) + "\n").encode())

    checks = Checks(job, emit)
    reserve = bytearray(MEMORY_RESERVE_BYTES)
    guard: AuditGuard | None = None
    try:
        apply_limits(job)
        install_timers(job, on_cpu_limit=lambda: emit({"cpu_limit": True}))
        kernel_confined = raise_walls(job)
        import torch  # under the limits: a torch that cannot start within them is reported too (a template's is loaded)

        torch.set_num_threads(1)
        guard = AuditGuard(job.workdir)
        outputs = load_copilot_file("copilot_model_outputs", MODEL_OUTPUTS_SOURCE)
        construction = load_copilot_file("copilot_construction", CONSTRUCTION_SOURCE)
        audit_native_file_doors(torch)
        guard.kernel_confined = kernel_confined
        sys.addaudithook(guard)
        checks.run(torch, guard, outputs, construction)
        signal.setitimer(signal.ITIMER_REAL, 0)
        if guard.violations:  # the model swallowed a refusal and carried on
            raise SandboxViolation("swallowed")
        emit({**checks.measured, "ok": True, "stage": "passed", "message": "passed"})
    except BaseException as error:  # every failure, SystemExit and the limits' signals included, is reported
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # the soft limit repeats every second; the hard one still kills
        del reserve
        emit(failure_report(checks, error, guard))
    finally:
        # No interpreter shutdown: the model's finalizers and atexit handlers do not get to
        # run, and a slow torch teardown cannot outlast the parent's deadline.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
