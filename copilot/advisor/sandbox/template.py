"""The app's side of the sandbox's template process: start it early, fork a child per check.

`SandboxTemplate` starts `template_process.py` (exec'd with `sandbox_environment`, the
walls' allow-list: no credential of the app's is in its environment or in any child's)
and asks it for one forked child per check. The parent keeps what it needs to stay in
charge: the child's pid, whose process group it kills at the deadline and always once
the child ended (the template keeps the child unreaped until then, so the group is
still the child's), and the exit status and resource use the kernel measured.

A template found dead is started again once; a template that cannot start at all (no
interpreter, a second thread before any fork, no reply in time) is given up for this
process, and `run_child` answers None so that the caller starts a fresh interpreter;
`fallback_notice` says why, once. One check at a time runs through one template.

It must not import torch; it never runs checked code itself.
"""

from __future__ import annotations

import atexit
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from copilot import walls
from copilot.advisor.sandbox.template_process import TemplateReply, TemplateRequest, decode_reply, encode

TEMPLATE_SCRIPT = Path(__file__).with_name("template_process.py")
# Importing torch in a fresh interpreter on a loaded machine; past this the template is given up.
TEMPLATE_START_TIMEOUT_S = 120.0
# The template's own answers (forked, exited after a kill, reaped) come at once; past this it is broken.
TEMPLATE_REPLY_TIMEOUT_S = 30.0
TEMPLATE_LOG_TAIL_CHARS = 300


def sandbox_environment(home: Path) -> dict[str, str]:
    """The walls' allow-listed environment (no credentials), with `home` as home and scratch and one thread."""
    environment = walls.allowed_environment(os.environ, home=str(home), scratch=str(home))
    environment.update(
        {
            "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            # glibc reserves address space per malloc arena; few arenas keep RLIMIT_AS about real memory.
            "MALLOC_ARENA_MAX": "2",
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    return environment


@dataclass(frozen=True)
class ChildExit:
    """How a check's child ended, as the parent saw it and the kernel measured it."""

    returncode: int
    killed_by_parent: bool
    cpu_s: float
    peak_mb: float


class TemplateGone(Exception):
    """The template stopped answering, or answered something that is not a reply."""


class SandboxTemplate:
    """One template process and the control socket to it."""

    def __init__(self, interpreter: str = sys.executable) -> None:
        self.interpreter = interpreter
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._folder: Path | None = None
        self._ready = False
        self.unusable: str | None = None  # why checks run in fresh interpreters instead
        self._notice_given = False

    @classmethod
    def disabled(cls, reason: str) -> SandboxTemplate:
        """A template never started: every check runs in a fresh interpreter (a baseline to measure against)."""
        template = cls()
        template.unusable = reason
        return template

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the template without waiting for it: it imports torch while the app does other work."""
        with self._lock:
            self._start()

    def run_child(self, job_path: Path, report_path: Path, stderr_path: Path, timeout_s: float) -> ChildExit | None:
        """Run one check in a child forked from the template; None when no template can fork it.

        The child writes its report and stderr to the two files, which must exist.
        """
        request = TemplateRequest("fork", job_path=str(job_path), report_path=str(report_path), stderr_path=str(stderr_path))
        with self._lock:
            for attempt in ("first", "after a restart"):
                if not self._started():
                    return None
                try:
                    started = self._ask(request)
                except TemplateGone:
                    self._stop()  # died since the last check (or now): started again once
                    continue
                if started.kind != "started":
                    self._give_up(started.reason or f"the template answered {started.kind!r} to a fork")
                    return None
                try:
                    return self._wait_for(started.pid, timeout_s)
                except TemplateGone:
                    _kill_group(started.pid)
                    self._stop()
                    return None
            return None

    def fallback_notice(self) -> str | None:
        """Why this check ran in a fresh interpreter, the first time it did; then None."""
        with self._lock:
            if self.unusable is None or self._notice_given:
                return None
            self._notice_given = True
            return f"sandbox checks start a fresh interpreter each (slower): {self.unusable}"

    def close(self) -> None:
        with self._lock:
            self._stop()

    # ------------------------------------------------------------------ inside the lock

    def _start(self) -> None:
        if self._process is not None or self.unusable is not None:
            return
        self._folder = Path(tempfile.mkdtemp(prefix="copilot-sandbox-template-"))
        parent_end, template_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with open(self._folder / "template.log", "wb") as log:
                self._process = subprocess.Popen(
                    [self.interpreter, "-I", "-B", str(TEMPLATE_SCRIPT), str(template_end.fileno())],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self._folder,
                    env=sandbox_environment(self._folder),
                    start_new_session=True,  # Ctrl-C in the terminal is the app's to handle, not the template's
                    pass_fds=(template_end.fileno(),),
                )
        except OSError as error:
            parent_end.close()
            self._give_up(f"the template process could not start ({error})")
            return
        finally:
            template_end.close()
        self._control = parent_end
        self._ready = False

    def _started(self) -> bool:
        """Started and ready (waiting for its import the first time); False once given up."""
        self._start()
        if self.unusable is not None:
            return False
        if self._ready:
            return True
        try:
            ready = self._receive(TEMPLATE_START_TIMEOUT_S)
        except TemplateGone:
            self._give_up(f"the template process did not start{self._log_tail()}")
            return False
        if ready.kind != "ready" or ready.threads > 1:
            self._give_up(f"the template process has {ready.threads} threads before any fork; forking it is unsafe")
            return False
        self._ready = True
        return True

    def _wait_for(self, pid: int, timeout_s: float) -> ChildExit:
        assert self._control is not None
        killed = not select.select([self._control], [], [], timeout_s)[0]
        # The whole group, always: anything the child started goes with it. Unreaped, the group is still its.
        _kill_group(pid)
        exited = self._receive(TEMPLATE_REPLY_TIMEOUT_S)
        if exited.kind != "exited" or exited.pid != pid:
            raise TemplateGone(f"expected the child's exit, got {exited.kind!r}")
        reaped = self._ask(TemplateRequest("reap"))
        if reaped.kind != "reaped" or reaped.pid != pid:
            raise TemplateGone(f"expected the child's reaping, got {reaped.kind!r}")
        return ChildExit(reaped.returncode, killed, reaped.cpu_s, reaped.peak_mb)

    def _ask(self, request: TemplateRequest) -> TemplateReply:
        if self._control is None:
            raise TemplateGone("not started")
        try:
            self._control.send(encode(request))
        except OSError as error:
            raise TemplateGone(str(error)) from None
        return self._receive(TEMPLATE_REPLY_TIMEOUT_S)

    def _receive(self, timeout_s: float) -> TemplateReply:
        if self._control is None or not select.select([self._control], [], [], timeout_s)[0]:
            raise TemplateGone("no reply in time")
        try:
            data = self._control.recv(64 * 1024)
            if not data:
                raise TemplateGone("the template process ended")
            return decode_reply(data)
        except (OSError, ValueError, TypeError) as error:
            raise TemplateGone(str(error)) from None

    def _give_up(self, reason: str) -> None:
        self._stop()
        self.unusable = reason

    def _log_tail(self) -> str:
        try:
            text = (self._folder / "template.log").read_text(encoding="utf-8", errors="replace").strip() if self._folder else ""
        except OSError:
            text = ""
        return f": {text[-TEMPLATE_LOG_TAIL_CHARS:].splitlines()[-1]}" if text else ""

    def _stop(self) -> None:
        if self._control is not None:
            self._control.close()  # the template leaves when its control socket closes
            self._control = None
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self._ready = False


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:  # no group yet (the child had not called setsid): the child alone
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


_shared: SandboxTemplate | None = None
_shared_lock = threading.Lock()


def shared_template() -> SandboxTemplate:
    """The app's one template, made (not started) on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = SandboxTemplate()
            atexit.register(_shared.close)
        return _shared
